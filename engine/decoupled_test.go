package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Tolerances of the tests.
const (
	// decoupledFwdTol bounds |y - ref| / (1 + |ref|) in float64: the
	// kernel and the reference differ only in summation order.
	decoupledFwdTol = 1e-12
	// decoupledFwdTol32 bounds |y - ref| / (1 + |ref|) in float32 (inputs
	// rounded to float32, P from sgemm).
	decoupledFwdTol32 = 5e-6
	// decoupledFDStep is the step of the central differences.
	decoupledFDStep = 1e-6
	// decoupledGradTol bounds |analytic - fd| / (1 + max|fd|) per tensor;
	// central differences with step 1e-6 carry about 1e-9 of rounding.
	decoupledGradTol = 1e-7
	// decoupledGradTol32 bounds the same scaled difference between float32
	// and float64 gradients.
	decoupledGradTol32 = 2e-6
)

// decoupledTestGeom is a convolution window with the shapes of X and W.
type decoupledTestGeom struct {
	name string
	x, w [4]int
	win  onnximport.Window
}

// decoupledTestGeoms are the windows every test runs on: asymmetric pads
// with strides and dilations, a 1x1 kernel, and SAME_UPPER (whose pads
// come out asymmetric here: 1,0 begin and 1,1 end).
func decoupledTestGeoms() []decoupledTestGeom {
	return []decoupledTestGeom{
		{"pads 1,0,2,1 strides 2,1 dilations 1,2", [4]int{2, 2, 5, 6}, [4]int{3, 2, 3, 3},
			onnximport.Window{Pads: []int64{1, 0, 2, 1}, Strides: []int64{2, 1}, Dilations: []int64{1, 2}}},
		{"1x1", [4]int{2, 3, 4, 3}, [4]int{4, 3, 1, 1}, onnximport.Window{}},
		{"SAME_UPPER strides 2,2 kernel 3x2", [4]int{2, 2, 5, 5}, [4]int{3, 2, 3, 2},
			onnximport.Window{AutoPad: "SAME_UPPER", Strides: []int64{2, 2}}},
	}
}

// decoupledRhoMode is how a case sets the radius.
type decoupledRhoMode string

// The radius modes.
const (
	rhoNone  decoupledRhoMode = "no rho"
	rhoFixed decoupledRhoMode = "fixed rho"
	rhoLearn decoupledRhoMode = "learnable rho"
)

// decoupledTestConfigs returns every magnitude x angular x weighting, with
// both radius modes where the magnitude has a radius, cycling through the
// four combinations of bias and channel scale.
func decoupledTestConfigs() []dcnet.Config {
	var out []dcnet.Config
	i := 0
	for _, mag := range dcnet.Magnitudes() {
		for _, ang := range dcnet.Angulars() {
			for _, wt := range dcnet.Weightings() {
				c := dcnet.DefaultConfig()
				c.Magnitude, c.Angular, c.Weighted = mag, ang, wt
				c.Alpha, c.Beta, c.K = 1.3, 0.4, 0.35
				modes := []decoupledRhoMode{rhoNone}
				if c.NeedsRho() {
					modes = []decoupledRhoMode{rhoFixed, rhoLearn}
				}
				for _, m := range modes {
					c.LearnRho = m == rhoLearn
					c.Bias, c.ChannelScale = i%2 == 1, i/2%2 == 1
					i++
					out = append(out, c)
				}
			}
		}
	}
	return out
}

// decoupledCaseName names a configuration, mode and geometry.
func decoupledCaseName(c dcnet.Config, train bool, g decoupledTestGeom) string {
	mode := "inference"
	if train {
		mode = "training"
	}
	return fmt.Sprintf("%s/%s/B=%t/%s", c.Summary(), mode, c.Bias, g.name)
}

// decoupledCase is one decoupled convolution with its input values and
// the weights r of the test loss L = sum(r * y).
type decoupledCase struct {
	cfg                  dcnet.Config
	geom                 decoupledTestGeom
	train                bool
	x, w, b, alpha, rhoV []float64
	rhoScale             float64 // at inference with a learnable radius
	r                    []float64
	yShape               [4]int
}

