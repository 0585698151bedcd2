package dcnet

import (
	"errors"
	"fmt"
	"math"

	"github.com/dcconvert/dcconvert/onnximport"
)

// Window is the geometry of a convolution as the reference implementation
// takes it: strides, dilations and pads (begin h, begin w, end h, end w)
// of two spatial axes, or auto_pad. Nil fields take the Conv defaults
// (strides and dilations 1, pads 0, the kernel from the filters); CeilMode
// must be false, since Conv has no ceil_mode.
type Window = onnximport.Window

// ReferenceResult is the output of the reference implementation together
// with the intermediate values tests assert on.
type ReferenceResult struct {
	// Y is the output in NCHW order, of shape Shape
	// [batch, C_out, outH, outW].
	Y     []float64
	Shape [4]int
	// N is the patch norm sqrt(sum x^2 + eps) at each output location,
	// [batch, 1, outH, outW].
	N []float64
	// Cos is clamp(P_c / N, -1, 1) at each output value, in the layout
	// of Y.
	Cos []float64
	// Rho is the radius of each output channel, or nil when the magnitude
	// has none.
	Rho []float64
}

// RhoSplit counts the output values whose patch norm is at most the
// channel's radius (below) and above it, so tests can check that both
// branches of ball and seg are exercised. Both are 0 when there is no
// radius.
func (r *ReferenceResult) RhoSplit() (below, above int) {
	if r.Rho == nil {
		return 0, 0
	}
	batch, cout, hw := r.Shape[0], r.Shape[1], r.Shape[2]*r.Shape[3]
	for n := 0; n < batch; n++ {
		for c := 0; c < cout; c++ {
			for i := 0; i < hw; i++ {
				if r.N[n*hw+i] <= r.Rho[c] {
					below++
				} else {
					above++
				}
			}
		}
	}
	return below, above
}

// Reference computes a decoupled convolution directly from the formulas of
// DCNET.md section 1, in float64 loops, for tests of the function bodies
// and of other implementations. x has shape xShape [batch, C_in, H, W];
// w has shape wShape [C_out, C_in, kH, kW]; b, alpha and rhoV ([C_out]
// each) must be given exactly when c has the bias, the channel scale and
// the learnable radius (then rhoScale, the radius scale, must be greater
// than 0; it is ignored otherwise). It returns y and its shape.
func Reference(c Config, x []float64, xShape [4]int, w []float64, wShape [4]int,
	b, alpha, rhoV []float64, rhoScale float64, win Window) (y []float64, yShape [4]int, err error) {
	r, err := ReferenceStats(c, x, xShape, w, wShape, b, alpha, rhoV, rhoScale, win)
	if err != nil {
		return nil, [4]int{}, err
	}
	return r.Y, r.Shape, nil
}

// ReferenceStats is Reference returning the patch norms, cosines and radii
// as well as the output.
func ReferenceStats(c Config, x []float64, xShape [4]int, w []float64, wShape [4]int,
	b, alpha, rhoV []float64, rhoScale float64, win Window) (*ReferenceResult, error) {
	wrap := func(err error) error { return fmt.Errorf("reference decoupled convolution: %w", err) }
	if err := c.Validate(); err != nil {
		return nil, wrap(err)
	}
	for i := range 4 {
		if xShape[i] <= 0 || wShape[i] <= 0 {
			return nil, wrap(fmt.Errorf("shapes %v and %v must be positive", xShape, wShape))
		}
	}
	batch, cin, height, width := xShape[0], xShape[1], xShape[2], xShape[3]
	cout, kh, kw := wShape[0], wShape[2], wShape[3]
	if wShape[1] != cin {
		return nil, wrap(fmt.Errorf("input has %d channels, filters of shape %v expect %d (decoupled convolutions have group 1)", cin, wShape, wShape[1]))
	}
	if len(x) != batch*cin*height*width {
		return nil, wrap(fmt.Errorf("input has %d values, shape %v holds %d", len(x), xShape, batch*cin*height*width))
	}
	if len(w) != cout*cin*kh*kw {
		return nil, wrap(fmt.Errorf("filters have %d values, shape %v holds %d", len(w), wShape, cout*cin*kh*kw))
	}
	var errs []error
	perChannel := func(name string, v []float64, want bool) {
		switch {
		case want && v == nil:
			errs = append(errs, fmt.Errorf("input %s is missing: the configuration has it", name))
		case !want && v != nil:
			errs = append(errs, fmt.Errorf("input %s is given: the configuration has none", name))
		case want && len(v) != cout:
			errs = append(errs, fmt.Errorf("input %s has %d values, want %d (one per output channel)", name, len(v), cout))
		}
	}
	perChannel(InputB, b, c.Bias)
	perChannel(InputAlpha, alpha, c.ChannelScale)
	perChannel(InputRhoV, rhoV, c.usesRhoInputs())
	if c.usesRhoInputs() && !(rhoScale > 0 && !math.IsInf(rhoScale, 0)) {
		errs = append(errs, fmt.Errorf("input %s is %g, want a finite number greater than 0", InputRhoScale, rhoScale))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, wrap(err)
	}
	g, err := resolveWindow(win, [2]int{height, width}, [2]int{kh, kw})
	if err != nil {
		return nil, wrap(err)
	}
	oh, ow := g.out[0], g.out[1]

	r := &ReferenceResult{
		Shape: [4]int{batch, cout, oh, ow},
		Y:     make([]float64, batch*cout*oh*ow),
		Cos:   make([]float64, batch*cout*oh*ow),
		N:     make([]float64, batch*oh*ow),
	}
	eps := float64(c.Eps)
	wnorm := make([]float64, cout)
	fsize := cin * kh * kw
	for co := range cout {
		var s float64
		for _, v := range w[co*fsize : (co+1)*fsize] {
			s += v * v
		}
		wnorm[co] = math.Sqrt(s + eps)
	}
	if c.NeedsRho() {
		r.Rho = make([]float64, cout)
		for co := range cout {
			if c.LearnRho {
				r.Rho[co] = (rhoV[co]*rhoV[co] + RhoFloor) * rhoScale
			} else {
				r.Rho[co] = float64(c.Rho)
			}
		}
	}

	dot := make([]float64, cout)
	for n := range batch {
		for i := range oh {
			for j := range ow {
				clear(dot)
				var sq float64
				for ci := range cin {
					for a := range kh {
						y := i*g.strides[0] - g.pads[0] + a*g.dilations[0]
						if y < 0 || y >= height {
							continue // zero padding
						}
						for bb := range kw {
							xx := j*g.strides[1] - g.pads[1] + bb*g.dilations[1]
							if xx < 0 || xx >= width {
								continue
							}
							v := x[((n*cin+ci)*height+y)*width+xx]
							sq += v * v
							for co := range cout {
								dot[co] += v * w[((co*cin+ci)*kh+a)*kw+bb]
							}
						}
					}
				}
				norm := math.Sqrt(sq + eps)
				r.N[(n*oh+i)*ow+j] = norm
				for co := range cout {
					p := dot[co] / wnorm[co]
					cos := math.Max(-1, math.Min(1, p/norm))
					var rho float64
					if r.Rho != nil {
						rho = r.Rho[co]
					}
					v := c.MagnitudeOf(norm, rho) * c.WeightOf(wnorm[co]) * c.AngularOf(cos)
					if alpha != nil {
						v *= alpha[co]
					}
					if b != nil {
						v += b[co]
					}
					at := ((n*cout+co)*oh+i)*ow + j
					r.Y[at] = v
					r.Cos[at] = cos
				}
			}
		}
	}
	return r, nil
}

