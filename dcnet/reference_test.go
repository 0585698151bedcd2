package dcnet

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestAngularOf(t *testing.T) {
	for _, a := range Angulars() {
		for _, k := range []float32{0.05, 0.3, 1, 4} {
			c := withConfig(func(c *Config) { c.Angular, c.K = a, k })
			for _, p := range []struct{ cos, want float64 }{{1, 1}, {0, 0}, {-1, -1}} {
				if got := c.AngularOf(p.cos); !absTol(1e-12).within(got, p.want) {
					t.Errorf("%s k=%g: g(cos=%g) = %.17g, want %g", a, k, p.cos, got, p.want)
				}
			}
		}
	}
	// The sigmoid equals the paper's K' (1 - e^u) / (1 + e^u),
	// u = theta/k - pi/(2k), K' = (1 + e^(-pi/(2k))) / (1 - e^(-pi/(2k))).
	for _, k := range []float64{0.1, 0.3, 0.5, 2} {
		c := withConfig(func(c *Config) { c.Angular, c.K = AngSigmoid, float32(k) })
		k = float64(c.K)
		for _, cos := range []float64{-0.99, -0.5, -0.1, 0.2, 0.7, 0.999} {
			theta := math.Acos(cos)
			u := theta/k - math.Pi/(2*k)
			kp := (1 + math.Exp(-math.Pi/(2*k))) / (1 - math.Exp(-math.Pi/(2*k)))
			want := kp * (1 - math.Exp(u)) / (1 + math.Exp(u))
			if got := c.AngularOf(cos); !absTol(1e-12).within(got, want) {
				t.Errorf("sigmoid k=%g cos=%g: %.17g, paper form %.17g", k, cos, got, want)
			}
		}
	}
	hand := []struct {
		a         Angular
		cos, want float64
	}{
		{AngCos, 0.5, 0.5},
		{AngLinear, 0.5, 1 - 2.0/3},                // theta = pi/3
		{AngLinear, -0.5, 1 - 4.0/3},               // theta = 2 pi/3
		{AngSqcos, -0.5, -0.25},                    // sign(cos) cos^2
		{AngSqcos, 0.5, 0.25},                      //
		{AngCos, math.Sqrt2 / 2, 0.5 * math.Sqrt2}, //
	}
	for _, h := range hand {
		c := withConfig(func(c *Config) { c.Angular = h.a })
		if got := c.AngularOf(h.cos); !absTol(1e-12).within(got, h.want) {
			t.Errorf("%s: g(%g) = %.17g, want %.17g", h.a, h.cos, got, h.want)
		}
	}
}

func TestMagnitudeOf(t *testing.T) {
	const alpha, beta, rho = 1.5, 0.5, 2.0
	tests := []struct {
		m       Magnitude
		n, want float64
	}{
		{MagSphere, 1, 1.5},
		{MagSphere, 3, 1.5},
		{MagBall, 1, 0.75},
		{MagBall, 2, 1.5},
		{MagBall, 3, 1.5},
		{MagTanh, 1, 1.5 * math.Tanh(0.5)},
		{MagLinear, 3, 4.5},
		{MagSeg, 1, 1.5},
		{MagSeg, 2, 3},
		{MagSeg, 3, 3.5}, // beta N + alpha rho - beta rho = 1.5 + 3 - 1
		{MagLog, 1, 1.5 * math.Ln2},
		{MagMix, 1, 1.5 + 0.5*math.Ln2},
	}
	for _, tt := range tests {
		c := withConfig(func(c *Config) { c.Magnitude, c.Alpha, c.Beta = tt.m, alpha, beta })
		if got := c.MagnitudeOf(tt.n, rho); !absTol(1e-12).within(got, tt.want) {
			t.Errorf("%s: h(%g) = %.17g, want %.17g", tt.m, tt.n, got, tt.want)
		}
	}
	for _, m := range []Magnitude{MagBall, MagSeg} {
		c := withConfig(func(c *Config) { c.Magnitude, c.Alpha, c.Beta = m, alpha, beta })
		lo, hi := c.MagnitudeOf(rho-1e-9, rho), c.MagnitudeOf(rho+1e-9, rho)
		if !absTol(1e-8).within(hi, lo) {
			t.Errorf("%s is not continuous at rho: %g, %g", m, lo, hi)
		}
	}
	for _, tt := range []struct {
		w          Weighting
		norm, want float64
	}{{WeightNone, 3, 1}, {WeightLinear, 3, 3}, {WeightLog, 3, math.Log(4)}} {
		c := withConfig(func(c *Config) { c.Weighted = tt.w })
		if got := c.WeightOf(tt.norm); !absTol(1e-12).within(got, tt.want) {
			t.Errorf("%s: m(%g) = %g, want %g", tt.w, tt.norm, got, tt.want)
		}
	}
}

