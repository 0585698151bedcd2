package engine

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
)

// decoupledGraph is a decoupled convolution in a Gorgonia graph, with
// the loss sum(r * y) and its gradients when asked for.
type decoupledGraph struct {
	nodes map[string]*G.Node
	wrt   []*G.Node
	y     *G.Node
	stat  *rhoStat
	vm    G.VM
}

// decoupledTensor returns data as a dense tensor of element type dt.
func decoupledTensor(dt tensor.Dtype, shape []int, data []float64) *tensor.Dense {
	if dt == tensor.Float32 {
		d := make([]float32, len(data))
		for i, v := range data {
			d[i] = float32(v)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(d))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(slices.Clone(data)))
}

// decoupledFloats returns the values of a tensor or scalar as float64.
func decoupledFloats(t testing.TB, v G.Value) []float64 {
	t.Helper()
	switch s := v.(type) {
	case *G.F32:
		return []float64{float64(*s)}
	case *G.F64:
		return []float64{float64(*s)}
	}
	switch d := v.Data().(type) {
	case []float32:
		out := make([]float64, len(d))
		for i, x := range d {
			out[i] = float64(x)
		}
		return out
	case []float64:
		return slices.Clone(d)
	}
	t.Fatalf("value %v of type %T", v, v)
	return nil
}

// decoupledZero sets a gradient value to zero.
func decoupledZero(v G.Value) {
	switch s := v.(type) {
	case *G.F32:
		*s = 0
	case *G.F64:
		*s = 0
	case tensor.Tensor:
		s.Zero()
	}
}

// buildDecoupledGraph builds the case as a graph of element type dt: input
// nodes, decoupledConv and, with grad, the loss sum(r * y), G.Grad by
// every input and a TapeMachine binding their dual values.
func buildDecoupledGraph(t testing.TB, c *decoupledCase, dt tensor.Dtype, grad bool) *decoupledGraph {
	t.Helper()
	g := G.NewGraph()
	dg := &decoupledGraph{nodes: map[string]*G.Node{}}
	vec := func(name string, v []float64) *G.Node {
		if v == nil {
			return nil
		}
		n := G.NewTensor(g, dt, 1, G.WithShape(len(v)), G.WithName(name), G.WithValue(decoupledTensor(dt, []int{len(v)}, v)))
		dg.nodes[name] = n
		return n
	}
	in := decoupledInputs{
		X: G.NewTensor(g, dt, 4, G.WithShape(c.geom.x[:]...), G.WithName(dcnet.InputX),
			G.WithValue(decoupledTensor(dt, c.geom.x[:], c.x))),
		W: G.NewTensor(g, dt, 4, G.WithShape(c.geom.w[:]...), G.WithName(dcnet.InputW),
			G.WithValue(decoupledTensor(dt, c.geom.w[:], c.w))),
		B:     vec(dcnet.InputB, c.b),
		Alpha: vec(dcnet.InputAlpha, c.alpha),
		RhoV:  vec(dcnet.InputRhoV, c.rhoV),
	}
	dg.nodes[dcnet.InputX], dg.nodes[dcnet.InputW] = in.X, in.W
	if c.rhoV != nil && !c.train {
		var v G.Value = G.NewF64(c.rhoScale)
		if dt == tensor.Float32 {
			v = G.NewF32(float32(c.rhoScale))
		}
		in.RhoScale = G.NewScalar(g, dt, G.WithName(dcnet.InputRhoScale), G.WithValue(v))
		dg.nodes[dcnet.InputRhoScale] = in.RhoScale
	}
	y, stat, err := decoupledConv(in, c.cfg, c.geom.win, c.train)
	if err != nil {
		t.Fatalf("decoupledConv: %v", err)
	}
	dg.y, dg.stat = y, stat
	if !grad {
		dg.vm = G.NewTapeMachine(g)
		return dg
	}
	r := G.NewTensor(g, dt, 4, G.WithShape(c.yShape[:]...), G.WithName("r"), G.WithValue(decoupledTensor(dt, c.yShape[:], c.r)))
	prod, err := G.HadamardProd(y, r)
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range c.gradNames() {
		dg.wrt = append(dg.wrt, dg.nodes[name])
	}
	if _, err := G.Grad(cost, dg.wrt...); err != nil {
		t.Fatalf("Grad: %v", err)
	}
	dg.vm = G.NewTapeMachine(g, G.BindDualValues(dg.wrt...))
	return dg
}