// learn reports whether the case has a learnable radius.
func (c *decoupledCase) learn() bool { return c.cfg.LearnRho && c.cfg.NeedsRho() }

// newDecoupledCase draws the inputs of a case. Radii are put in gaps of
// more than 2e-3 between the patch norms N, spread over the quantiles
// 0.25..0.75, so that ball and seg see both branches.
func newDecoupledCase(t testing.TB, cfg dcnet.Config, g decoupledTestGeom, train bool, seed uint64) *decoupledCase {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 77))
	uniform := func(n int, lo, hi float64) []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = lo + (hi-lo)*rng.Float64()
		}
		return s
	}
	c := &decoupledCase{cfg: cfg, geom: g, train: train}
	c.x = uniform(g.x[0]*g.x[1]*g.x[2]*g.x[3], -0.7, 1.3)
	c.w = uniform(g.w[0]*g.w[1]*g.w[2]*g.w[3], -1, 1)
	cout := g.w[0]
	if cfg.Bias {
		c.b = uniform(cout, -0.5, 0.5)
	}
	if cfg.ChannelScale {
		c.alpha = uniform(cout, 0.5, 1.5)
	}

	plain := dcnet.DefaultConfig()
	plain.Eps = cfg.Eps
	st, err := dcnet.ReferenceStats(plain, c.x, g.x, c.w, g.w, nil, nil, nil, 0, g.win)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	c.yShape = st.Shape
	norms := slices.Clone(st.N)
	slices.Sort(norms)
	norms = slices.Compact(norms)
	mean := decoupledMean(st.N)
	gap := func(q float64) float64 {
		at := int(q * float64(len(norms)-1))
		for d := range len(norms) {
			for _, i := range []int{at + d, at - d} {
				if i >= 0 && i+1 < len(norms) && norms[i+1]-norms[i] > 2e-3 {
					return (norms[i] + norms[i+1]) / 2
				}
			}
		}
		t.Fatalf("no gap of 2e-3 between the patch norms %v", norms)
		return 0
	}
	if cfg.NeedsRho() {
		if cfg.LearnRho {
			m := mean
			if !train {
				c.rhoScale = 1.1 * mean
				m = c.rhoScale
			}
			c.rhoV = make([]float64, cout)
			for co := range cout {
				target := gap(0.25 + 0.5*float64(co)/float64(max(1, cout-1)))
				c.rhoV[co] = math.Sqrt(target/m - dcnet.RhoFloor)
				if co%2 == 1 {
					c.rhoV[co] = -c.rhoV[co] // the sign must not matter
				}
			}
		} else {
			c.cfg.Rho = float32(gap(0.5))
		}
	}
	c.r = uniform(st.Shape[0]*st.Shape[1]*st.Shape[2]*st.Shape[3], -1, 1)
	return c
}

// decoupledMean returns the mean of s.
func decoupledMean(s []float64) float64 {
	var sum float64
	for _, v := range s {
		sum += v
	}
	return sum / float64(len(s))
}

// reference returns the reference output for the given inputs and the
// radius scale it used: in training with a learnable radius, the mean of
// the reference's own N.
func (c *decoupledCase) reference(t testing.TB, x, w, b, alpha, rhoV []float64, rhoScale float64) (*dcnet.ReferenceResult, float64) {
	t.Helper()
	if c.learn() && c.train {
		st, err := dcnet.ReferenceStats(c.cfg, x, c.geom.x, w, c.geom.w, b, alpha, rhoV, 1, c.geom.win)
		if err != nil {
			t.Fatalf("reference: %v", err)
		}
		rhoScale = decoupledMean(st.N)
	}
	st, err := dcnet.ReferenceStats(c.cfg, x, c.geom.x, w, c.geom.w, b, alpha, rhoV, rhoScale, c.geom.win)
	if err != nil {
		t.Fatalf("reference: %v", err)
	}
	return st, rhoScale
}

