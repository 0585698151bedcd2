package engine

import (
	"fmt"
	"math"
	"testing"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// TestUniformLogits checks that logits that are all equal give the loss
// log(classes), with or without label smoothing, and the gradient of the
// last bias, (1/K - q)/B summed over the batch; a trailing Softmax is
// folded away for the loss but still computed for Forward.
func TestUniformLogits(t *testing.T) {
	const n, k = 4, 5
	for _, smoothing := range []float64{0, 0.1} {
		for _, dt := range []Float{Float32, Float64} {
			tg := newTestGraph(13)
			tg.input("x", 3)
			tg.floats("w", []int64{k, 3}, make([]float32, 3*k)...)
			tg.floats("b", []int64{k}, make([]float32, k)...)
			tg.node("Gemm", "fc", []string{"x", "w", "b"}, []string{"logits"}, attrInt("transB", 1))
			tg.node("Softmax", "prob", []string{"logits"}, []string{"p"}, attrInt("axis", 1))
			tg.output("p")
			e := mustBuild(t, tg.model(), Options{Mode: Training, Batch: n, DType: dt, LabelSmoothing: smoothing})
			labels := []int{0, 2, 2, 4}
			loss, err := e.Step(map[string]Tensor{"x": batch(1, n, 3)}, labels)
			if err != nil {
				t.Fatal(err)
			}
			if !closeTo(loss, math.Log(k), 1e-6) {
				t.Errorf("smoothing %v, %v: loss %v, want log(%d) = %v", smoothing, dt, loss, k, math.Log(k))
			}
			g, err := e.Grad("b")
			if err != nil {
				t.Fatal(err)
			}
			want := make([]float64, k)
			for _, l := range labels {
				for c := range want {
					q := smoothing / k
					if c == l {
						q += 1 - smoothing
					}
					want[c] += (1.0/k - q) / n
				}
			}
			checkClose(t, fmt.Sprintf("grad b (smoothing %v, %v)", smoothing, dt), g.Data, want, 1e-6)
			p := forward(t, e, batch(2, n, 3), "p")
			for _, v := range p.Data {
				if !closeTo(float64(v), 1.0/k, 1e-6) {
					t.Fatalf("softmax output %v, want %v", v, 1.0/k)
				}
			}
		}
	}
}

// finiteDifference compares the gradients of Step's loss with central
// differences on a few entries of every parameter. The engine must be
// built in Float64 and have no dropout, so that the loss is a
// deterministic function of the parameters.
func finiteDifference(t *testing.T, e *Engine, inputs map[string]Tensor, labels []int, h, tol float64) {
	t.Helper()
	if _, err := e.Step(inputs, labels); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range e.Params() {
		g, err := e.Grad(name)
		if err != nil {
			t.Fatal(err)
		}
		p := e.byName[name]
		orig, err := loadF64(p.value)
		if err != nil {
			t.Fatal(err)
		}
		grad, err := loadF64(p.grad)
		if p.grad == nil || err != nil {
			t.Fatalf("parameter %s has no gradient value (%v)", name, err)
		}
		_ = g
		n := len(orig)
		for _, i := range []int{0, n / 2, n - 1} {
			loss := func(delta float64) float64 {
				v := append([]float64(nil), orig...)
				v[i] += delta
				if err := storeF64(p.value, v); err != nil {
					t.Fatal(err)
				}
				l, err := e.Step(inputs, labels)
				if err != nil {
					t.Fatal(err)
				}
				return l
			}
			fd := (loss(h) - loss(-h)) / (2 * h)
			if err := storeF64(p.value, orig); err != nil {
				t.Fatal(err)
			}
			if math.Abs(fd-grad[i]) > tol*math.Max(1, math.Abs(fd)) {
				t.Errorf("d loss / d %s[%d] = %.9g, central difference %.9g", name, i, grad[i], fd)
			}
			checked++
		}
	}
	t.Logf("checked %d gradient entries of %d parameters", checked, len(e.Params()))
}

// TestFiniteDifferenceConvNet checks the full loss of a tiny conv net
// (Conv with asymmetric pads and a bias, BatchNormalization on batch
// statistics, Relu, MaxPool, Flatten, Gemm, a folded Softmax) against
// central differences in Float64.
func TestFiniteDifferenceConvNet(t *testing.T) {
	const n = 3
	tg := newTestGraph(13)
	tg.input("x", 2, 5, 5)
	tg.floats("conv.weight", []int64{3, 2, 3, 3})
	tg.floats("conv.bias", []int64{3})
	tg.floats("bn.weight", []int64{3}, 1.2, 0.8, 1)
	tg.floats("bn.bias", []int64{3}, 0.1, -0.1, 0.2)
	tg.floats("bn.mean", []int64{3}, 0, 0, 0)
	tg.floats("bn.var", []int64{3}, 1, 1, 1)
	tg.floats("fc.weight", []int64{4, 12})
	tg.floats("fc.bias", []int64{4})
	tg.node("Conv", "conv", []string{"x", "conv.weight", "conv.bias"}, []string{"c"},
		attrInts("pads", 1, 0, 0, 1), attrInts("kernel_shape", 3, 3))
	tg.node("BatchNormalization", "bn", []string{"c", "bn.weight", "bn.bias", "bn.mean", "bn.var"}, []string{"b"})
	tg.node("Relu", "relu", []string{"b"}, []string{"r"})
	tg.node("MaxPool", "pool", []string{"r"}, []string{"p"}, attrInts("kernel_shape", 2, 2), attrInts("strides", 2, 2))
	tg.node("Flatten", "flat", []string{"p"}, []string{"f"})
	tg.node("Gemm", "fc", []string{"f", "fc.weight", "fc.bias"}, []string{"logits"}, attrInt("transB", 1))
	tg.node("Softmax", "prob", []string{"logits"}, []string{"prob"})
	tg.output("prob")
	e := mustBuild(t, tg.model(), Options{Mode: Training, Batch: n, DType: Float64})
	finiteDifference(t, e, map[string]Tensor{"x": batch(7, n, 2, 5, 5)}, []int{1, 3, 0}, 1e-6, 1e-5)
}

// TestFiniteDifferenceElementwise checks the gradients of the builder's
// own operations (broadcast Add/Sub/Mul/Div, MatMul, Gemm with transA,
// transB, alpha and beta, Concat, Reshape, the activations, Clip and
// LogSoftmax) against central differences in Float64.
func TestFiniteDifferenceElementwise(t *testing.T) {
	const n = 3
	tg := newTestGraph(13)
	tg.input("x", 4)
	tg.floats("w1", []int64{4, 6})
	tg.floats("b1", []int64{1, 6})
	tg.floats("s", []int64{2, 1})
	tg.floats("d", []int64{3})
	tg.floats("a", []int64{3, 3})
	tg.floats("w2", []int64{3, 12})
	tg.floats("c2", []int64{3})
	tg.node("MatMul", "mm", []string{"x", "w1"}, []string{"h"})
	tg.node("Add", "bias", []string{"b1", "h"}, []string{"hb"})
	tg.node("Reshape", "rs", []string{"hb", "shape"}, []string{"h3"})
	tg.ints("shape", 0, 2, 3)
	tg.node("Mul", "mul", []string{"h3", "s"}, []string{"m"})
	tg.node("Sub", "sub", []string{"m", "d"}, []string{"u"})
	tg.node("Sigmoid", "sig_d", []string{"d"}, []string{"ds"})
	tg.floats("one", nil, 1.5)
	tg.node("Add", "dd", []string{"ds", "one"}, []string{"dd"})
	tg.node("Div", "div", []string{"u", "dd"}, []string{"v"})
	tg.node("Sigmoid", "sig", []string{"hb"}, []string{"sg"})
	tg.node("Tanh", "tanh", []string{"v"}, []string{"th"})
	tg.node("LeakyRelu", "lrelu", []string{"v"}, []string{"lr"}, attrFloat("alpha", 0.2))
	tg.node("Concat", "cat", []string{"th", "lr"}, []string{"cat"}, attrInt("axis", 1))
	tg.node("Flatten", "flat", []string{"cat"}, []string{"f"})
	tg.node("Clip", "clip", []string{"sg", "lo", "hi"}, []string{"cl"})
	tg.floats("lo", nil, 0.3)
	tg.floats("hi", nil, 0.7)
	tg.node("Flatten", "flat2", []string{"cl"}, []string{"f2"})
	tg.node("Concat", "cat2", []string{"f", "f2"}, []string{"g"}, attrInt("axis", 1))
	// g is [N, 18]; a MatMul takes it to [N, 12], a Gemm to [N, 3], and
	// a Gemm with transA (a [3, 3] initializer read as [K, M], K = N)
	// mixes the samples.
	tg.floats("sel", []int64{18, 12})
	tg.node("MatMul", "select", []string{"g", "sel"}, []string{"g12"})
	tg.node("Gemm", "fc", []string{"g12", "w2", "c2"}, []string{"z"},
		attrInt("transB", 1), attrFloat("alpha", 0.7), attrFloat("beta", 1.5))
	tg.node("Gemm", "mix", []string{"a", "z"}, []string{"z2"}, attrInt("transA", 1))
	tg.node("LogSoftmax", "lsm", []string{"z2"}, []string{"out"}, attrInt("axis", 1))
	tg.output("out")
	e := mustBuild(t, tg.model(), Options{Mode: Training, Batch: n, DType: Float64})
	if got, want := len(e.Params()), 7; got != want {
		t.Errorf("Params() = %v, want %d parameters", e.Params(), want)
	}
	finiteDifference(t, e, map[string]Tensor{"x": batch(8, n, 4)}, []int{2, 0, 1}, 1e-6, 1e-5)
}

// TestFiniteDifferenceDecoupled checks the full loss of a net with a
// decoupled convolution (ball magnitude with a learnable radius,
// normalised on batch statistics in training) against central
// differences in Float64.
func TestFiniteDifferenceDecoupled(t *testing.T) {
	const n = 2
	tg := newTestGraph(13)
	tg.input("x", 2, 4, 4)
	tg.floats("conv.weight", []int64{3, 2, 3, 3})
	tg.floats("conv.bias", []int64{3})
	tg.floats("fc.weight", []int64{27, 3})
	tg.node("Conv", "conv", []string{"x", "conv.weight", "conv.bias"}, []string{"c"},
		attrInts("pads", 1, 1, 0, 0), attrInts("strides", 1, 1))
	tg.node("Flatten", "flat", []string{"c"}, []string{"f"})
	tg.node("MatMul", "fc", []string{"f", "fc.weight"}, []string{"logits"})
	tg.output("logits")
	m := tg.model()
	cfg := dcnet.DefaultConfig()
	cfg.Magnitude, cfg.Angular, cfg.LearnRho = dcnet.MagBall, dcnet.AngSigmoid, true
	if _, err := rewrite.Run(m, rewrite.Options{Config: cfg}, nil); err != nil {
		t.Fatal(err)
	}
	decoupled := 0
	for _, node := range m.Graph().GetNode() {
		if onnximport.IsDecoupledConv(node) {
			decoupled++
		}
	}
	if decoupled != 1 {
		t.Fatalf("rewrite made %d decoupled nodes, want 1", decoupled)
	}
	e := mustBuild(t, m, Options{Mode: Training, Batch: n, DType: Float64})
	want := []string{"conv.weight", "conv.bias", "conv.rho_v", "fc.weight"}
	if got := e.Params(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Params() = %v, want %v", got, want)
	}
	x := batch(9, n, 2, 4, 4)
	for i := range x.Data {
		x.Data[i] *= 2 // patch norms on both sides of the radius
	}
	finiteDifference(t, e, map[string]Tensor{"x": x}, []int{2, 0}, 1e-6, 1e-5)
}