// TestDecoupledConvForward runs every configuration through a Gorgonia
// graph in float64 on every geometry, at inference and in training,
// against dcnet.Reference (in training with the radius scale set to the
// batch mean of the reference's N, which the reported rhoStat must equal),
// and in float32 on the first geometry.
func TestDecoupledConvForward(t *testing.T) {
	var worst, worst32 decoupledWorst
	var cases, stats int
	for gi, g := range decoupledTestGeoms() {
		for ci, cfg := range decoupledTestConfigs() {
			for _, train := range []bool{false, true} {
				c := newDecoupledCase(t, cfg, g, train, uint64(200+ci))
				name := decoupledCaseName(c.cfg, train, g)
				ref, refScale := c.reference(t, c.x, c.w, c.b, c.alpha, c.rhoV, c.rhoScale)
				dts := []tensor.Dtype{tensor.Float64}
				if gi == 0 {
					dts = append(dts, tensor.Float32)
				}
				for _, dt := range dts {
					dg := buildDecoupledGraph(t, c, dt, false)
					if err := dg.vm.RunAll(); err != nil {
						t.Fatalf("%s %v: %v", name, dt, err)
					}
					y := decoupledFloats(t, dg.y.Value())
					tol, w := decoupledFwdTol, &worst
					if dt == tensor.Float32 {
						tol, w = decoupledFwdTol32, &worst32
					}
					for i := range y {
						e := math.Abs(y[i]-ref.Y[i]) / (1 + math.Abs(ref.Y[i]))
						w.note(e, name)
						if e > tol {
							t.Fatalf("%s %v: y[%d] = %.9g, reference %.9g (error %.3g > %.0e)", name, dt, i, y[i], ref.Y[i], e, tol)
						}
					}
					switch {
					case c.learn() && train:
						if dg.stat == nil || !dg.stat.Valid {
							t.Fatalf("%s %v: no radius statistic after a training forward", name, dt)
						}
						tol := 1e-14 // float64: summation order
						if dt == tensor.Float32 {
							tol = 1e-6 // inputs rounded to float32
						}
						if e := math.Abs(dg.stat.Batch-refScale) / refScale; e > tol {
							t.Errorf("%s %v: rhoStat.Batch = %.17g, mean of reference N %.17g", name, dt, dg.stat.Batch, refScale)
						}
						stats++
					case c.learn():
						if dg.stat == nil || dg.stat.Valid {
							t.Errorf("%s %v: statistic %+v at inference, want an unset one", name, dt, dg.stat)
						}
					default:
						if dg.stat != nil {
							t.Errorf("%s %v: statistic %+v without a learnable radius", name, dt, dg.stat)
						}
					}
					dg.vm.Close()
					cases++
				}
			}
		}
	}
	t.Logf("%d graph runs, %d radius statistics checked; worst |y-ref|/(1+|ref|): float64 %.3g (%s), float32 %.3g (%s)",
		cases, stats, worst.err, worst.what, worst32.err, worst32.what)
}

