package data

import (
	"errors"
	"fmt"
	"image"
	"math"

	"golang.org/x/image/draw"
)

// Preprocess converts decoded images to a model's input: C channels of H by
// W values, each (x - Mean[c]) / Std[c].
type Preprocess struct {
	C, H, W int // the model's input shape; C is 1 or 3
	// Mean and Std hold one value for all channels or one per channel; an
	// empty Mean means 0 and an empty Std means 1.
	Mean, Std []float32
}

// Check reports what is wrong with p, all problems together.
func (p Preprocess) Check() error {
	var errs []error
	if p.C != 1 && p.C != 3 {
		errs = append(errs, fmt.Errorf("preprocessing: %d input channels; 1 or 3 are supported", p.C))
	}
	if p.H <= 0 || p.W <= 0 {
		errs = append(errs, fmt.Errorf("preprocessing: input size %dx%d; height and width must be positive", p.H, p.W))
	}
	if n := len(p.Mean); n > 1 && n != p.C {
		errs = append(errs, fmt.Errorf("preprocessing: %d mean values for %d channels; give 1 or %d", n, p.C, p.C))
	}
	if n := len(p.Std); n > 1 && n != p.C {
		errs = append(errs, fmt.Errorf("preprocessing: %d std values for %d channels; give 1 or %d", n, p.C, p.C))
	}
	for i, s := range p.Std {
		if s == 0 || math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
			errs = append(errs, fmt.Errorf("preprocessing: std value %d is %g; it must be finite and non-zero", i, s))
		}
	}
	for i, m := range p.Mean {
		if math.IsNaN(float64(m)) || math.IsInf(float64(m), 0) {
			errs = append(errs, fmt.Errorf("preprocessing: mean value %d is %g; it must be finite", i, m))
		}
	}
	return errors.Join(errs...)
}

// Apply converts img to the model input: Convert, then Normalize. The
// result holds C*H*W values, channel-major.
func (p Preprocess) Apply(img Image) ([]float32, error) {
	out := make([]float32, p.C*p.H*p.W)
	if err := p.apply(out, img, AugmentNone, 0, 0, 0); err != nil {
		return nil, err
	}
	return out, nil
}

// apply converts, augments and normalises img into dst, which holds C*H*W
// values.
func (p Preprocess) apply(dst []float32, img Image, aug Augment, seed uint64, epoch, index int) error {
	if err := p.Check(); err != nil {
		return err
	}
	conv, err := p.Convert(img)
	if err != nil {
		return err
	}
	conv = aug.apply(conv, seed, epoch, index)
	p.normalize(dst, conv)
	return nil
}

// Convert resizes img to H by W and converts it to C channels, keeping
// values in [0, 1]. Resizing uses golang.org/x/image/draw's BiLinear kernel,
// which widens when shrinking so that every source pixel counts (like
// antialiased bilinear resizing elsewhere), through 16 bits per channel. A
// grayscale image becomes RGB by repeating its channel; an RGB image becomes
// grayscale by ITU-R BT.601 luma, 0.299 R + 0.587 G + 0.114 B. An image
// already of the right shape is returned as it is (not copied).
func (p Preprocess) Convert(img Image) (Image, error) {
	if err := img.check(); err != nil {
		return Image{}, err
	}
	if p.C != 1 && p.C != 3 {
		return Image{}, fmt.Errorf("preprocessing: %d input channels; 1 or 3 are supported", p.C)
	}
	if p.H <= 0 || p.W <= 0 {
		return Image{}, fmt.Errorf("preprocessing: input size %dx%d; height and width must be positive", p.H, p.W)
	}
	if img.C == 3 && p.C == 1 { // fewer channels to resize
		img = toGray(img)
	}
	img = resize(img, p.H, p.W)
	if img.C == 1 && p.C == 3 {
		img = toRGB(img)
	}
	return img, nil
}