// TestReferenceByHand checks one output location worked out on paper: a
// 1x1 input with channels (3, 4), filter (4, 3), so <w, x> = 24 and
// |w| = |x| = 5 up to eps.
func TestReferenceByHand(t *testing.T) {
	x := []float64{3, 4}
	w := []float64{4, 3}
	xs, ws := [4]int{1, 2, 1, 1}, [4]int{1, 2, 1, 1}
	eps := float64(float32(1e-2)) // the float32 value a Config holds
	norm := math.Sqrt(25 + eps)   // both norms
	cos := 24 / (norm * norm)
	tests := []struct {
		name        string
		c           Config
		b, alpha    []float64
		rhoV        []float64
		rhoScale, y float64
	}{
		{"identity", withConfig(func(c *Config) { c.Weighted, c.Bias = WeightLinear, true }), []float64{0.5}, nil, nil, 0, 24.5},
		{"linear none", DefaultConfig(), nil, nil, nil, 0, 24 / norm},
		{"sphere", withConfig(func(c *Config) { c.Magnitude, c.Alpha = MagSphere, 2 }), nil, nil, nil, 0, 2 * cos},
		{"ball below rho with scale", withConfig(func(c *Config) { c.Magnitude, c.Rho, c.ChannelScale = MagBall, 10, true }),
			nil, []float64{3}, nil, 0, 3 * norm / 10 * cos},
		{"ball above learnable rho", withConfig(func(c *Config) { c.Magnitude, c.LearnRho = MagBall, true }),
			nil, nil, []float64{1}, 2, cos}, // rho = (1 + 1e-4) * 2 < 5
		{"seg above rho", withConfig(func(c *Config) { c.Magnitude, c.Rho = MagSeg, 4 }), nil, nil, nil, 0,
			(0.5*norm + 4 - 0.5*4) * cos},
		{"log sqcos log weighting", withConfig(func(c *Config) { c.Magnitude, c.Angular, c.Weighted = MagLog, AngSqcos, WeightLog }),
			nil, nil, nil, 0, math.Log(1+norm) * math.Log(1+norm) * cos * cos},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Eps = float32(eps)
			y, shape, err := Reference(tt.c, x, xs, w, ws, tt.b, tt.alpha, tt.rhoV, tt.rhoScale, Window{})
			if err != nil {
				t.Fatal(err)
			}
			if shape != [4]int{1, 1, 1, 1} || !relTol(1e-12).within(y[0], tt.y) {
				t.Errorf("y = %v %v, want [%.17g] [1 1 1 1]", y, shape, tt.y)
			}
		})
	}
}

// naiveGeometry is a convolution window written out in full.
type naiveGeometry struct {
	name              string
	xShape, wShape    [4]int
	win               Window
	pads              [4]int // resolved: top, left, bottom, right
	strides, dilation [2]int
	bias              bool
}

