package checkpoint

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"gonum.org/v1/plot/plotutil"
)

// decodePNG decodes b and checks that it is a curvesWidth x curvesHeight
// image.
func decodePNG(t *testing.T, b []byte) image.Image {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("the curves are not a PNG image: %v", err)
	}
	if got := img.Bounds(); got != image.Rect(0, 0, curvesWidth, curvesHeight) {
		t.Fatalf("the image is %v, want %dx%d", got, curvesWidth, curvesHeight)
	}
	return img
}

// countColor counts the pixels of img within r that have color c exactly:
// the middle of a line or dot drawn in c.
func countColor(img image.Image, r image.Rectangle, c color.Color) int {
	r0, g0, b0, _ := c.RGBA()
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r == r0 && g == g0 && b == b0 {
				n++
			}
		}
	}
	return n
}

// The legends stand at the right edge; the curves are looked for left of
// plotEdge, so that a legend alone does not count as a curve.
const plotEdge = curvesWidth * 85 / 100

// distinctColors counts the colors of img, up to most.
func distinctColors(img image.Image, most int) int {
	seen := map[color.RGBA]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y && len(seen) < most; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), uint8(a >> 8)}] = true
		}
	}
	return len(seen)
}

func TestRenderCurves(t *testing.T) {
	recs := sampleRecords()
	recs = append(recs, Record{Step: 80, Epoch: 2, Loss: math.NaN(), TrainAcc: math.Inf(1), ValLoss: ptr(math.Inf(1))})
	b, err := RenderCurves(recs)
	if err != nil {
		t.Fatal(err)
	}
	img := decodePNG(t, b)
	if n := distinctColors(img, 3); n < 3 {
		t.Fatalf("the image has %d colors; it is blank", n)
	}
	// The loss panel is the top half, the accuracy panel the bottom; each
	// draws the training series in the first color and validation in the
	// second.
	train, val := plotutil.Color(0), plotutil.Color(1)
	for _, half := range []struct {
		name string
		r    image.Rectangle
	}{{"loss", image.Rect(0, 0, plotEdge, curvesHeight/2)}, {"accuracy", image.Rect(0, curvesHeight/2, plotEdge, curvesHeight)}} {
		if countColor(img, half.r, train) == 0 {
			t.Errorf("the %s panel shows no training curve", half.name)
		}
		if countColor(img, half.r, val) == 0 {
			t.Errorf("the %s panel shows no validation curve", half.name)
		}
	}

	again, err := RenderCurves(recs)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Error("rendering the same records twice gave different images")
	}
}

func TestRenderCurvesEdgeCases(t *testing.T) {
	tests := []struct {
		name      string
		recs      []Record
		wantTrain bool
	}{
		{"no records", nil, false},
		{"one record", sampleRecords()[:1], true},
		{"only non-finite values", []Record{{Step: 1, Loss: math.NaN(), TrainAcc: math.NaN()}}, false},
		{"one step repeated", []Record{{Step: 5, Loss: 1, TrainAcc: 0.5}, {Step: 5, Loss: 1, TrainAcc: 0.5}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := RenderCurves(tt.recs)
			if err != nil {
				t.Fatal(err)
			}
			img := decodePNG(t, b)
			if n := distinctColors(img, 3); n < 3 {
				t.Errorf("the image has %d colors; it is blank", n)
			}
			if got := countColor(img, image.Rect(0, 0, plotEdge, curvesHeight), plotutil.Color(0)) > 0; got != tt.wantTrain {
				t.Errorf("training curve drawn: %v, want %v", got, tt.wantTrain)
			}
		})
	}
}

func TestPlotCurves(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, CurvesFile)
	if err := PlotCurves(path, sampleRecords()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	decodePNG(t, b)
	if err := PlotCurves(filepath.Join(dir, "no", CurvesFile), sampleRecords()); err == nil {
		t.Error("plotting into a missing directory succeeded")
	}
}