// loss returns sum(r * y) of the reference output for the given inputs.
func (c *decoupledCase) loss(t testing.TB, x, w, b, alpha, rhoV []float64, rhoScale float64) float64 {
	t.Helper()
	st, _ := c.reference(t, x, w, b, alpha, rhoV, rhoScale)
	var l float64
	for i, v := range st.Y {
		l += c.r[i] * v
	}
	return l
}

// kinkFree reports whether every |cos| < 1-1e-3 and every N is more
// than 1e-4 from its channel's radius, so that central differences with
// step 1e-6 see a smooth function; otherwise it says why not.
func (c *decoupledCase) kinkFree(t testing.TB) (bool, string) {
	t.Helper()
	st, _ := c.reference(t, c.x, c.w, c.b, c.alpha, c.rhoV, c.rhoScale)
	for i, v := range st.Cos {
		if math.Abs(v) >= 1-1e-3 {
			return false, fmt.Sprintf("|cos[%d]| = %g is within 1e-3 of the clamp", i, math.Abs(v))
		}
	}
	if st.Rho == nil {
		return true, ""
	}
	hw := st.Shape[2] * st.Shape[3]
	for n := range st.Shape[0] {
		for co := range st.Shape[1] {
			for i := range hw {
				if d := math.Abs(st.N[n*hw+i] - st.Rho[co]); d <= 1e-4 {
					return false, fmt.Sprintf("N = %g is within %g of rho_%d = %g", st.N[n*hw+i], d, co, st.Rho[co])
				}
			}
		}
	}
	return true, ""
}

// checkKinks fails the test unless the case is kink-free.
func (c *decoupledCase) checkKinks(t testing.TB) {
	t.Helper()
	if ok, why := c.kinkFree(t); !ok {
		t.Fatal(why)
	}
}

// newSmoothCase is newDecoupledCase with the first of up to 20 seeds
// from seed on whose case is kink-free.
func newSmoothCase(t testing.TB, cfg dcnet.Config, g decoupledTestGeom, train bool, seed uint64) *decoupledCase {
	t.Helper()
	var why string
	for try := range uint64(20) {
		c := newDecoupledCase(t, cfg, g, train, seed+1000*try)
		var ok bool
		if ok, why = c.kinkFree(t); ok {
			return c
		}
	}
	t.Fatalf("%s: no kink-free inputs in 20 seeds: %s", decoupledCaseName(cfg, train, g), why)
	return nil
}

// finiteDiff returns the central difference of the loss by every value
// of the named input, with step h.
func (c *decoupledCase) finiteDiff(t testing.TB, name string, h float64) []float64 {
	t.Helper()
	lossAt := func() float64 { return c.loss(t, c.x, c.w, c.b, c.alpha, c.rhoV, c.rhoScale) }
	if name == dcnet.InputRhoScale {
		v := c.rhoScale
		c.rhoScale = v + h
		lp := lossAt()
		c.rhoScale = v - h
		lm := lossAt()
		c.rhoScale = v
		return []float64{(lp - lm) / (2 * h)}
	}
	vals := map[string][]float64{dcnet.InputX: c.x, dcnet.InputW: c.w, dcnet.InputB: c.b,
		dcnet.InputAlpha: c.alpha, dcnet.InputRhoV: c.rhoV}[name]
	fd := make([]float64, len(vals))
	for i := range vals {
		v := vals[i]
		vals[i] = v + h
		lp := lossAt()
		vals[i] = v - h
		lm := lossAt()
		vals[i] = v
		fd[i] = (lp - lm) / (2 * h)
	}
	return fd
}

// gradNames lists the inputs of the case that have a gradient.
func (c *decoupledCase) gradNames() []string {
	names := []string{dcnet.InputX, dcnet.InputW}
	if c.b != nil {
		names = append(names, dcnet.InputB)
	}
	if c.alpha != nil {
		names = append(names, dcnet.InputAlpha)
	}
	if c.rhoV != nil {
		names = append(names, dcnet.InputRhoV)
		if !c.train {
			names = append(names, dcnet.InputRhoScale)
		}
	}
	return names
}

