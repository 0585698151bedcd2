package engine_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/internal/peer"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// Tolerances of the truth tests, relative to the largest magnitude of the
// reference.
const (
	forwardTol = 1e-4 // engine (float32) against ONNX Runtime
	gradTol    = 1e-4 // engine (float64) against PyTorch autograd
	nodeTol    = 1e-4 // ONNX's node tests
	gradFloor  = 1e-7 // absolute: float32 rounding of a zero gradient
)

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(float64(x)))
	}
	return m
}

func maxAbsDiff(a, b []float32) float64 {
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}

// relDiff returns max |got - want| / max |want|.
func relDiff(got, want []float32) float64 {
	scale := 0.0
	for _, v := range want {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	if scale == 0 {
		scale = 1
	}
	worst := 0.0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		worst = math.Max(worst, d/scale)
	}
	return worst
}

func randomTensor(seed uint64, shape ...int) engine.Tensor {
	r := rand.New(rand.NewPCG(seed, 9))
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(r.NormFloat64())
	}
	return engine.Tensor{Shape: shape, Data: data}
}

func toPeer(t engine.Tensor) peer.Tensor {
	dims := make([]int64, len(t.Shape))
	for i, d := range t.Shape {
		dims[i] = int64(d)
	}
	return peer.Tensor{Dims: dims, Data: t.Data}
}

// buildModel returns a model from package models.
func buildModel(t testing.TB, name string, edit func(*models.Config)) *onnximport.Model {
	t.Helper()
	cfg, err := models.DefaultConfig(name)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := models.Build(name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &onnximport.Model{Proto: p}
}

func rewritten(t testing.TB, m *onnximport.Model, cfg dcnet.Config) *onnximport.Model {
	t.Helper()
	c := &onnximport.Model{Proto: proto.Clone(m.Proto).(*onnxpb.ModelProto)}
	if _, err := rewrite.Run(c, rewrite.Options{Config: cfg}, nil); err != nil {
		t.Fatal(err)
	}
	return c
}

func decoupled(mag dcnet.Magnitude, ang dcnet.Angular, edit func(*dcnet.Config)) dcnet.Config {
	c := dcnet.DefaultConfig()
	c.Magnitude, c.Angular = mag, ang
	c.LearnRho = c.NeedsRho()
	if edit != nil {
		edit(&c)
	}
	return c
}

// forwardCase is a model and an input to compare with ONNX Runtime.
type forwardCase struct {
	name  string
	model *onnximport.Model
	input engine.Tensor
}

func forwardCases(t *testing.T) []forwardCase {
	var out []forwardCase
	mini := buildModel(t, "vgg-mini", nil)
	miniBN := buildModel(t, "vgg-mini", func(c *models.Config) { c.BN = true; c.Opset = 9 })
	rn := buildModel(t, "resnet18", func(c *models.Config) { c.Input = [3]int64{3, 32, 32}; c.Classes = 10 })
	in28 := randomTensor(1, 2, 1, 28, 28)
	in32 := randomTensor(2, 2, 3, 32, 32)
	out = append(out,
		forwardCase{"vgg-mini", mini, in28},
		forwardCase{"vgg-mini-bn-opset9", miniBN, in28},
		forwardCase{"resnet18", rn, in32},
		forwardCase{"vgg-mini-ball", rewritten(t, mini, decoupled(dcnet.MagBall, dcnet.AngCos, nil)), in28},
		forwardCase{"vgg-mini-bn-tanh-sigmoid", rewritten(t, miniBN, decoupled(dcnet.MagTanh, dcnet.AngSigmoid, nil)), in28},
		forwardCase{"resnet18-seg-linear", rewritten(t, rn, decoupled(dcnet.MagSeg, dcnet.AngLinear, func(c *dcnet.Config) { c.LearnRho = false; c.Rho = 4 })), in32},
	)
	paths, _ := filepath.Glob("../testdata/foreign/*/model.onnx")
	for i, p := range paths {
		m, err := onnximport.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		shapes, _ := m.InferShapes()
		sh := shapes[m.Graph().GetInput()[0].GetName()]
		dims := []int{2}
		for _, d := range sh[1:] {
			dims = append(dims, int(d.Size))
		}
		name := "foreign-" + filepath.Base(filepath.Dir(p))
		in := randomTensor(uint64(10+i), dims...)
		cfgs := []dcnet.Config{
			decoupled(dcnet.MagBall, dcnet.AngCos, nil),
			decoupled(dcnet.MagMix, dcnet.AngSqcos, func(c *dcnet.Config) { c.Weighted = dcnet.WeightLog }),
		}
		out = append(out, forwardCase{name, m, in},
			forwardCase{name + "-decoupled", rewritten(t, m, cfgs[i%len(cfgs)]), in})
	}
	return out
}

// TestTruthForwardORT compares the engine's inference outputs with ONNX
// Runtime on built, exported and rewritten models.
func TestTruthForwardORT(t *testing.T) {
	ort := peer.ORT(t)
	dir := t.TempDir()
	compared := 0
	for _, c := range forwardCases(t) {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".onnx")
			if err := c.model.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			inName := c.model.Graph().GetInput()[0].GetName()
			want, err := ort.Run(path, map[string]peer.Tensor{inName: toPeer(c.input)})
			if err != nil {
				t.Fatal(err)
			}
			e, err := engine.Build(c.model, engine.Options{Mode: engine.Inference, Batch: c.input.Shape[0]})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			got, err := e.Forward(map[string]engine.Tensor{inName: c.input})
			if err != nil {
				t.Fatal(err)
			}
			for name, w := range want {
				g, ok := got[name]
				if !ok {
					t.Errorf("output %q missing", name)
					continue
				}
				if d := relDiff(g.Data, w.Data); d > forwardTol {
					t.Errorf("output %q differs from ONNX Runtime by %.3g of its scale, want at most %g", name, d, forwardTol)
				}
				compared++
			}
		})
	}
	t.Logf("compared %d outputs with ONNX Runtime", compared)
}

