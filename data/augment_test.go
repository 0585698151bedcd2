package data

import (
	"slices"
	"testing"
)

// ramp returns a c x h x w image whose values are all distinct and
// non-zero.
func ramp(c, h, w int) Image {
	pix := make([]float32, c*h*w)
	for i := range pix {
		pix[i] = float32(i+1) / float32(len(pix)+1)
	}
	return Image{C: c, H: h, W: w, Pix: pix}
}

// shiftOf finds the (dy, dx, flip) that maps in to out as Augment.apply
// documents, or reports false.
func shiftOf(in, out Image, pad int) (int, int, bool, bool) {
	for _, flip := range []bool{false, true} {
		for dy := -pad; dy <= pad; dy++ {
			for dx := -pad; dx <= pad; dx++ {
				if slices.Equal(shifted(in, dy, dx, flip).Pix, out.Pix) {
					return dy, dx, flip, true
				}
			}
		}
	}
	return 0, 0, false, false
}

// shifted is the documented formula of the crop and flip, written
// independently of Augment.apply.
func shifted(in Image, dy, dx int, flip bool) Image {
	out := Image{C: in.C, H: in.H, W: in.W, Pix: make([]float32, len(in.Pix))}
	for c := range in.C {
		for y := range in.H {
			for x := range in.W {
				xs := x
				if flip {
					xs = in.W - 1 - x
				}
				sy, sx := y+dy, xs+dx
				if sy >= 0 && sy < in.H && sx >= 0 && sx < in.W {
					out.Pix[(c*in.H+y)*in.W+x] = in.Pix[(c*in.H+sy)*in.W+sx]
				}
			}
		}
	}
	return out
}

// TestAugment checks that the augmentations are the documented pad, crop
// and flip, that they depend on (seed, epoch, index) alone, and that their
// offsets cover the padding.
func TestAugment(t *testing.T) {
	in := ramp(3, 12, 10)
	if got := AugmentStandard.Padding(32, 32); got != 4 {
		t.Errorf("padding of 32x32 is %d, want 4", got)
	}
	if got := AugmentStandard.Padding(28, 28); got != 3 {
		t.Errorf("padding of 28x28 is %d, want 3", got)
	}
	if got := AugmentStandard.Padding(5, 100); got != 1 {
		t.Errorf("padding of 5x100 is %d, want 1", got)
	}
	pad := AugmentStandard.Padding(12, 10) // 1
	for _, a := range []Augment{AugmentStandard, AugmentCrop} {
		t.Run(string(a), func(t *testing.T) {
			seen := map[[3]int]int{}
			for index := range 400 {
				out, err := a.Apply(in, 5, 2, index)
				if err != nil {
					t.Fatal(err)
				}
				dy, dx, flip, ok := shiftOf(in, out, pad)
				if !ok {
					t.Fatalf("index %d: the output is no pad-and-crop of the input", index)
				}
				if flip && a == AugmentCrop {
					t.Fatalf("index %d: crop flipped", index)
				}
				f := 0
				if flip {
					f = 1
				}
				seen[[3]int{dy, dx, f}]++
				again, _ := a.Apply(in, 5, 2, index)
				if !slices.Equal(again.Pix, out.Pix) {
					t.Fatalf("index %d: a second call differs", index)
				}
			}
			want := (2*pad + 1) * (2*pad + 1)
			if a == AugmentStandard {
				want *= 2
			}
			if len(seen) != want {
				t.Errorf("%d distinct (dy, dx, flip) in 400 samples, want %d: %v", len(seen), want, seen)
			}
		})
	}
	differs := func(s1 uint64, e1, i1 int, s2 uint64, e2, i2 int) bool {
		n := 0
		for k := range 20 { // 20 tries: a single draw may coincide by chance
			a, _ := AugmentStandard.Apply(in, s1+uint64(k), e1, i1)
			b, _ := AugmentStandard.Apply(in, s2+uint64(k), e2, i2)
			if !slices.Equal(a.Pix, b.Pix) {
				n++
			}
		}
		return n > 0
	}
	if !differs(1, 0, 0, 1, 1, 0) {
		t.Error("the epoch does not change the augmentation")
	}
	if !differs(1, 0, 0, 1, 0, 1) {
		t.Error("the index does not change the augmentation")
	}
	if !differs(1, 0, 0, 100, 0, 0) {
		t.Error("the seed does not change the augmentation")
	}
	for _, a := range []Augment{AugmentNone, ""} {
		out, err := a.Apply(in, 1, 2, 3)
		if err != nil || !slices.Equal(out.Pix, in.Pix) {
			t.Errorf("augmentation %q changed the image (%v)", a, err)
		}
	}
	if _, err := Augment("mixup").Apply(in, 0, 0, 0); err == nil {
		t.Error("an unknown augmentation was applied")
	}
	if got := Augments(); !slices.Equal(got, []Augment{"none", "standard", "crop"}) {
		t.Errorf("Augments() = %q", got)
	}
}