// kernelRun runs the float64 kernel's forward and, with dy = r, backward.
func (c *decoupledCase) kernelRun(t testing.TB) (y []float64, grads map[string][]float64, scale float64) {
	t.Helper()
	geom, err := decoupledGeometry(c.geom.win, c.geom.x[:], c.geom.w[:])
	if err != nil {
		t.Fatalf("geometry: %v", err)
	}
	cout := c.geom.w[0]
	k := newDecoupledKernel[float64](geom, cout, newDecoupledMath(c.cfg, c.train))
	y = make([]float64, len(c.r))
	scale = k.forward(c.x, c.w, c.b, c.alpha, c.rhoV, c.rhoScale, y)
	g := decoupledGradients[float64]{dx: make([]float64, len(c.x)), dw: make([]float64, len(c.w))}
	if c.b != nil {
		g.db = make([]float64, cout)
	}
	if c.alpha != nil {
		g.dalpha = make([]float64, cout)
	}
	if c.rhoV != nil {
		g.drhoV = make([]float64, cout)
	}
	k.backward(c.x, c.w, c.alpha, c.rhoV, c.rhoScale, c.r, &g)
	grads = map[string][]float64{dcnet.InputX: g.dx, dcnet.InputW: g.dw, dcnet.InputB: g.db,
		dcnet.InputAlpha: g.dalpha, dcnet.InputRhoV: g.drhoV}
	if c.rhoV != nil && !c.train {
		grads[dcnet.InputRhoScale] = []float64{g.drhoScale}
	}
	return y, grads, scale
}

// decoupledWorst tracks the worst error of a family of comparisons.
type decoupledWorst struct {
	err  float64
	what string
}

// note records err for what when it is the worst so far.
func (w *decoupledWorst) note(err float64, what string) {
	if err > w.err || w.what == "" {
		w.err, w.what = err, what
	}
}

// compareGrad checks an analytic gradient against finite differences
// (or another reference) with tolerance |an - fd| / (1 + max|fd|) <= tol
// over the tensor, and returns the worst scaled error.
func compareGrad(t testing.TB, what string, an, fd []float64, tol float64) float64 {
	t.Helper()
	if len(an) != len(fd) {
		t.Fatalf("%s: %d analytic values, %d finite differences", what, len(an), len(fd))
	}
	var scale float64
	for _, v := range fd {
		scale = max(scale, math.Abs(v))
	}
	var worst float64
	for i := range an {
		e := math.Abs(an[i]-fd[i]) / (1 + scale)
		worst = max(worst, e)
		if e > tol || math.IsNaN(an[i]) {
			t.Errorf("%s[%d]: analytic %.12g, finite difference %.12g (scaled error %.3g > %.0e)", what, i, an[i], fd[i], e, tol)
		}
	}
	return worst
}

// TestDecoupledKernelForward compares the float64 kernel with
// dcnet.Reference for every configuration, geometry and mode, including
// the batch mean of N in training with a learnable radius, and checks
// that ball and seg put 10-90 % of the outputs on each side of rho.
func TestDecoupledKernelForward(t *testing.T) {
	var worst decoupledWorst
	var below, above, cases int
	for _, g := range decoupledTestGeoms() {
		for ci, cfg := range decoupledTestConfigs() {
			for _, train := range []bool{false, true} {
				c := newDecoupledCase(t, cfg, g, train, uint64(ci))
				name := decoupledCaseName(c.cfg, train, g)
				ref, refScale := c.reference(t, c.x, c.w, c.b, c.alpha, c.rhoV, c.rhoScale)
				y, _, scale := c.kernelRun(t)
				for i := range y {
					e := math.Abs(y[i]-ref.Y[i]) / (1 + math.Abs(ref.Y[i]))
					worst.note(e, name)
					if e > decoupledFwdTol {
						t.Fatalf("%s: y[%d] = %.15g, reference %.15g (error %.3g > %.0e)", name, i, y[i], ref.Y[i], e, decoupledFwdTol)
					}
				}
				if c.learn() && train {
					if e := math.Abs(scale-refScale) / refScale; e > 1e-14 { // summation order
						t.Errorf("%s: batch mean of N %.17g, reference %.17g", name, scale, refScale)
					}
				}
				if cfg.Magnitude == dcnet.MagBall || cfg.Magnitude == dcnet.MagSeg {
					b, a := ref.RhoSplit()
					below, above = below+b, above+a
					if f := float64(b) / float64(a+b); f < 0.1 || f > 0.9 {
						t.Errorf("%s: %d of %d outputs have N <= rho, want 10-90 %%", name, b, a+b)
					}
				}
				cases++
			}
		}
	}
	t.Logf("%d cases; worst |y-ref|/(1+|ref|) = %.3g (%s); ball/seg outputs with N <= rho: %d, above: %d",
		cases, worst.err, worst.what, below, above)
}