// TestDecoupledConvGraphGradients builds graphs with G.Grad and a
// TapeMachine binding dual values, and compares the gradients of every
// input with central differences of dcnet.Reference (kink-free points,
// see newSmoothCase). Each machine runs twice (the second run must agree
// exactly; gradients are zeroed in between, as a solver does), then again
// after X is changed with G.Let.
func TestDecoupledConvGraphGradients(t *testing.T) {
	type graphCase struct {
		mag   dcnet.Magnitude
		ang   dcnet.Angular
		wt    dcnet.Weighting
		learn bool
		bias  bool
		scale bool
	}
	cases := []graphCase{
		{dcnet.MagBall, dcnet.AngSigmoid, dcnet.WeightLog, true, true, true},
		{dcnet.MagTanh, dcnet.AngLinear, dcnet.WeightLinear, true, false, true},
		{dcnet.MagSeg, dcnet.AngSqcos, dcnet.WeightNone, true, true, false},
		{dcnet.MagSeg, dcnet.AngCos, dcnet.WeightLog, false, true, true},
		{dcnet.MagLinear, dcnet.AngCos, dcnet.WeightNone, false, false, false},
		{dcnet.MagSphere, dcnet.AngLinear, dcnet.WeightLinear, false, true, false},
		{dcnet.MagLog, dcnet.AngSigmoid, dcnet.WeightNone, false, false, true},
		{dcnet.MagMix, dcnet.AngSqcos, dcnet.WeightLog, false, true, true},
	}
	worst := decoupledWorst{}
	runs := 0
	for i, gc := range cases {
		for gi, g := range decoupledTestGeoms() {
			for _, train := range []bool{false, true} {
				cfg := dcnet.DefaultConfig()
				cfg.Magnitude, cfg.Angular, cfg.Weighted = gc.mag, gc.ang, gc.wt
				cfg.LearnRho, cfg.Bias, cfg.ChannelScale = gc.learn, gc.bias, gc.scale
				c := newSmoothCase(t, cfg, g, train, uint64(300+10*i+gi))
				name := decoupledCaseName(c.cfg, train, g)
				dg := buildDecoupledGraph(t, c, tensor.Float64, true)
				var first map[string][]float64
				for run := range 3 {
					dg.vm.Reset()
					if run == 2 {
						// A new X: the gradients must follow it.
						for j := range c.x {
							c.x[j] = 0.9*c.x[j] + 0.05
						}
						if err := G.Let(dg.nodes[dcnet.InputX], decoupledTensor(tensor.Float64, g.x[:], c.x)); err != nil {
							t.Fatal(err)
						}
						c.checkKinks(t)
					}
					if err := dg.vm.RunAll(); err != nil {
						t.Fatalf("%s: run %d: %v", name, run, err)
					}
					got := map[string][]float64{}
					for _, in := range c.gradNames() {
						gv, err := dg.nodes[in].Grad()
						if err != nil {
							t.Fatalf("%s: gradient of %s: %v", name, in, err)
						}
						got[in] = decoupledFloats(t, gv)
						decoupledZero(gv)
					}
					runs++
					switch run {
					case 0:
						first = got
						for _, in := range c.gradNames() {
							fd := c.finiteDiff(t, in, decoupledFDStep)
							worst.note(compareGrad(t, name+": d"+in, got[in], fd, decoupledGradTol), name+" d"+in)
						}
					case 1:
						for in, v := range got {
							if !slices.Equal(v, first[in]) { // the same computation: exact
								t.Errorf("%s: second run changed d%s", name, in)
							}
						}
					case 2:
						for _, in := range c.gradNames() {
							fd := c.finiteDiff(t, in, decoupledFDStep)
							worst.note(compareGrad(t, name+" after Let: d"+in, got[in], fd, decoupledGradTol), name+" after Let d"+in)
						}
					}
				}
				dg.vm.Close()
			}
		}
	}
	t.Logf("%d machine runs; worst scaled gradient error %.3g (%s)", runs, worst.err, worst.what)
}