// naive computes conv(X, W), the patch norms sqrt(sum x^2 + eps) and the
// filter norms by padding the input explicitly and gathering each patch
// into a vector: an implementation independent of Reference's indexing.
func naive(g naiveGeometry, x, w []float64, eps float64) (conv, norms []float64, wnorm []float64, out [2]int) {
	n, cin, h, wd := g.xShape[0], g.xShape[1], g.xShape[2], g.xShape[3]
	cout, kh, kw := g.wShape[0], g.wShape[2], g.wShape[3]
	ph, pw := h+g.pads[0]+g.pads[2], wd+g.pads[1]+g.pads[3]
	padded := make([]float64, n*cin*ph*pw)
	for b := range n {
		for c := range cin {
			for i := range h {
				for j := range wd {
					padded[((b*cin+c)*ph+i+g.pads[0])*pw+j+g.pads[1]] = x[((b*cin+c)*h+i)*wd+j]
				}
			}
		}
	}
	out[0] = (ph-(kh-1)*g.dilation[0]-1)/g.strides[0] + 1
	out[1] = (pw-(kw-1)*g.dilation[1]-1)/g.strides[1] + 1
	size := cin * kh * kw
	wnorm = make([]float64, cout)
	for o := range cout {
		var s float64
		for i := range size {
			s += w[o*size+i] * w[o*size+i]
		}
		wnorm[o] = math.Sqrt(s + eps)
	}
	conv = make([]float64, n*cout*out[0]*out[1])
	norms = make([]float64, n*out[0]*out[1])
	patch := make([]float64, size)
	for b := range n {
		for i := range out[0] {
			for j := range out[1] {
				for c := range cin {
					for a := range kh {
						for e := range kw {
							r, s := i*g.strides[0]+a*g.dilation[0], j*g.strides[1]+e*g.dilation[1]
							patch[(c*kh+a)*kw+e] = padded[((b*cin+c)*ph+r)*pw+s]
						}
					}
				}
				var sq float64
				for _, v := range patch {
					sq += v * v
				}
				norms[(b*out[0]+i)*out[1]+j] = math.Sqrt(sq + eps)
				for o := range cout {
					var d float64
					for k, v := range patch {
						d += v * w[o*size+k]
					}
					conv[((b*cout+o)*out[0]+i)*out[1]+j] = d
				}
			}
		}
	}
	return conv, norms, wnorm, out
}

// naiveGeometries are the windows the reference is checked on.
func naiveGeometries() []naiveGeometry {
	return []naiveGeometry{
		{name: "asymmetric pads, stride, dilation", xShape: [4]int{2, 3, 7, 6}, wShape: [4]int{4, 3, 3, 3},
			win:  Window{Pads: []int64{1, 0, 2, 1}, Strides: []int64{2, 1}, Dilations: []int64{1, 2}},
			pads: [4]int{1, 0, 2, 1}, strides: [2]int{2, 1}, dilation: [2]int{1, 2}, bias: true},
		{name: "1x1 kernel, no bias", xShape: [4]int{1, 3, 7, 6}, wShape: [4]int{5, 3, 1, 1},
			pads: [4]int{}, strides: [2]int{1, 1}, dilation: [2]int{1, 1}},
		// SAME_UPPER, stride 2, kernel 3x2 on 7x6: outputs 4x3, total pads
		// (4-1)*2+3-7 = 2 and (3-1)*2+2-6 = 0.
		{name: "auto_pad SAME_UPPER", xShape: [4]int{1, 2, 7, 6}, wShape: [4]int{3, 2, 3, 2},
			win:  Window{AutoPad: "SAME_UPPER", Strides: []int64{2, 2}},
			pads: [4]int{1, 0, 1, 0}, strides: [2]int{2, 2}, dilation: [2]int{1, 1}, bias: true},
		// SAME_LOWER, kernel 2x2: total pads 1 each, the extra before.
		{name: "auto_pad SAME_LOWER", xShape: [4]int{1, 2, 5, 4}, wShape: [4]int{2, 2, 2, 2},
			win:  Window{AutoPad: "SAME_LOWER"},
			pads: [4]int{1, 1, 0, 0}, strides: [2]int{1, 1}, dilation: [2]int{1, 1}},
		{name: "auto_pad VALID", xShape: [4]int{1, 2, 5, 4}, wShape: [4]int{2, 2, 3, 3},
			win:  Window{AutoPad: "VALID", Pads: []int64{5, 5, 5, 5}},
			pads: [4]int{}, strides: [2]int{1, 1}, dilation: [2]int{1, 1}},
	}
}

// randomSlice returns n values uniform in [lo, hi).
func randomSlice(r *rand.Rand, n int, lo, hi float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = lo + (hi-lo)*r.Float64()
	}
	return out
}