// TestDecoupledKernelGradients checks every gradient of the float64
// kernel (X, W, B, Alpha, RhoV, and RhoScale at inference; through the
// batch mean of N in training) against central differences of
// dcnet.Reference, for every configuration on every geometry. The points
// are kink-free (newSmoothCase): |cos| < 1-1e-3 and |N - rho| > 1e-4.
func TestDecoupledKernelGradients(t *testing.T) {
	geoms := decoupledTestGeoms()
	if testing.Short() {
		geoms = geoms[:1]
	}
	worst := map[string]*decoupledWorst{}
	cases := 0
	for _, g := range geoms {
		for ci, cfg := range decoupledTestConfigs() {
			for _, train := range []bool{false, true} {
				c := newSmoothCase(t, cfg, g, train, uint64(100+ci))
				name := decoupledCaseName(c.cfg, train, g)
				_, grads, _ := c.kernelRun(t)
				for _, in := range c.gradNames() {
					fd := c.finiteDiff(t, in, decoupledFDStep)
					e := compareGrad(t, name+": d"+in, grads[in], fd, decoupledGradTol)
					if worst[in] == nil {
						worst[in] = &decoupledWorst{}
					}
					worst[in].note(e, name)
				}
				cases++
			}
		}
	}
	for _, in := range []string{dcnet.InputX, dcnet.InputW, dcnet.InputB, dcnet.InputAlpha, dcnet.InputRhoV, dcnet.InputRhoScale} {
		if w := worst[in]; w != nil {
			t.Logf("d%s: worst scaled error %.3g (%s)", in, w.err, w.what)
		}
	}
	t.Logf("%d cases", cases)
}

// TestDecoupledKernelRecompute checks that a backward whose inputs are
// not those of the last forward recomputes the intermediate values, and
// that a second backward after one forward gives the same gradients.
func TestDecoupledKernelRecompute(t *testing.T) {
	cfg := dcnet.DefaultConfig()
	cfg.Magnitude, cfg.Angular, cfg.LearnRho = dcnet.MagTanh, dcnet.AngSigmoid, true
	g := decoupledTestGeoms()[0]
	c := newDecoupledCase(t, cfg, g, true, 5)
	_, want, _ := c.kernelRun(t)

	geom, err := decoupledGeometry(g.win, g.x[:], g.w[:])
	if err != nil {
		t.Fatal(err)
	}
	k := newDecoupledKernel[float64](geom, g.w[0], newDecoupledMath(c.cfg, true))
	other := slices.Clone(c.x)
	for i := range other {
		other[i] = -other[i]
	}
	k.forward(other, c.w, c.b, c.alpha, c.rhoV, 0, make([]float64, len(c.r)))
	for run := range 2 {
		got := decoupledGradients[float64]{dx: make([]float64, len(c.x)), dw: make([]float64, len(c.w)), drhoV: make([]float64, len(c.rhoV))}
		k.backward(c.x, c.w, c.alpha, c.rhoV, 0, c.r, &got)
		for name, pair := range map[string][2][]float64{"X": {got.dx, want[dcnet.InputX]}, "W": {got.dw, want[dcnet.InputW]}, "RhoV": {got.drhoV, want[dcnet.InputRhoV]}} {
			for i := range pair[0] {
				if math.Abs(pair[0][i]-pair[1][i]) > 1e-13*(1+math.Abs(pair[1][i])) { // the same arithmetic up to cached g
					t.Fatalf("run %d: d%s[%d] = %g, want %g", run, name, i, pair[0][i], pair[1][i])
				}
			}
		}
	}
}

