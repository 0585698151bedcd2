package data

import (
	"bytes"
	"compress/gzip"
	"testing"
)

// FuzzIDX feeds arbitrary bytes to the idx reader, raw and as the content
// of a gzip stream: it must return an error or a well-formed array, never
// panic, and a parsed image file must read back the same after writing it
// out again.
func FuzzIDX(f *testing.F) {
	fix := idxFixture{n: 3, h: 2, w: 2}
	f.Add(idxBytes([]int{3, 2, 2}, fix.images()), true)
	f.Add(idxBytes([]int{3}, fix.labels()), false)
	f.Add(idxBytes([]int{1 << 31, 1 << 31, 1 << 31}, nil), true)
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, false)
	f.Fuzz(func(t *testing.T, b []byte, gz bool) {
		in := b
		if gz {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(b)
			zw.Close()
			in = buf.Bytes()
		}
		for _, dims := range []int{1, 3} {
			a, err := readIDX(bytes.NewReader(in), int64(len(in)), dims)
			if err != nil {
				continue
			}
			size := 1
			for _, d := range a.dims {
				size *= d
			}
			if len(a.dims) != dims || size != len(a.data) {
				t.Fatalf("dimensions %v for %d bytes of data", a.dims, len(a.data))
			}
			again, err := parseIDX(idxBytes(a.dims, a.data), dims)
			if err != nil || !bytes.Equal(again.data, a.data) {
				t.Fatalf("writing and reading back: %v", err)
			}
			if dims == 3 && a.dims[0] > 0 {
				s := &idxSet{h: a.dims[1], w: a.dims[2], pix: a.data, labels: make([]byte, a.dims[0]), classes: []string{"x"}}
				if _, _, err := s.Image(a.dims[0] - 1); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

// FuzzCIFAR feeds arbitrary bytes to the CIFAR batch parser of both
// versions: it must return an error or records that decode, never panic.
func FuzzCIFAR(f *testing.F) {
	f.Add(cifarRecords(2, cifar10Layout, 0))
	f.Add(cifarRecords(1, cifar100Layout, 3))
	f.Add([]byte{200})
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, l := range []cifarLayout{cifar10Layout, cifar100Layout} {
			n, err := parseCIFAR(b, l)
			if err != nil {
				continue
			}
			s := &cifarSet{layout: l, data: b, n: n, classes: l.defaultCls}
			for i := range n {
				img, y, err := s.Image(i)
				if err != nil || y < 0 || y >= len(s.Classes()) || len(img.Pix) != cifarPixels {
					t.Fatalf("record %d: label %d, %d values, %v", i, y, len(img.Pix), err)
				}
			}
		}
	})
}

// FuzzDecodeImage feeds arbitrary bytes to the PNG and JPEG decoding of the
// image folder format: an error or a well-formed image, never a panic.
func FuzzDecodeImage(f *testing.F) {
	f.Add(pngBytes(f, grayImage(3, 2)))
	f.Add(jpegBytes(f, grayImage(8, 8)))
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := decodeImage(b)
		if err == nil {
			if err := img.check(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