// smallCNN builds conv -> BN -> relu -> maxpool -> conv -> relu ->
// flatten -> gemm at 1x12x12, 5 classes: the net whose loss and gradients
// are compared with PyTorch.
func smallCNN(t *testing.T) *onnximport.Model {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 3))
	fill := func(name string, scale float64, dims ...int64) *onnxpb.TensorProto {
		n := int64(1)
		for _, d := range dims {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(scale * r.NormFloat64())
		}
		return floatTensor(name, dims, v)
	}
	pos := func(name string, dims ...int64) *onnxpb.TensorProto {
		v := make([]float32, dims[0])
		for i := range v {
			v[i] = float32(0.5 + r.Float64())
		}
		return floatTensor(name, dims, v)
	}
	g := &onnxpb.GraphProto{
		Name: proto.String("small"),
		Node: []*onnxpb.NodeProto{
			nodeOf("Conv", "conv1", []string{"x", "conv1.weight", "conv1.bias"}, ints("pads", 1, 0, 2, 1), ints("kernel_shape", 3, 3)),
			nodeOf("BatchNormalization", "bn1", []string{"conv1", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"}),
			nodeOf("Relu", "relu1", []string{"bn1"}),
			nodeOf("MaxPool", "pool1", []string{"relu1"}, ints("kernel_shape", 2, 2), ints("strides", 2, 2)),
			nodeOf("Conv", "conv2", []string{"pool1", "conv2.weight", "conv2.bias"}, ints("pads", 1, 1, 1, 1), ints("kernel_shape", 3, 3), ints("strides", 2, 2)),
			nodeOf("Relu", "relu2", []string{"conv2"}),
			nodeOf("Flatten", "flat", []string{"relu2"}),
			nodeOf("Gemm", "fc", []string{"flat", "fc.weight", "fc.bias"}, intAttr("transB", 1)),
		},
		Initializer: []*onnxpb.TensorProto{
			fill("conv1.weight", 0.4, 6, 2, 3, 3), fill("conv1.bias", 0.1, 6),
			pos("bn1.weight", 6), fill("bn1.bias", 0.1, 6), fill("bn1.running_mean", 0.1, 6), pos("bn1.running_var", 6),
			fill("conv2.weight", 0.3, 8, 6, 3, 3), fill("conv2.bias", 0.1, 8),
			fill("fc.weight", 0.2, 5, 8*3*3), fill("fc.bias", 0.1, 5),
		},
		Input:  []*onnxpb.ValueInfoProto{valueInfo("x", 4, 2, 12, 12)},
		Output: []*onnxpb.ValueInfoProto{valueInfo("fc", 4, 5)},
	}
	g.Node[len(g.Node)-1].Output = []string{"fc"}
	m := &onnximport.Model{Proto: &onnxpb.ModelProto{
		IrVersion:    proto.Int64(8),
		ProducerName: proto.String("engine-test"),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph:        g,
	}}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTruthGradientsTorch compares the training loss and every parameter
// gradient of a small CNN, plain and rewritten, with PyTorch autograd.
func TestTruthGradientsTorch(t *testing.T) {
	torch := peer.Torch(t)
	dir := t.TempDir()
	plain := smallCNN(t)
	cases := []struct {
		name  string
		model *onnximport.Model
	}{
		{"plain", plain},
		{"ball-learn", rewritten(t, plain, decoupled(dcnet.MagBall, dcnet.AngCos, nil))},
		{"tanh-learn-sigmoid", rewritten(t, plain, decoupled(dcnet.MagTanh, dcnet.AngSigmoid, nil))},
		{"seg-fixed-linear-weighted", rewritten(t, plain, decoupled(dcnet.MagSeg, dcnet.AngLinear, func(c *dcnet.Config) {
			c.LearnRho, c.Rho, c.Weighted = false, 1.5, dcnet.WeightLog
		}))},
		{"sphere-sqcos", rewritten(t, plain, decoupled(dcnet.MagSphere, dcnet.AngSqcos, nil))},
	}
	x := randomTensor(4, 4, 2, 12, 12)
	labels := []int{0, 3, 1, 4}
	compared := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".onnx")
			if err := c.model.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			want, err := torch.Train(path, map[string]peer.Tensor{"x": toPeer(x)}, labels, 0)
			if err != nil {
				t.Fatal(err)
			}
			e, err := engine.Build(c.model, engine.Options{Mode: engine.Training, Batch: 4, DType: engine.Float64})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			loss, err := e.Step(map[string]engine.Tensor{"x": x}, labels)
			if err != nil {
				t.Fatal(err)
			}
			if d := math.Abs(loss-want.Loss) / math.Abs(want.Loss); d > gradTol {
				t.Errorf("loss %.8g, PyTorch %.8g (relative difference %.3g)", loss, want.Loss, d)
			}
			names := e.Params()
			sort.Strings(names)
			var wantNames []string
			for n := range want.Grads {
				wantNames = append(wantNames, n)
			}
			sort.Strings(wantNames)
			if strings.Join(names, ",") != strings.Join(wantNames, ",") {
				t.Errorf("parameters %v, PyTorch has gradients for %v", names, wantNames)
			}
			for _, n := range names {
				g, err := e.Grad(n)
				if err != nil {
					t.Fatal(err)
				}
				w, ok := want.Grads[n]
				if !ok {
					continue
				}
				// A bias just before a training-mode BatchNormalization
				// has a zero gradient: both sides give rounding noise
				// there, so differences below gradFloor count as equal.
				if d := relDiff(g.Data, w.Data); d > gradTol && maxAbsDiff(g.Data, w.Data) > gradFloor {
					t.Errorf("gradient of %s differs from PyTorch by %.3g of its scale (max |want| %.3g), want at most %g", n, d, maxAbs(w.Data), gradTol)
				}
				compared++
			}
		})
	}
	t.Logf("compared %d parameter gradients and %d losses with PyTorch autograd", compared, len(cases))
}

