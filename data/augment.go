package data

import "fmt"

// Augment names a random augmentation of training images. Each sample's
// randomness comes from (seed, epoch, index) alone, index being the
// sample's index in its Set, so an epoch's images do not depend on the
// order or the goroutine in which they are made.
type Augment string

// The augmentations.
const (
	// AugmentNone leaves images as they are. The empty Augment means the
	// same.
	AugmentNone Augment = "none"
	// AugmentStandard is AugmentCrop followed by a horizontal flip with
	// probability 1/2.
	AugmentStandard Augment = "standard"
	// AugmentCrop pads the image with Padding(H, W) black pixels on every
	// side and crops an H by W window at a uniformly random offset (a shift
	// of -pad to +pad pixels in each direction); no flip, for data such as
	// digits whose mirror image means something else.
	AugmentCrop Augment = "crop"
)

// Augments returns every augmentation.
func Augments() []Augment {
	return []Augment{AugmentNone, AugmentStandard, AugmentCrop}
}

// Check reports whether a is a known augmentation.
func (a Augment) Check() error {
	switch a {
	case "", AugmentNone, AugmentStandard, AugmentCrop:
		return nil
	}
	return fmt.Errorf("unknown augmentation %q; known augmentations: none, standard, crop", string(a))
}

// Padding returns the padding of AugmentCrop and AugmentStandard for an
// image of h by w pixels: an eighth of the shorter side, at least 1 (4 for
// 32x32 CIFAR images, 3 for 28x28 MNIST ones, 28 for 224x224).
func (a Augment) Padding(h, w int) int {
	return max(1, min(h, w)/8)
}

// Apply returns img augmented for sample index of the given epoch. It is
// applied to the converted image, before normalisation (see Preprocess), so
// padding is black. img is not modified; AugmentNone returns it as it is.
func (a Augment) Apply(img Image, seed uint64, epoch, index int) (Image, error) {
	if err := a.Check(); err != nil {
		return Image{}, err
	}
	if err := img.check(); err != nil {
		return Image{}, err
	}
	return a.apply(img, seed, epoch, index), nil
}

// apply is Apply for a known augmentation and a well-formed image. Output
// pixel (y, x) of channel c is input pixel (y+dy, x'+dx), or 0 outside the
// input, where x' is W-1-x when flipped and x otherwise.
func (a Augment) apply(img Image, seed uint64, epoch, index int) Image {
	if a != AugmentStandard && a != AugmentCrop {
		return img
	}
	r := newRNG(seed, streamAugment, uint64(epoch), uint64(index))
	pad := a.Padding(img.H, img.W)
	dy := r.intn(2*pad+1) - pad
	dx := r.intn(2*pad+1) - pad
	flip := a == AugmentStandard && r.uint64()&1 == 1
	h, w := img.H, img.W
	out := Image{C: img.C, H: h, W: w, Pix: make([]float32, len(img.Pix))}
	for c := range img.C {
		src := img.Pix[c*h*w : (c+1)*h*w]
		dst := out.Pix[c*h*w : (c+1)*h*w]
		for y := range h {
			sy := y + dy
			if sy < 0 || sy >= h {
				continue
			}
			row := dst[y*w : (y+1)*w]
			srow := src[sy*w : (sy+1)*w]
			for x := range w {
				sx := x
				if flip {
					sx = w - 1 - x
				}
				sx += dx
				if sx >= 0 && sx < w {
					row[x] = srow[sx]
				}
			}
		}
	}
	return out
}