// TestDecoupledConvGraphFloat32 checks that float32 gradients through a
// graph agree with the float64 ones.
func TestDecoupledConvGraphFloat32(t *testing.T) {
	cfg := dcnet.DefaultConfig()
	cfg.Magnitude, cfg.Angular, cfg.Weighted = dcnet.MagBall, dcnet.AngSigmoid, dcnet.WeightLinear
	cfg.LearnRho, cfg.Bias, cfg.ChannelScale = true, true, true
	for _, train := range []bool{false, true} {
		c := newSmoothCase(t, cfg, decoupledTestGeoms()[0], train, 9)
		grads := map[tensor.Dtype]map[string][]float64{}
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			dg := buildDecoupledGraph(t, c, dt, true)
			if err := dg.vm.RunAll(); err != nil {
				t.Fatalf("%v: %v", dt, err)
			}
			grads[dt] = map[string][]float64{}
			for _, in := range c.gradNames() {
				gv, err := dg.nodes[in].Grad()
				if err != nil {
					t.Fatal(err)
				}
				grads[dt][in] = decoupledFloats(t, gv)
			}
			dg.vm.Close()
		}
		for _, in := range c.gradNames() {
			e := compareGrad(t, fmt.Sprintf("train=%t float32 d%s", train, in), grads[tensor.Float32][in], grads[tensor.Float64][in], decoupledGradTol32)
			t.Logf("train=%t d%s: float32 vs float64 scaled error %.3g", train, in, e)
		}
	}
}

// TestDecoupledConvErrors checks that bad inputs are errors, not panics.
func TestDecoupledConvErrors(t *testing.T) {
	g := G.NewGraph()
	x := G.NewTensor(g, G.Float64, 4, G.WithShape(2, 3, 5, 5), G.WithName("x"))
	w := G.NewTensor(g, G.Float64, 4, G.WithShape(4, 3, 3, 3), G.WithName("w"))
	w2 := G.NewTensor(g, G.Float64, 4, G.WithShape(4, 2, 3, 3), G.WithName("w2"))
	w32 := G.NewTensor(g, G.Float32, 4, G.WithShape(4, 3, 3, 3), G.WithName("w32"))
	x3 := G.NewTensor(g, G.Float64, 3, G.WithShape(3, 5, 5), G.WithName("x3"))
	v4 := G.NewTensor(g, G.Float64, 1, G.WithShape(4), G.WithName("v4"))
	v3 := G.NewTensor(g, G.Float64, 1, G.WithShape(3), G.WithName("v3"))
	s := G.NewScalar(g, G.Float64, G.WithName("s"))
	ball := dcnet.DefaultConfig()
	ball.Magnitude, ball.LearnRho = dcnet.MagBall, true
	bias := dcnet.DefaultConfig()
	bias.Bias = true
	bad := dcnet.DefaultConfig()
	bad.Alpha = 0
	def := dcnet.DefaultConfig()
	tests := []struct {
		name  string
		in    decoupledInputs
		cfg   dcnet.Config
		win   onnximport.Window
		train bool
		want  string
	}{
		{"no X", decoupledInputs{W: w}, def, onnximport.Window{}, false, "inputs X and W are required"},
		{"X not 4-D", decoupledInputs{X: x3, W: w}, def, onnximport.Window{}, false, "want [batch, channels, height, width]"},
		{"channels", decoupledInputs{X: x, W: w2}, def, onnximport.Window{}, false, "group 1"},
		{"element types", decoupledInputs{X: x, W: w32}, def, onnximport.Window{}, false, "element type"},
		{"missing B", decoupledInputs{X: x, W: w}, bias, onnximport.Window{}, false, "input B is missing"},
		{"extra Alpha", decoupledInputs{X: x, W: w, Alpha: v4}, def, onnximport.Window{}, false, "input Alpha is given"},
		{"B shape", decoupledInputs{X: x, W: w, B: v3}, bias, onnximport.Window{}, false, "want [4]"},
		{"missing RhoScale", decoupledInputs{X: x, W: w, RhoV: v4}, ball, onnximport.Window{}, false, "input RhoScale is missing"},
		{"RhoScale shape", decoupledInputs{X: x, W: w, RhoV: v4, RhoScale: v4}, ball, onnximport.Window{}, false, "want a scalar"},
		{"missing RhoV", decoupledInputs{X: x, W: w, RhoScale: s}, ball, onnximport.Window{}, true, "input RhoV is missing"},
		{"config", decoupledInputs{X: x, W: w}, bad, onnximport.Window{}, false, "--alpha"},
		{"kernel", decoupledInputs{X: x, W: w}, def, onnximport.Window{Kernel: []int64{2, 2}}, false, "kernel_shape"},
		{"ceil", decoupledInputs{X: x, W: w}, def, onnximport.Window{CeilMode: true}, false, "ceil_mode"},
		{"auto_pad", decoupledInputs{X: x, W: w}, def, onnximport.Window{AutoPad: "SAME"}, false, "auto_pad"},
		{"pads", decoupledInputs{X: x, W: w}, def, onnximport.Window{Pads: []int64{1, 1}}, false, "pads has 2 values"},
		{"too small", decoupledInputs{X: x, W: w}, def, onnximport.Window{Dilations: []int64{3, 3}}, false, "kernel extent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y, stat, err := decoupledConv(tt.in, tt.cfg, tt.win, tt.train)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if y != nil || stat != nil {
				t.Errorf("got node %v and statistic %v with the error", y, stat)
			}
		})
	}
}

