package engine

import (
	"math"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// dropoutGraph is x [N, 200] -> Dropout(ratio) -> y, with the ratio an
// attribute before opset 12 and an input from 12 on.
func dropoutGraph(opset int64, ratio float32) *onnximport.Model {
	tg := newTestGraph(opset)
	tg.input("x", 200)
	if opset < 12 {
		tg.node("Dropout", "drop", []string{"x"}, []string{"y"}, attrFloat("ratio", ratio))
	} else {
		tg.floats("ratio", nil, ratio)
		tg.node("Dropout", "drop", []string{"x", "ratio"}, []string{"y"})
	}
	tg.output("y")
	return tg.model()
}

// TestDropout checks the dropout masks: identity at inference; in
// training zeros at about the ratio and 1/(1-ratio) elsewhere, the same
// mask for the same (seed, step), a different one for another step or
// seed, and a resumed step count reproducing the masks.
func TestDropout(t *testing.T) {
	const n = 4
	ones := Tensor{Shape: []int{n, 200}, Data: slices.Repeat([]float32{1}, n*200)}
	for _, opset := range []int64{11, 13} {
		m := dropoutGraph(opset, 0.3)
		inf := mustBuild(t, m, Options{Batch: n, Seed: 5})
		if y := forward(t, inf, ones, "y"); !slices.Equal(y.Data, ones.Data) {
			t.Errorf("opset %d: inference dropout is not the identity", opset)
		}

		a := mustBuild(t, m, Options{Mode: Training, Batch: n, Seed: 5})
		b := mustBuild(t, m, Options{Mode: Training, Batch: n, Seed: 5})
		c := mustBuild(t, m, Options{Mode: Training, Batch: n, Seed: 6})
		a1, a2 := forward(t, a, ones, "y"), forward(t, a, ones, "y")
		b1, c1 := forward(t, b, ones, "y"), forward(t, c, ones, "y")
		if !slices.Equal(a1.Data, b1.Data) {
			t.Errorf("opset %d: same seed and step gave different masks", opset)
		}
		if slices.Equal(a1.Data, a2.Data) {
			t.Errorf("opset %d: steps 0 and 1 gave the same mask", opset)
		}
		if slices.Equal(a1.Data, c1.Data) {
			t.Errorf("opset %d: seeds 5 and 6 gave the same mask", opset)
		}
		zeros := 0
		for _, v := range a1.Data {
			switch {
			case v == 0:
				zeros++
			case !closeTo(float64(v), 1/0.7, 1e-6):
				t.Fatalf("opset %d: mask value %v, want 0 or %v", opset, v, 1/0.7)
			}
		}
		if frac := float64(zeros) / float64(len(a1.Data)); frac < 0.22 || frac > 0.38 {
			t.Errorf("opset %d: %.2f of the values dropped, want about 0.3", opset, frac)
		}
		if got := a.State()[StepKey].Data[0]; got != 2 {
			t.Errorf("opset %d: step count %v after two batches, want 2", opset, got)
		}
		// Rewinding the step count reproduces step 1's mask.
		if err := b.SetState(map[string]Tensor{StepKey: {Shape: []int{}, Data: []float32{1}}}); err != nil {
			t.Fatal(err)
		}
		if b2 := forward(t, b, ones, "y"); !slices.Equal(b2.Data, a2.Data) {
			t.Errorf("opset %d: a restored step count did not reproduce the mask", opset)
		}
	}
	// Step draws the masks as Forward does and counts the step.
	tg := newTestGraph(13)
	tg.input("x", 6)
	tg.floats("w", []int64{6, 3})
	tg.node("Dropout", "drop", []string{"x"}, []string{"d"})
	tg.node("MatMul", "mm", []string{"d", "w"}, []string{"y"})
	tg.output("y")
	e := mustBuild(t, tg.model(), Options{Mode: Training, Batch: 2, Seed: 1})
	x := batch(3, 2, 6)
	l1, err := e.Step(map[string]Tensor{"x": x}, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	l2, err := e.Step(map[string]Tensor{"x": x}, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if l1 == l2 {
		t.Errorf("two steps with different masks gave the same loss %v", l1)
	}
	if err := e.SetState(map[string]Tensor{StepKey: {Shape: []int{}, Data: []float32{0}}}); err != nil {
		t.Fatal(err)
	}
	if l3, err := e.Step(map[string]Tensor{"x": x}, []int{0, 1}); err != nil || l3 != l1 {
		t.Errorf("step 0 again gave loss %v (%v), want %v", l3, err, l1)
	}
}

// TestBatchNormRunningStats checks running = momentum*running +
// (1-momentum)*batch with the node's momentum (default 0.9), starting
// from the stored values, against batch statistics computed here; and
// that inference neither uses nor changes them.
func TestBatchNormRunningStats(t *testing.T) {
	const n, c, hw = 3, 2, 4
	for _, momentum := range []float32{0, 0.8} { // 0: attribute absent
		tg := newTestGraph(13)
		tg.input("x", c, 2, 2)
		tg.floats("scale", []int64{c}, 1.5, 0.5)
		tg.floats("bias", []int64{c}, 0.1, -0.2)
		tg.floats("mean", []int64{c}, 0.25, -0.5)
		tg.floats("var", []int64{c}, 2, 0.5)
		var attrs []*onnxpb.AttributeProto
		if momentum != 0 {
			attrs = append(attrs, attrFloat("momentum", momentum))
		}
		tg.node("BatchNormalization", "bn", []string{"x", "scale", "bias", "mean", "var"}, []string{"y"}, attrs...)
		tg.output("y")
		mom := 0.9
		if momentum != 0 {
			mom = float64(momentum)
		}
		m := tg.model()

		inf := mustBuild(t, m, Options{Batch: n})
		x := batch(4, n, c, 2, 2)
		y := forward(t, inf, x, "y")
		var want []float64
		for i, v := range x.Data {
			ch := (i / hw) % c
			mean, vr := []float64{0.25, -0.5}[ch], []float64{2, 0.5}[ch]
			want = append(want, []float64{1.5, 0.5}[ch]*(float64(v)-mean)/math.Sqrt(vr+1e-5)+[]float64{0.1, -0.2}[ch])
		}
		checkClose(t, "inference", y.Data, want, 1e-5)
		if st := inf.State(); !slices.Equal(st["mean"].Data, []float32{0.25, -0.5}) {
			t.Errorf("inference changed the running mean to %v", st["mean"].Data)
		}
		// Restored statistics are what inference normalises with.
		if err := inf.SetState(map[string]Tensor{"mean": {Shape: []int{c}, Data: []float32{1, 1}}}); err != nil {
			t.Fatal(err)
		}
		y2 := forward(t, inf, x, "y")
		for i := range want {
			ch := (i / hw) % c
			want[i] -= []float64{1.5, 0.5}[ch] * (1 - []float64{0.25, -0.5}[ch]) / math.Sqrt([]float64{2, 0.5}[ch]+1e-5)
		}
		checkClose(t, "inference after SetState", y2.Data, want, 1e-5)

		e := mustBuild(t, m, Options{Mode: Training, Batch: n})
		running := [2][]float64{{0.25, -0.5}, {2, 0.5}}
		for step := 0; step < 3; step++ {
			x := batch(uint64(10+step), n, c, 2, 2)
			if step == 2 {
				if _, err := e.Step(map[string]Tensor{"x": x}, nil); err == nil {
					t.Fatal("Step without labels on a [N,C,2,2] output succeeded")
				}
				break
			}
			forward(t, e, x, "y")
			for ch := 0; ch < c; ch++ {
				var vals []float64
				for b := 0; b < n; b++ {
					for k := 0; k < hw; k++ {
						vals = append(vals, float64(x.Data[(b*c+ch)*hw+k]))
					}
				}
				mean, vr := meanVar(vals)
				running[0][ch] = mom*running[0][ch] + (1-mom)*mean
				stat := e.bns[0].stat.Var[ch] // the kernel's variance convention
				if !closeTo(stat, vr, 1e-6) && !closeTo(stat, vr*float64(len(vals))/float64(len(vals)-1), 1e-6) {
					t.Errorf("batch variance %v, want %v (population) or the unbiased one", stat, vr)
				}
				running[1][ch] = mom*running[1][ch] + (1-mom)*stat
			}
			st := e.State()
			checkClose(t, "running mean", st["mean"].Data, running[0], 1e-6)
			checkClose(t, "running var", st["var"].Data, running[1], 1e-6)
		}
	}
}

// meanVar returns the mean and population variance.
func meanVar(v []float64) (mean, variance float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		variance += (x - mean) * (x - mean)
	}
	return mean, variance / float64(len(v))
}

// decoupledTestModel is x [N, 2, 6, 6] -> Conv "c1" (4 filters, 3x3, pad
// 1) rewritten to a ball magnitude with a learnable radius, without
// calibration data (so c1 is uncalibrated and RhoScale starts at 1).
func decoupledTestModel(t *testing.T) *onnximport.Model {
	t.Helper()
	tg := newTestGraph(13)
	tg.input("x", 2, 6, 6)
	tg.floats("w", []int64{4, 2, 3, 3})
	tg.node("Conv", "c1", []string{"x", "w"}, []string{"y"}, attrInts("pads", 1, 1, 1, 1))
	tg.output("y")
	m := tg.model()
	cfg := dcnet.DefaultConfig()
	cfg.Magnitude, cfg.LearnRho = dcnet.MagBall, true
	if _, err := rewrite.Run(m, rewrite.Options{Config: cfg}, nil); err != nil {
		t.Fatal(err)
	}
	return m
}

// patchNormMean returns the mean of the patch norm N of c1 over the batch
// and every output location, from the reference implementation.
func patchNormMean(t *testing.T, m *onnximport.Model, x Tensor) float64 {
	t.Helper()
	var n *onnxpb.NodeProto
	for _, node := range m.Graph().GetNode() {
		if onnximport.IsDecoupledConv(node) {
			n = node
		}
	}
	cfg, err := dcnet.FromNode(n)
	if err != nil {
		t.Fatal(err)
	}
	wt, _ := m.Initializer("w")
	w, err := m.Tensor(wt)
	if err != nil {
		t.Fatal(err)
	}
	f64 := func(v []float32) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	cout := 4
	ones := func(v float64) []float64 { return slices.Repeat([]float64{v}, cout) }
	win, err := onnximport.ParseWindow(n, []int64{3, 3})
	if err != nil {
		t.Fatal(err)
	}
	r, err := dcnet.ReferenceStats(cfg, f64(x.Data), [4]int{x.Shape[0], 2, 6, 6}, f64(w.Float), [4]int{4, 2, 3, 3},
		ones(0), ones(1), ones(1), 1, win)
	if err != nil {
		t.Fatal(err)
	}
	s := 0.0
	for _, v := range r.N {
		s += v
	}
	return s / float64(len(r.N))
}

// TestRhoScaleRunningAverage checks both running averages of DCNET.md
// section 2: the bias-corrected one of an uncalibrated layer and the
// plain one of a calibrated layer, with their step counts in State, and
// that inference leaves RhoScale alone.
func TestRhoScaleRunningAverage(t *testing.T) {
	const n = 2
	for _, uncalibrated := range []bool{true, false} {
		m := decoupledTestModel(t)
		if got := uncalibratedLayers(m); !got["c1"] {
			t.Fatalf("rewrite did not list c1 as uncalibrated: %v", got)
		}
		if !uncalibrated {
			var meta []*onnxpb.StringStringEntryProto
			for _, p := range m.Proto.GetMetadataProps() {
				if p.GetKey() != dcnet.MetaUncalibrated {
					meta = append(meta, p)
				}
			}
			m.Proto.MetadataProps = meta
			m.Proto.MetadataProps = append(m.Proto.MetadataProps, &onnxpb.StringStringEntryProto{
				Key: proto.String(dcnet.MetaUncalibrated), Value: proto.String("other"),
			})
		}
		const scale = "c1.rho_scale"
		inf := mustBuild(t, m, Options{Batch: n})
		forward(t, inf, batch(1, n, 2, 6, 6), "y")
		if got := inf.State()[scale].Data; !slices.Equal(got, []float32{1}) {
			t.Errorf("inference changed RhoScale to %v", got)
		}

		e := mustBuild(t, m, Options{Mode: Training, Batch: n})
		want, s := 1.0, 0.0
		for step := 1; step <= 3; step++ {
			x := batch(uint64(20+step), n, 2, 6, 6)
			for i := range x.Data {
				x.Data[i] *= float32(step) // a different patch norm each step
			}
			forward(t, e, x, "y")
			mt := patchNormMean(t, m, x)
			if got := e.rhos[0].stat.Batch; !closeTo(got, mt, 1e-5) {
				t.Errorf("step %d: batch mean of N %v, reference %v", step, got, mt)
			}
			if uncalibrated {
				s = 0.999*s + 0.001*mt
				want = s / (1 - math.Pow(0.999, float64(step)))
			} else {
				want = 0.999*want + 0.001*mt
			}
			st := e.State()
			checkClose(t, "RhoScale", st[scale].Data, []float64{want}, 1e-6)
			if got := st[scale+CounterSuffix]; !slices.Equal(got.Data, []float32{float32(step)}) || len(got.Shape) != 0 {
				t.Errorf("step count %v, want scalar %d", got, step)
			}
		}
		if uncalibrated {
			// The first uncalibrated step replaces the placeholder 1 by m.
			if math.Abs(want-1) < 1e-3 {
				t.Errorf("RhoScale %v still near its placeholder", want)
			}
		}

		// A restored state continues the average where it left off.
		saved := e.State()
		f := mustBuild(t, m, Options{Mode: Training, Batch: n})
		if err := f.SetState(saved); err != nil {
			t.Fatal(err)
		}
		x := batch(99, n, 2, 6, 6)
		forward(t, e, x, "y")
		forward(t, f, x, "y")
		if a, b := e.State()[scale].Data[0], f.State()[scale].Data[0]; !closeTo(float64(a), float64(b), 1e-6) {
			t.Errorf("restored engine RhoScale %v, original %v", b, a)
		}
		if err := f.SetState(map[string]Tensor{scale + CounterSuffix: {Shape: []int{}, Data: []float32{1.5}}}); err == nil {
			t.Error("SetState accepted a fractional step count")
		}
		if err := f.SetState(map[string]Tensor{scale: {Shape: []int{1}, Data: []float32{1}}}); err == nil {
			t.Error("SetState accepted RhoScale of shape [1]")
		}
	}
}

// TestStatsExact checks that Stats and SetStats carry the running
// statistics in full float64 precision (a float32 round trip would lose
// the low bits of a running average) and that Output returns, after a
// Step, the logits of that step's training-mode forward pass.
func TestStatsExact(t *testing.T) {
	const n, c = 4, 3
	tg := newTestGraph(13)
	tg.input("x", c, 2, 2)
	tg.floats("scale", []int64{c}, 1, 2, 3)
	tg.floats("bias", []int64{c}, 0, 0.5, -0.5)
	tg.floats("mean", []int64{c}, 0.1, 0.2, 0.3)
	tg.floats("var", []int64{c}, 1, 1, 1)
	tg.node("BatchNormalization", "bn", []string{"x", "scale", "bias", "mean", "var"}, []string{"y"})
	tg.node("Flatten", "flat", []string{"y"}, []string{"f"})
	tg.floats("w", []int64{2, c * 4}, make([]float32, 2*c*4)...)
	tg.node("Gemm", "fc", []string{"f", "w"}, []string{"logits"}, attrInt("transB", 1))
	tg.output("logits")
	m := tg.model()

	e := mustBuild(t, m, Options{Mode: Training, Batch: n})
	labels := []int{0, 1, 1, 0}
	for step := range 3 {
		x := batch(uint64(20+step), n, c, 2, 2)
		if _, err := e.Step(map[string]Tensor{"x": x}, labels); err != nil {
			t.Fatal(err)
		}
		got, err := e.Output("logits")
		if err != nil {
			t.Fatal(err)
		}
		want := forward(t, e, x, "logits") // same batch statistics, same logits
		if !slices.Equal(got.Data, want.Data) {
			t.Fatalf("step %d: Output gives %v, a forward pass %v", step, got.Data, want.Data)
		}
	}
	stats := e.Stats()
	if got := stats[StepKey].Data; !slices.Equal(got, []float64{6}) {
		t.Errorf("%s = %v after 3 steps and 3 forward passes, want 6", StepKey, got)
	}
	exact := false
	for _, x := range stats["mean"].Data {
		exact = exact || float64(float32(x)) != x
	}
	if !exact {
		t.Fatalf("running means %v are all float32 values: the test cannot tell float64 from float32", stats["mean"].Data)
	}
	other := mustBuild(t, m, Options{Mode: Training, Batch: n})
	if err := other.SetStats(stats); err != nil {
		t.Fatal(err)
	}
	for name, s := range other.Stats() {
		if !slices.Equal(s.Data, stats[name].Data) {
			t.Errorf("%s: restored %v, saved %v", name, s.Data, stats[name].Data)
		}
	}
	if err := other.SetStats(map[string]Stat{"mean": {Shape: []int{2}, Data: []float64{1, 2}}}); err == nil {
		t.Error("SetStats accepted a running mean of the wrong shape")
	}
	if err := other.SetStats(map[string]Stat{StepKey: {Shape: []int{}, Data: []float64{1.5}}}); err == nil {
		t.Error("SetStats accepted a step count of 1.5")
	}
	if _, err := other.Output("nope"); err == nil {
		t.Error("Output of an unknown name succeeded")
	}
}

// TestLiveData checks that ParamData is the parameter itself (a write
// changes the next forward pass) and GradData the last Step's gradient.
func TestLiveData(t *testing.T) {
	tg := newTestGraph(13)
	tg.input("x", 3)
	tg.floats("w", []int64{2, 3}, 1, 2, 3, 4, 5, 6)
	tg.node("Gemm", "fc", []string{"x", "w"}, []string{"logits"}, attrInt("transB", 1))
	tg.output("logits")
	e := mustBuild(t, tg.model(), Options{Mode: Training, Batch: 2})
	x := batch(3, 2, 3)
	if _, err := e.GradData("w"); err == nil {
		t.Error("GradData before any Step succeeded")
	}
	if _, err := e.Step(map[string]Tensor{"x": x}, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	g, err := e.GradData("w")
	if err != nil {
		t.Fatal(err)
	}
	want, err := e.Grad("w")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g, want.Data) {
		t.Errorf("GradData %v, Grad %v", g, want.Data)
	}
	w, err := e.ParamData("w")
	if err != nil {
		t.Fatal(err)
	}
	clear(w)
	y := forward(t, e, x, "logits")
	for _, v := range y.Data {
		if v != 0 {
			t.Fatalf("logits %v after zeroing the weights through ParamData", y.Data)
		}
	}
	if p, _ := e.Param("w"); !slices.Equal(p.Data, make([]float32, 6)) {
		t.Errorf("Param gives %v after zeroing through ParamData", p.Data)
	}
	f64 := mustBuild(t, tg.model(), Options{Mode: Training, Batch: 2, DType: Float64})
	if _, err := f64.ParamData("w"); err == nil {
		t.Error("ParamData of a float64 engine succeeded")
	}
}