// TestDecoupledMathDerivatives checks the derivatives of h, g and m
// against central differences at smooth points and their values against
// dcnet's, the acos rule at the ends of [-1, 1], and that angularDiffAt
// (from the forward's g) agrees with angularDiff.
func TestDecoupledMathDerivatives(t *testing.T) {
	const h, tol = 1e-6, 1e-8 // central differences: error ~1e-10 here
	for _, mag := range dcnet.Magnitudes() {
		cfg := dcnet.DefaultConfig()
		cfg.Magnitude, cfg.Alpha, cfg.Beta, cfg.Rho = mag, 1.3, 0.4, 1.5
		m := newDecoupledMath(cfg, false)
		for _, p := range [][2]float64{{0.3, 1.5}, {1.2, 1.5}, {2.5, 1.5}, {4, 0.7}} {
			n, rho := p[0], p[1]
			v, dn, drho := m.magnitudeDiff(n, rho)
			if v != m.magnitude(n, rho) { // the same expression
				t.Errorf("%s: magnitudeDiff value %g, magnitude %g", mag, v, m.magnitude(n, rho))
			}
			fdn := (m.magnitude(n+h, rho) - m.magnitude(n-h, rho)) / (2 * h)
			fdr := (m.magnitude(n, rho+h) - m.magnitude(n, rho-h)) / (2 * h)
			if math.Abs(dn-fdn) > tol || math.Abs(drho-fdr) > tol {
				t.Errorf("%s at N=%g rho=%g: dh/dN %g (fd %g), dh/drho %g (fd %g)", mag, n, rho, dn, fdn, drho, fdr)
			}
			if want := cfg.MagnitudeOf(n, rho); math.Abs(v-want) > 1e-15*(1+math.Abs(want)) { // log1p vs log(1+n)
				t.Errorf("%s at N=%g rho=%g: h = %.17g, dcnet %.17g", mag, n, rho, v, want)
			}
		}
	}
	for _, ang := range dcnet.Angulars() {
		cfg := dcnet.DefaultConfig()
		cfg.Angular, cfg.K = ang, 0.35
		m := newDecoupledMath(cfg, false)
		for _, cos := range []float64{-0.95, -0.4, 0.05, 0.6, 0.97} {
			g, d := m.angularDiff(cos)
			fd := (m.angular(cos+h) - m.angular(cos-h)) / (2 * h)
			if math.Abs(d-fd) > tol*(1+math.Abs(fd)) {
				t.Errorf("%s at cos=%g: dg/dcos %g, fd %g", ang, cos, d, fd)
			}
			if want := cfg.AngularOf(cos); math.Abs(g-want) > 1e-15 { // the same formula
				t.Errorf("%s at cos=%g: g = %.17g, dcnet %.17g", ang, cos, g, want)
			}
			if at := m.angularDiffAt(cos, g); math.Abs(at-d) > 1e-12*(1+math.Abs(d)) { // the same formula from g
				t.Errorf("%s at cos=%g: angularDiffAt %g, angularDiff %g", ang, cos, at, d)
			}
		}
		// The acos rule: at |cos| = 1, dg/dcos = dg/dtheta(acos(cos)) *
		// dacos/dcos taken at |cos| = 1-1e-6, which is finite.
		for _, end := range []float64{-1, 1} {
			_, d := m.angularDiff(end)
			cc := end * (1 - decoupledAcosMargin)
			var want float64
			switch ang {
			case dcnet.AngCos:
				want = 1
			case dcnet.AngSqcos:
				want = 2
			case dcnet.AngLinear:
				want = 2 / math.Pi / math.Sqrt(1-cc*cc)
			case dcnet.AngSigmoid:
				k := float64(cfg.K)
				th := math.Tanh((math.Pi/2 - math.Acos(end)) / (2 * k))
				want = (1 - th*th) / (2 * k) / math.Tanh(math.Pi/(4*k)) / math.Sqrt(1-cc*cc)
			}
			if math.IsInf(d, 0) || math.IsNaN(d) || math.Abs(d-want) > 1e-12*want { // the same formula
				t.Errorf("%s at cos=%g: dg/dcos %.17g, want %.17g", ang, end, d, want)
			}
		}
	}
	for _, wt := range dcnet.Weightings() {
		cfg := dcnet.DefaultConfig()
		cfg.Weighted = wt
		m := newDecoupledMath(cfg, false)
		for _, wn := range []float64{0.2, 1, 3.5} {
			v, d := m.weight(wn)
			vp, _ := m.weight(wn + h)
			vm, _ := m.weight(wn - h)
			if fd := (vp - vm) / (2 * h); math.Abs(d-fd) > tol {
				t.Errorf("%s at |w|=%g: dm %g, fd %g", wt, wn, d, fd)
			}
			if want := cfg.WeightOf(wn); math.Abs(v-want) > 1e-15*(1+want) { // log1p vs log(1+w)
				t.Errorf("%s at |w|=%g: m = %g, dcnet %g", wt, wn, v, want)
			}
		}
	}
}