// TestReferenceAgainstNaive checks the three closed forms DCNET.md names
// (identity, sphere, linear none) and every other configuration's pieces
// (N, cos) against the naive implementation.
func TestReferenceAgainstNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	eps := float64(DefaultConfig().Eps) // the float32 value a Config holds
	cases := 0
	for _, g := range naiveGeometries() {
		t.Run(g.name, func(t *testing.T) {
			x := randomSlice(r, g.xShape[0]*g.xShape[1]*g.xShape[2]*g.xShape[3], -1, 1)
			w := randomSlice(r, g.wShape[0]*g.wShape[1]*g.wShape[2]*g.wShape[3], -1, 1)
			cout := g.wShape[0]
			var b []float64
			if g.bias {
				b = randomSlice(r, cout, -1, 1)
			}
			conv, norms, wnorm, out := naive(g, x, w, eps)
			hw := out[0] * out[1]
			at := func(i int) (n, o, loc int) { return i / (cout * hw), i / hw % cout, i % hw }
			closed := []struct {
				name string
				c    Config
				want func(i int) float64
			}{
				{"identity", withConfig(func(c *Config) { c.Weighted, c.Bias = WeightLinear, g.bias }), func(i int) float64 {
					_, o, _ := at(i)
					if b != nil {
						return conv[i] + b[o]
					}
					return conv[i]
				}},
				{"sphere", withConfig(func(c *Config) { c.Magnitude, c.Alpha = MagSphere, 1.5 }), func(i int) float64 {
					n, o, loc := at(i)
					return 1.5 * conv[i] / wnorm[o] / norms[n*hw+loc]
				}},
				{"linear none", withConfig(func(c *Config) { c.Alpha = 0.5 }), func(i int) float64 {
					_, o, _ := at(i)
					return 0.5 * conv[i] / wnorm[o]
				}},
			}
			for _, cl := range closed {
				res, err := ReferenceStats(cl.c, x, g.xShape, w, g.wShape, b, nil, nil, 0, g.win)
				if cl.c.Bias != (b != nil) {
					res, err = ReferenceStats(cl.c, x, g.xShape, w, g.wShape, nil, nil, nil, 0, g.win)
				}
				if err != nil {
					t.Fatal(err)
				}
				if res.Shape != [4]int{g.xShape[0], cout, out[0], out[1]} {
					t.Fatalf("%s: shape %v, want [%d %d %d %d]", cl.name, res.Shape, g.xShape[0], cout, out[0], out[1])
				}
				want := make([]float64, len(res.Y))
				for i := range want {
					want[i] = cl.want(i)
				}
				if _, err := absTol(1e-12*maxAbs(want)).compare(res.Y, want); err != nil {
					t.Errorf("%s: %v", cl.name, err)
				}
				if _, err := absTol(1e-12).compare(res.N, norms); err != nil {
					t.Errorf("%s: patch norms: %v", cl.name, err)
				}
				cases++
			}
			// Every configuration: y from N, cos and the scalar functions.
			rhoV := randomSlice(r, cout, 0.8, 1.2)
			alpha := randomSlice(r, cout, 0.5, 1.5)
			for _, c := range allConfigs(1) {
				c.Bias = g.bias
				var rv, al []float64
				if c.LearnRho {
					rv = rhoV
				}
				if c.ChannelScale {
					al = alpha
				}
				res, err := ReferenceStats(c, x, g.xShape, w, g.wShape, b, al, rv, 0.9, g.win)
				if err != nil {
					t.Fatalf("%s: %v", c.Key(), err)
				}
				want := make([]float64, len(res.Y))
				for i := range want {
					n, o, loc := at(i)
					cos := math.Max(-1, math.Min(1, conv[i]/wnorm[o]/norms[n*hw+loc]))
					rho := 1.0
					if c.LearnRho {
						rho = (rhoV[o]*rhoV[o] + 1e-4) * 0.9
					}
					v := c.MagnitudeOf(norms[n*hw+loc], rho) * c.WeightOf(wnorm[o]) * c.AngularOf(cos)
					if al != nil {
						v *= al[o]
					}
					if b != nil {
						v += b[o]
					}
					want[i] = v
					if !absTol(1e-12).within(res.Cos[i], cos) {
						t.Fatalf("%s: cos[%d] = %g, want %g", c.Key(), i, res.Cos[i], cos)
					}
				}
				if _, err := absTol(1e-12*maxAbs(want)).compare(res.Y, want); err != nil {
					t.Errorf("%s: %v", c.Key(), err)
				}
				cases++
			}
		})
	}
	t.Logf("compared %d configurations with the naive implementation", cases)
}