// TestDecoupledConvBadValues checks that values of the wrong shape or
// type at run time are errors of the operation, not panics.
func TestDecoupledConvBadValues(t *testing.T) {
	g := G.NewGraph()
	x := G.NewTensor(g, G.Float64, 4, G.WithShape(1, 2, 4, 4), G.WithName("x"))
	w := G.NewTensor(g, G.Float64, 4, G.WithShape(3, 2, 3, 3), G.WithName("w"))
	y, _, err := decoupledConv(decoupledInputs{X: x, W: w}, dcnet.DefaultConfig(), onnximport.Window{}, false)
	if err != nil {
		t.Fatal(err)
	}
	op := y.Op()
	xv := tensor.New(tensor.WithShape(1, 2, 4, 4), tensor.WithBacking(make([]float64, 32)))
	wrong := tensor.New(tensor.WithShape(3, 2, 2, 2), tensor.WithBacking(make([]float64, 24)))
	if _, err := op.Do(xv, wrong); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("Do with filters of the wrong shape: error %v", err)
	}
	w32 := tensor.New(tensor.WithShape(3, 2, 3, 3), tensor.WithBacking(make([]float32, 54)))
	if _, err := op.Do(xv, w32); err == nil {
		t.Error("Do with float32 filters in a float64 graph: no error")
	}
	if _, err := op.Do(xv); err == nil {
		t.Error("Do with one input: no error")
	}
}

// TestDecoupledOpPrealloc checks the operation's UsePreallocDo: into the
// buffer of an earlier Do it writes the same values, and a buffer of the
// wrong shape is an error.
func TestDecoupledOpPrealloc(t *testing.T) {
	cfg := dcnet.DefaultConfig()
	cfg.Angular = dcnet.AngSigmoid
	c := newDecoupledCase(t, cfg, decoupledTestGeoms()[0], false, 11)
	dg := buildDecoupledGraph(t, c, tensor.Float64, false)
	op := dg.y.Op().(*decoupledOp)
	in := []G.Value{decoupledTensor(tensor.Float64, c.geom.x[:], c.x), decoupledTensor(tensor.Float64, c.geom.w[:], c.w)}
	first, err := op.Do(in...)
	if err != nil {
		t.Fatal(err)
	}
	want := decoupledFloats(t, first)
	first.(tensor.Tensor).Zero()
	again, err := op.UsePreallocDo(first, in...)
	if err != nil {
		t.Fatal(err)
	}
	if again != first || !slices.Equal(decoupledFloats(t, again), want) { // the same computation: exact
		t.Error("UsePreallocDo did not rewrite the earlier output in place")
	}
	wrong := tensor.New(tensor.WithShape(1, 2, 3), tensor.WithBacking(make([]float64, 6)))
	if _, err := op.UsePreallocDo(wrong, in...); err == nil {
		t.Error("UsePreallocDo into a buffer of the wrong shape: no error")
	}
	dg.vm.Close()
}