// MagnitudeOf returns h(n) for patch norm n and radius rho (ignored by the
// magnitudes that have none), as DCNET.md's table writes it.
func (c Config) MagnitudeOf(n, rho float64) float64 {
	alpha, beta := float64(c.Alpha), float64(c.Beta)
	switch c.Magnitude {
	case MagSphere:
		return alpha
	case MagBall:
		return alpha * math.Min(n, rho) / rho
	case MagTanh:
		return alpha * math.Tanh(n/rho)
	case MagSeg:
		if n <= rho {
			return alpha * n
		}
		return beta*n + alpha*rho - beta*rho
	case MagLog:
		return alpha * math.Log(1+n)
	case MagMix:
		return alpha*n + beta*math.Log(1+n)
	default: // MagLinear
		return alpha * n
	}
}

// AngularOf returns g for the clamped cosine cos, as DCNET.md's table
// writes it.
func (c Config) AngularOf(cos float64) float64 {
	switch c.Angular {
	case AngLinear:
		return 1 - 2*math.Acos(cos)/math.Pi
	case AngSigmoid:
		k := float64(c.K)
		return math.Tanh((math.Pi/2-math.Acos(cos))/(2*k)) / math.Tanh(math.Pi/(4*k))
	case AngSqcos:
		return math.Copysign(cos*cos, cos)
	default: // AngCos
		return cos
	}
}

// WeightOf returns m for the filter norm |w|_c.
func (c Config) WeightOf(norm float64) float64 {
	switch c.Weighted {
	case WeightLinear:
		return norm
	case WeightLog:
		return math.Log(1 + norm)
	default: // WeightNone
		return 1
	}
}

// geometry is a resolved two-dimensional convolution window.
type geometry struct {
	strides, dilations [2]int
	pads               [4]int // begin h, begin w, end h, end w
	out                [2]int
}

// resolveWindow fills the defaults of win, checks it against the kernel
// and computes the output size for an input of size in.
func resolveWindow(win Window, in, kernel [2]int) (geometry, error) {
	var g geometry
	if win.CeilMode {
		return g, errors.New("window: ceil_mode is not a Conv attribute")
	}
	k64 := []int64{int64(kernel[0]), int64(kernel[1])}
	if win.Kernel == nil {
		win.Kernel = k64
	} else if len(win.Kernel) != 2 || win.Kernel[0] != k64[0] || win.Kernel[1] != k64[1] {
		return g, fmt.Errorf("window: kernel_shape %v does not match the filters' %v", win.Kernel, k64)
	}
	win, err := win.Resolve()
	if err != nil {
		return g, fmt.Errorf("window: %w", err)
	}
	out, pads, err := win.Output([]onnximport.Dim{{Size: int64(in[0])}, {Size: int64(in[1])}})
	if err != nil {
		return g, fmt.Errorf("window: %w", err)
	}
	for i := range 2 {
		g.strides[i], g.dilations[i], g.out[i] = int(win.Strides[i]), int(win.Dilations[i]), int(out[i].Size)
		if g.out[i] < 1 {
			return g, fmt.Errorf("window: output size %d is empty", g.out[i])
		}
	}
	for i := range 4 {
		g.pads[i] = int(pads[i])
	}
	return g, nil
}
