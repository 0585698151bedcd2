package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tolerance is an absolute tolerance on float comparisons.
type tolerance float64

// Tolerances of the comparisons in this package's tests.
const (
	exact    tolerance = 0    // values computed the same way
	float32s tolerance = 1e-6 // float32 arithmetic in a different order
	bits16   tolerance = 2e-5 // a round trip through 16 bits per channel
	jpegTol  tolerance = 0.06 // lossy JPEG on smooth test images
)

// near reports whether got is within tol of want.
func (tol tolerance) near(got, want float32) bool {
	return math.Abs(float64(got)-float64(want)) <= float64(tol)
}

// checkFloats reports the first few values of got that are not within tol of
// want.
func checkFloats(t *testing.T, what string, got, want []float32, tol tolerance) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad := 0
	for i := range got {
		if !tol.near(got[i], want[i]) {
			if bad < 5 {
				t.Errorf("%s[%d] = %v, want %v (tolerance %g)", what, i, got[i], want[i], float64(tol))
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d values out of tolerance in all", what, bad)
	}
}

// wantErrNaming checks that err is non-nil and mentions every one of the
// given strings (a file path, say).
func wantErrNaming(t *testing.T, err error, names ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one naming %q", names)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %q", err, n)
		}
	}
}

// writeFile writes b to path, making its directory, optionally gzipped.
func writeFile(t testing.TB, path string, b []byte, gz bool) {
	t.Helper()
	if gz {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		b = buf.Bytes()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// idxBytes returns an idx file of unsigned bytes with the given dimensions.
func idxBytes(dims []int, data []byte) []byte {
	b := []byte{0, 0, 0x08, byte(len(dims))}
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, uint32(d))
	}
	return append(b, data...)
}

// idxFixture is a small idx data set: n images of h x w with pixel value
// (17*i + 3*p) mod 256 at index p of image i, and label i mod 10 (+ offset).
type idxFixture struct {
	n, h, w, labelOffset int
}

func (f idxFixture) images() []byte {
	b := make([]byte, f.n*f.h*f.w)
	for i := range f.n {
		for p := range f.h * f.w {
			b[i*f.h*f.w+p] = byte(17*i + 3*p)
		}
	}
	return b
}

func (f idxFixture) labels() []byte {
	b := make([]byte, f.n)
	for i := range b {
		b[i] = byte(i%10 + f.labelOffset)
	}
	return b
}

// writeIDXDir writes train (ntrain images) and test (ntest images) idx
// files of h x w into dir.
func writeIDXDir(t testing.TB, dir string, ntrain, ntest, h, w int, gz bool) (train, test idxFixture) {
	t.Helper()
	suffix := ""
	if gz {
		suffix = ".gz"
	}
	train = idxFixture{n: ntrain, h: h, w: w}
	test = idxFixture{n: ntest, h: h, w: w, labelOffset: 0}
	writeFile(t, filepath.Join(dir, idxTrainImages+suffix), idxBytes([]int{ntrain, h, w}, train.images()), gz)
	writeFile(t, filepath.Join(dir, idxTrainLabels+suffix), idxBytes([]int{ntrain}, train.labels()), gz)
	writeFile(t, filepath.Join(dir, idxTestImages+suffix), idxBytes([]int{ntest, h, w}, test.images()), gz)
	writeFile(t, filepath.Join(dir, idxTestLabels+suffix), idxBytes([]int{ntest}, test.labels()), gz)
	return train, test
}

// cifarRecords returns n CIFAR records of the layout: labels (i*7) mod
// numLabels (coarse (i*3) mod 20 for CIFAR-100), pixel p of record i
// (i + 5*p) mod 256.
func cifarRecords(n int, l cifarLayout, first int) []byte {
	var b []byte
	for k := range n {
		i := first + k
		if l.coarseAt >= 0 {
			b = append(b, byte(i*3%l.numCoarse))
		}
		b = append(b, byte(i*7%l.numLabels))
		for p := range cifarPixels {
			b = append(b, byte(i+5*p))
		}
	}
	return b
}

// pngBytes encodes m as PNG.
func pngBytes(t testing.TB, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// jpegBytes encodes m as JPEG at quality 95.
func jpegBytes(t testing.TB, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// grayPattern returns an h x w gray image with pixel (x, y) = (seed + 20x +
// 7y) mod 256, and the same as CHW floats.
func grayPattern(h, w, seed int) (*image.Gray, []float32) {
	m := image.NewGray(image.Rect(0, 0, w, h))
	f := make([]float32, h*w)
	for y := range h {
		for x := range w {
			v := byte(seed + 20*x + 7*y)
			m.SetGray(x, y, color.Gray{Y: v})
			f[y*w+x] = float32(v) / 255
		}
	}
	return m, f
}

// rgbPattern returns an h x w opaque RGB image and the same as CHW floats;
// smooth, so that JPEG keeps it close.
func rgbPattern(h, w, seed int) (*image.RGBA, []float32) {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	f := make([]float32, 3*h*w)
	for y := range h {
		for x := range w {
			c := [3]uint8{uint8(seed + 8*x), uint8(seed + 8*y), uint8(200 - 4*x - 4*y)}
			m.SetRGBA(x, y, color.RGBA{R: c[0], G: c[1], B: c[2], A: 255})
			for ch := range 3 {
				f[ch*h*w+y*w+x] = float32(c[ch]) / 255
			}
		}
	}
	return m, f
}

// collect returns every image and label of s.
func collect(t testing.TB, s Set) ([]Image, []int) {
	t.Helper()
	var imgs []Image
	var labels []int
	for i := range s.Len() {
		img, y, err := s.Image(i)
		if err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		imgs = append(imgs, img)
		labels = append(labels, y)
	}
	return imgs, labels
}

// requirePeers reports whether missing peer data fails tests rather than
// skipping them.
func requirePeers() bool { return os.Getenv("DCCONVERT_REQUIRE_PEERS") == "1" }

// missingPeer skips the test with msg, or fails it under
// DCCONVERT_REQUIRE_PEERS=1.
func missingPeer(t *testing.T, msg string) {
	t.Helper()
	if requirePeers() {
		t.Fatalf("%s (DCCONVERT_REQUIRE_PEERS=1: missing peers fail the test)", msg)
	}
	t.Skipf("%s (skipped; set DCCONVERT_REQUIRE_PEERS=1 to fail instead)", msg)
}

// grayImage returns an h x w black gray image.
func grayImage(h, w int) *image.Gray { return image.NewGray(image.Rect(0, 0, w, h)) }