// TestDecoupledMathRows checks that the row forms give the scalar forms'
// values: exactly, except fast angularRow, which must be within 2e-8
// (float32 accuracy) of them.
func TestDecoupledMathRows(t *testing.T) {
	ns := []float64{0, 0.3, 1.2, 1.5, 2.5, 4}
	for _, mag := range dcnet.Magnitudes() {
		cfg := dcnet.DefaultConfig()
		cfg.Magnitude, cfg.Alpha, cfg.Beta, cfg.Rho = mag, 1.3, 0.4, 1.5
		m := newDecoupledMath(cfg, false)
		h, hd, dn, drho := make([]float64, len(ns)), make([]float64, len(ns)), make([]float64, len(ns)), make([]float64, len(ns))
		m.magnitudeRow(ns, 1.5, h)
		m.magnitudeDiffRow(ns, 1.5, hd, dn, drho)
		for i, n := range ns {
			v, d, dr := m.magnitudeDiff(n, 1.5)
			if h[i] != m.magnitude(n, 1.5) || hd[i] != v || dn[i] != d || drho[i] != dr {
				t.Errorf("%s at N=%g: rows %g, %g, %g, %g; scalar %g, %g, %g", mag, n, h[i], hd[i], dn[i], drho[i], v, d, dr)
			}
		}
	}
	var cos []float64
	for i := 0; i <= 2000; i++ {
		cos = append(cos, -1+float64(i)/1000)
	}
	for _, ang := range dcnet.Angulars() {
		for _, k := range []float32{0.1, 0.3, 1, 4} {
			cfg := dcnet.DefaultConfig()
			cfg.Angular, cfg.K = ang, k
			m := newDecoupledMath(cfg, false)
			g, fast := make([]float64, len(cos)), make([]float64, len(cos))
			gc, dc, d := make([]float64, len(cos)), make([]float64, len(cos)), make([]float64, len(cos))
			m.angularRow(cos, g, false)
			m.angularRow(cos, fast, true)
			m.angularDiffRow(cos, gc, dc, false)
			copy(gc, g)
			m.angularDiffRow(cos, gc, d, true)
			for i, c := range cos {
				want, wd := m.angularDiff(c)
				if g[i] != m.angular(c) || math.Abs(fast[i]-want) > 2e-8 {
					t.Fatalf("%s k=%g at cos=%g: g %g, fast %g, scalar %g", ang, k, c, g[i], fast[i], want)
				}
				if dc[i] != wd || (m.angularCached() && d[i] != m.angularDiffAt(c, g[i])) {
					t.Fatalf("%s k=%g at cos=%g: dg/dcos %g and %g from g, scalar %g and %g", ang, k, c, dc[i], d[i], wd, m.angularDiffAt(c, g[i]))
				}
			}
		}
	}
}
