package data

import (
	"testing"
)

// TestNormalize checks (x - mean) / std against hand computation.
func TestNormalize(t *testing.T) {
	img := Image{C: 3, H: 1, W: 2, Pix: []float32{0, 1, 0.2, 0.6, 0.5, 0.7}}
	tests := []struct {
		name      string
		mean, std []float32
		want      []float32
	}{
		{"per channel", []float32{0.5, 0.4, 0.3}, []float32{0.25, 0.5, 2},
			[]float32{(0 - 0.5) / 0.25, (1 - 0.5) / 0.25, (0.2 - 0.4) / 0.5, (0.6 - 0.4) / 0.5, (0.5 - 0.3) / 2, (0.7 - 0.3) / 2}},
		{"one for all", []float32{0.5}, []float32{0.5}, []float32{-1, 1, -0.6, 0.2, 0, 0.4}},
		{"none", nil, nil, img.Pix},
		{"mean only", []float32{0.1}, nil, []float32{-0.1, 0.9, 0.1, 0.5, 0.4, 0.6}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Preprocess{C: 3, H: 1, W: 2, Mean: tc.mean, Std: tc.std}
			got, err := p.Apply(img)
			if err != nil {
				t.Fatal(err)
			}
			checkFloats(t, "Apply", got, tc.want, float32s)
			got, err = p.Normalize(img)
			if err != nil {
				t.Fatal(err)
			}
			checkFloats(t, "Normalize", got, tc.want, float32s)
		})
	}
}

// TestConvertChannels checks gray to RGB by repetition and RGB to gray by
// BT.601 luma.
func TestConvertChannels(t *testing.T) {
	gray := Image{C: 1, H: 1, W: 2, Pix: []float32{0.25, 1}}
	got, err := Preprocess{C: 3, H: 1, W: 2}.Convert(gray)
	if err != nil {
		t.Fatal(err)
	}
	checkFloats(t, "gray to RGB", got.Pix, []float32{0.25, 1, 0.25, 1, 0.25, 1}, exact)

	rgb := Image{C: 3, H: 1, W: 2, Pix: []float32{1, 0.2, 0, 0.4, 0, 0.6}}
	got, err = Preprocess{C: 1, H: 1, W: 2}.Convert(rgb)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{0.299, 0.299*0.2 + 0.587*0.4 + 0.114*0.6} // 0.363
	checkFloats(t, "RGB to gray", got.Pix, want, float32s)
	if got.C != 1 {
		t.Errorf("%d channels, want 1", got.C)
	}
}

// TestResize checks BiLinear resizing on cases computed by hand.
func TestResize(t *testing.T) {
	tests := []struct {
		name string
		in   Image
		h, w int
		want []float32
	}{
		{"2x2 to 1x1 averages", Image{C: 1, H: 2, W: 2, Pix: []float32{0, 0.2, 0.4, 1}}, 1, 1, []float32{0.4}},
		{"RGB 2x2 to 1x1 averages", Image{C: 3, H: 2, W: 2, Pix: []float32{0, 0.2, 0.4, 1, 1, 1, 1, 1, 0.1, 0.1, 0.3, 0.3}}, 1, 1, []float32{0.4, 1, 0.2}},
		{"1x2 to 1x4 interpolates", Image{C: 1, H: 1, W: 2, Pix: []float32{0.2, 1}}, 1, 4, []float32{0.2, 0.4, 0.8, 1}},
		{"uniform stays uniform", Image{C: 1, H: 5, W: 7, Pix: fill(35, 0.3)}, 3, 4, fill(12, 0.3)},
		{"same size is untouched", Image{C: 1, H: 1, W: 3, Pix: []float32{0.123456, 0.5, 0.9}}, 1, 3, []float32{0.123456, 0.5, 0.9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Preprocess{C: tc.in.C, H: tc.h, W: tc.w}.Convert(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.H != tc.h || got.W != tc.w || got.C != tc.in.C {
				t.Fatalf("shape %dx%dx%d", got.C, got.H, got.W)
			}
			checkFloats(t, "resized", got.Pix, tc.want, bits16)
		})
	}
}

// fill returns n copies of v.
func fill(n int, v float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// TestApplyPipeline runs the whole conversion on one case by hand: RGB 2x2
// to gray 1x1 with mean and std.
func TestApplyPipeline(t *testing.T) {
	img := Image{C: 3, H: 2, W: 2, Pix: []float32{1, 1, 1, 1, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5}}
	got, err := Preprocess{C: 1, H: 1, W: 1, Mean: []float32{0.1}, Std: []float32{0.5}}.Apply(img)
	if err != nil {
		t.Fatal(err)
	}
	luma := 0.299*1 + 0.587*0 + 0.114*0.5
	checkFloats(t, "Apply", got, []float32{float32((luma - 0.1) / 0.5)}, bits16*2)
}

// TestPreprocessErrors checks that bad settings and images are refused.
func TestPreprocessErrors(t *testing.T) {
	img := Image{C: 1, H: 2, W: 2, Pix: make([]float32, 4)}
	tests := []struct {
		name string
		p    Preprocess
		img  Image
		want string
	}{
		{"two channels", Preprocess{C: 2, H: 2, W: 2}, img, "2 input channels"},
		{"no size", Preprocess{C: 1}, img, "input size 0x0"},
		{"mean length", Preprocess{C: 3, H: 2, W: 2, Mean: []float32{1, 2}}, img, "2 mean values for 3 channels"},
		{"zero std", Preprocess{C: 1, H: 2, W: 2, Std: []float32{0}}, img, "std value 0 is 0"},
		{"short image", Preprocess{C: 1, H: 2, W: 2}, Image{C: 1, H: 2, W: 2, Pix: make([]float32, 3)}, "holds 3 values, want 4"},
		{"four-channel image", Preprocess{C: 1, H: 2, W: 2}, Image{C: 4, H: 1, W: 1, Pix: make([]float32, 4)}, "4 channels"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.p.Apply(tc.img)
			wantErrNaming(t, err, tc.want)
		})
	}
	if _, err := (Preprocess{C: 1, H: 3, W: 3}).Normalize(img); err == nil {
		t.Error("Normalize took an image of another shape")
	}
}