// Normalize returns (x - Mean[c]) / Std[c] for every value of img, which
// must already have the shape C x H x W (see Convert).
func (p Preprocess) Normalize(img Image) ([]float32, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	if err := img.check(); err != nil {
		return nil, err
	}
	if img.C != p.C || img.H != p.H || img.W != p.W {
		return nil, fmt.Errorf("preprocessing: image of shape %dx%dx%d, want %dx%dx%d", img.C, img.H, img.W, p.C, p.H, p.W)
	}
	out := make([]float32, len(img.Pix))
	p.normalize(out, img)
	return out, nil
}

// normalize writes the normalised values of img, of p's shape, to dst.
func (p Preprocess) normalize(dst []float32, img Image) {
	plane := img.H * img.W
	for c := range img.C {
		mean, inv := float32(0), float32(1)
		if len(p.Mean) == 1 {
			mean = p.Mean[0]
		} else if len(p.Mean) > c {
			mean = p.Mean[c]
		}
		if len(p.Std) == 1 {
			inv = 1 / p.Std[0]
		} else if len(p.Std) > c {
			inv = 1 / p.Std[c]
		}
		src, out := img.Pix[c*plane:(c+1)*plane], dst[c*plane:(c+1)*plane]
		if mean == 0 && inv == 1 {
			copy(out, src)
			continue
		}
		for i, x := range src {
			out[i] = (x - mean) * inv
		}
	}
}

// toGray converts a 3-channel image to one channel by BT.601 luma.
func toGray(img Image) Image {
	plane := img.H * img.W
	pix := make([]float32, plane)
	r, g, b := img.Pix[:plane], img.Pix[plane:2*plane], img.Pix[2*plane:]
	for i := range pix {
		pix[i] = 0.299*r[i] + 0.587*g[i] + 0.114*b[i]
	}
	return Image{C: 1, H: img.H, W: img.W, Pix: pix}
}

// toRGB converts a 1-channel image to three by repetition.
func toRGB(img Image) Image {
	plane := img.H * img.W
	pix := make([]float32, 3*plane)
	for c := range 3 {
		copy(pix[c*plane:], img.Pix)
	}
	return Image{C: 3, H: img.H, W: img.W, Pix: pix}
}

// to16 maps a value in [0, 1] (clamped) to 16 bits.
func to16(x float32) uint16 {
	return uint16(min(max(x, 0), 1)*0xffff + 0.5)
}

// resize scales img to h by w with draw.BiLinear through a 16-bit image
// (Gray16 or RGBA64, opaque).
func resize(img Image, h, w int) Image {
	if img.H == h && img.W == w {
		return img
	}
	plane := img.H * img.W
	out := Image{C: img.C, H: h, W: w, Pix: make([]float32, img.C*h*w)}
	if img.C == 1 {
		src := image.NewGray16(image.Rect(0, 0, img.W, img.H))
		for i, x := range img.Pix {
			v := to16(x)
			src.Pix[2*i], src.Pix[2*i+1] = byte(v>>8), byte(v)
		}
		dst := image.NewGray16(image.Rect(0, 0, w, h))
		draw.BiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
		for i := range out.Pix {
			out.Pix[i] = float32(uint16(dst.Pix[2*i])<<8|uint16(dst.Pix[2*i+1])) / 0xffff
		}
		return out
	}
	src := image.NewRGBA64(image.Rect(0, 0, img.W, img.H))
	for i := range plane {
		for c := range 3 {
			v := to16(img.Pix[c*plane+i])
			src.Pix[8*i+2*c], src.Pix[8*i+2*c+1] = byte(v>>8), byte(v)
		}
		src.Pix[8*i+6], src.Pix[8*i+7] = 0xff, 0xff
	}
	dst := image.NewRGBA64(image.Rect(0, 0, w, h))
	draw.BiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	oplane := h * w
	for i := range oplane {
		for c := range 3 {
			out.Pix[c*oplane+i] = float32(uint16(dst.Pix[8*i+2*c])<<8|uint16(dst.Pix[8*i+2*c+1])) / 0xffff
		}
	}
	return out
}