func TestReferenceErrors(t *testing.T) {
	x := make([]float64, 1*2*4*4)
	w := make([]float64, 3*2*3*3)
	xs, ws := [4]int{1, 2, 4, 4}, [4]int{3, 2, 3, 3}
	three := []float64{1, 1, 1}
	ball := withConfig(func(c *Config) { c.Magnitude, c.LearnRho, c.Bias, c.ChannelScale = MagBall, true, true, true })
	tests := []struct {
		name           string
		c              Config
		x              []float64
		xs, ws         [4]int
		b, alpha, rhoV []float64
		rhoScale       float64
		win            Window
		want           string
	}{
		{"invalid configuration", withConfig(func(c *Config) { c.Alpha = 0 }), x, xs, ws, nil, nil, nil, 0, Window{}, "--alpha 0"},
		{"group", DefaultConfig(), x, xs, [4]int{3, 1, 3, 3}, nil, nil, nil, 0, Window{}, "input has 2 channels, filters of shape [3 1 3 3] expect 1"},
		{"short input", DefaultConfig(), x[:5], xs, ws, nil, nil, nil, 0, Window{}, "input has 5 values, shape [1 2 4 4] holds 32"},
		{"zero dimension", DefaultConfig(), x, [4]int{1, 2, 0, 4}, ws, nil, nil, nil, 0, Window{}, "must be positive"},
		{"bias missing", ball, x, xs, ws, nil, three, three, 1, Window{}, "input B is missing"},
		{"bias not wanted", DefaultConfig(), x, xs, ws, three, nil, nil, 0, Window{}, "input B is given: the configuration has none"},
		{"scale of the wrong size", ball, x, xs, ws, three, []float64{1}, three, 1, Window{}, "input Alpha has 1 values, want 3"},
		{"radius scale 0", ball, x, xs, ws, three, three, three, 0, Window{}, "input RhoScale is 0, want a finite number greater than 0"},
		{"kernel mismatch", DefaultConfig(), x, xs, ws, nil, nil, nil, 0, Window{Kernel: []int64{2, 2}}, "kernel_shape [2 2] does not match"},
		{"pads of the wrong length", DefaultConfig(), x, xs, ws, nil, nil, nil, 0, Window{Pads: []int64{1, 1}}, "pads has 2 values, want 4"},
		{"ceil mode", DefaultConfig(), x, xs, ws, nil, nil, nil, 0, Window{CeilMode: true}, "ceil_mode is not a Conv attribute"},
		{"bad auto_pad", DefaultConfig(), x, xs, ws, nil, nil, nil, 0, Window{AutoPad: "SAME"}, `auto_pad "SAME" is not one of`},
		{"window larger than the input", DefaultConfig(), x, xs, ws, nil, nil, nil, 0, Window{Dilations: []int64{3, 1}}, "smaller than the kernel extent"},
		{"zero stride", DefaultConfig(), x, xs, ws, nil, nil, nil, 0, Window{Strides: []int64{0, 1}}, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ww := w
			if tt.ws != ws {
				ww = make([]float64, tt.ws[0]*tt.ws[1]*tt.ws[2]*tt.ws[3])
			}
			_, _, err := Reference(tt.c, tt.x, tt.xs, ww, tt.ws, tt.b, tt.alpha, tt.rhoV, tt.rhoScale, tt.win)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
			if err != nil && !strings.HasPrefix(err.Error(), "reference decoupled convolution: ") {
				t.Errorf("error %q does not say what failed", err)
			}
		})
	}
}