// TestTruthNodeTests runs ONNX's own node tests of every operator the
// engine supports against their expected outputs. Cases the engine does
// not support are listed in testdata/nodetests_unsupported.golden.
func TestTruthNodeTests(t *testing.T) {
	root := "/usr/share/libonnx-testdata/data/node"
	dirs, _ := filepath.Glob(filepath.Join(root, "test_*"))
	if len(dirs) == 0 {
		msg := "ONNX node tests not found (apt-get install -y libonnx-testdata)"
		if peer.Require() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	supported := map[string]bool{}
	for _, op := range engine.Supported() {
		supported[op] = true
	}
	var unsupported strings.Builder
	passed, failed := 0, 0
	for _, dir := range dirs {
		m, err := onnximport.ReadFile(filepath.Join(dir, "model.onnx"))
		if err != nil {
			continue // outside what dcconvert reads at all (old opsets, ...)
		}
		relevant := false
		for _, n := range m.Graph().GetNode() {
			if supported[n.GetOpType()] {
				relevant = true
			}
		}
		if !relevant {
			continue
		}
		name := filepath.Base(dir)
		inputs, outputs, err := readDataSet(m, filepath.Join(dir, "test_data_set_0"))
		if err != nil {
			fmt.Fprintf(&unsupported, "%s: %s\n", name, firstLine(err))
			continue
		}
		if err := engine.Check(m); err != nil {
			fmt.Fprintf(&unsupported, "%s: %s\n", name, firstLine(err))
			continue
		}
		e, err := engine.Build(m, engine.Options{Mode: engine.Inference}) // the declared shapes
		if err != nil {
			fmt.Fprintf(&unsupported, "%s: %s\n", name, firstLine(err))
			continue
		}
		got, err := e.Forward(inputs)
		e.Close()
		if err != nil {
			t.Errorf("%s: %v", name, err)
			failed++
			continue
		}
		ok := true
		for n, w := range outputs {
			if d := relDiff(got[n].Data, w.Data); len(got[n].Data) != len(w.Data) || d > nodeTol {
				t.Errorf("%s: output %q differs by %.3g", name, n, d)
				ok = false
			}
		}
		if ok {
			passed++
		} else {
			failed++
		}
	}
	t.Logf("ONNX node tests: %d passed, %d failed", passed, failed)
	compareGolden(t, "testdata/nodetests_unsupported.golden", unsupported.String())
}

func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// readDataSet reads the inputs and outputs of an ONNX test data set as
// float32 tensors named after the graph's inputs and outputs.
func readDataSet(m *onnximport.Model, dir string) (map[string]engine.Tensor, map[string]engine.Tensor, error) {
	read := func(kind string, names []string) (map[string]engine.Tensor, error) {
		out := map[string]engine.Tensor{}
		for i, name := range names {
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%s_%d.pb", kind, i)))
			if err != nil {
				return nil, err
			}
			tp := &onnxpb.TensorProto{}
			if err := proto.Unmarshal(b, tp); err != nil {
				return nil, err
			}
			v, err := m.Tensor(tp)
			if err != nil {
				return nil, err
			}
			if v.Float == nil {
				return nil, fmt.Errorf("%s %q is not a float tensor", kind, name)
			}
			shape := make([]int, len(v.Dims))
			for j, d := range v.Dims {
				shape[j] = int(d)
			}
			out[name] = engine.Tensor{Shape: shape, Data: append([]float32(nil), v.Float...)}
		}
		return out, nil
	}
	inits := m.Initializers()
	var ins, outs []string
	for _, v := range m.Graph().GetInput() {
		if _, ok := inits[v.GetName()]; !ok {
			ins = append(ins, v.GetName())
		}
	}
	for _, v := range m.Graph().GetOutput() {
		outs = append(outs, v.GetName())
	}
	in, err := read("input", ins)
	if err != nil {
		return nil, nil, err
	}
	out, err := read("output", outs)
	return in, out, err
}

// TestStepGradientsDoNotAccumulate: two steps on the same batch, without
// changing the parameters, give the same loss and gradients (Gorgonia
// would add them up if they were kept across runs).
func TestStepGradientsDoNotAccumulate(t *testing.T) {
	m := rewritten(t, smallCNN(t), decoupled(dcnet.MagBall, dcnet.AngCos, nil))
	e, err := engine.Build(m, engine.Options{Mode: engine.Training, Batch: 4, DType: engine.Float64})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	x := map[string]engine.Tensor{"x": randomTensor(4, 4, 2, 12, 12)}
	labels := []int{0, 3, 1, 4}
	loss1, err := e.Step(x, labels)
	if err != nil {
		t.Fatal(err)
	}
	first := map[string][]float32{}
	for _, n := range e.Params() {
		g, _ := e.Grad(n)
		first[n] = g.Data
	}
	loss2, err := e.Step(x, labels)
	if err != nil {
		t.Fatal(err)
	}
	if loss1 != loss2 {
		t.Errorf("losses %v and %v differ", loss1, loss2)
	}
	for _, n := range e.Params() {
		g, _ := e.Grad(n)
		if d := relDiff(g.Data, first[n]); d > 1e-12 {
			t.Errorf("gradient of %s changed by %.3g between identical steps", n, d)
		}
	}
}

// TestInlineFormRefused: a model rewritten with --inline is refused before
// anything runs, with a message saying what to do instead.
func TestInlineFormRefused(t *testing.T) {
	m := rewritten(t, buildModel(t, "vgg-mini", nil), decoupled(dcnet.MagBall, dcnet.AngSigmoid, nil))
	if err := rewrite.Inline(m); err != nil {
		t.Fatal(err)
	}
	err := engine.Check(m)
	if err == nil || !strings.Contains(err.Error(), "inline form") || !strings.Contains(err.Error(), "rewrite the source model without --inline") {
		t.Fatalf("Check = %v, want the inline form refused with advice", err)
	}
	if _, err := engine.Build(m, engine.Options{Batch: 1}); err == nil {
		t.Error("Build accepted the inline form")
	}
}
