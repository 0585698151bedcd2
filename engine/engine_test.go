package engine

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
)

// testGraph builds small ONNX models by hand for the engine's tests.
type testGraph struct {
	opset   int64
	nodes   []*onnxpb.NodeProto
	inits   []*onnxpb.TensorProto
	inputs  []*onnxpb.ValueInfoProto
	outputs []*onnxpb.ValueInfoProto
	meta    []*onnxpb.StringStringEntryProto
}

func newTestGraph(opset int64) *testGraph { return &testGraph{opset: opset} }

// input declares a float graph input whose first dimension is the
// symbolic batch "N"; dims are the others.
func (tg *testGraph) input(name string, dims ...int64) {
	shape := &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{
		{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}},
	}}
	for _, d := range dims {
		shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	tg.inputs = append(tg.inputs, &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Shape: shape,
		}}},
	})
}

// output declares graph outputs.
func (tg *testGraph) output(names ...string) {
	for _, n := range names {
		tg.outputs = append(tg.outputs, &onnxpb.ValueInfoProto{Name: proto.String(n)})
	}
}

// floats adds a float initializer; without data it is filled with
// deterministic values in [-1, 1).
func (tg *testGraph) floats(name string, dims []int64, data ...float32) {
	if data == nil {
		n := 1
		for _, d := range dims {
			n *= int(d)
		}
		data = pattern(n, uint64(len(tg.inits)+1))
	}
	tg.inits = append(tg.inits, floatTensor(name, dims, data))
}

// ints adds a 1-D int64 initializer.
func (tg *testGraph) ints(name string, data ...int64) {
	tg.inits = append(tg.inits, &onnxpb.TensorProto{
		Name: proto.String(name), Dims: []int64{int64(len(data))},
		DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: data,
	})
}

// node adds a default-domain node.
func (tg *testGraph) node(op, name string, in, out []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	n := &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(name), Input: in, Output: out, Attribute: attrs}
	tg.nodes = append(tg.nodes, n)
	return n
}

// model returns the graph as a model.
func (tg *testGraph) model() *onnximport.Model {
	return &onnximport.Model{Proto: &onnxpb.ModelProto{
		IrVersion:     proto.Int64(8),
		OpsetImport:   []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(tg.opset)}},
		MetadataProps: tg.meta,
		Graph: &onnxpb.GraphProto{
			Name: proto.String("test"), Node: tg.nodes, Initializer: tg.inits,
			Input: tg.inputs, Output: tg.outputs,
		},
	}}
}

func floatTensor(name string, dims []int64, data []float32) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{
		Name: proto.String(name), Dims: dims,
		DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: data,
	}
}

func attrInt(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func attrInts(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func attrFloat(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

func attrTensor(name string, t *onnxpb.TensorProto) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t}
}

// pattern returns n deterministic values in [-1, 1).
func pattern(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(2*r.Float64() - 1)
	}
	return out
}

// batch returns a tensor of the given shape filled by pattern.
func batch(seed uint64, shape ...int) Tensor {
	return Tensor{Shape: shape, Data: pattern(numElements(shape), seed)}
}

// mustBuild builds an engine and closes it when the test ends.
func mustBuild(t *testing.T, m *onnximport.Model, opts Options) *Engine {
	t.Helper()
	e, err := Build(m, opts)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// forward runs Forward on one input called "x" and returns output name.
func forward(t *testing.T, e *Engine, x Tensor, name string) Tensor {
	t.Helper()
	out, err := e.Forward(map[string]Tensor{"x": x})
	if err != nil {
		t.Fatalf("Forward: %v", err)
	}
	y, ok := out[name]
	if !ok {
		t.Fatalf("Forward returned %v, no output %q", slices.Sorted(mapKeys(out)), name)
	}
	return y
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// closeTo reports whether got is within an absolute-or-relative tolerance
// of want.
func closeTo(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol*math.Max(1, math.Abs(want))
}

// checkClose compares two slices with a tolerance.
func checkClose(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad := 0
	for i := range got {
		if !closeTo(float64(got[i]), want[i], tol) {
			if bad < 5 {
				t.Errorf("%s[%d] = %v, want %v (tolerance %g)", what, i, got[i], want[i], tol)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d values differ", what, bad)
	}
}

// TestForwardShapes builds the catalogue's small models in both modes
// and checks the inputs, outputs and output shapes.
func TestForwardShapes(t *testing.T) {
	tests := []struct {
		name  string
		model string
		cfg   models.Config
		in    []int
	}{
		{"vgg-mini", "vgg-mini", models.Config{}, []int{1, 28, 28}},
		{"vgg-mini bn opset 7", "vgg-mini", models.Config{BN: true, Opset: 7}, []int{1, 28, 28}},
		{"vgg-mini opset 17 rgb", "vgg-mini", models.Config{Opset: 17, Input: [3]int64{3, 16, 16}, Classes: 4}, []int{3, 16, 16}},
		{"resnet18 cifar", "resnet18", models.Config{Input: [3]int64{3, 32, 32}, Classes: 10}, []int{3, 32, 32}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := models.Build(tt.model, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			m := &onnximport.Model{Proto: p}
			classes := tt.cfg.Classes
			if classes == 0 {
				classes = 10
			}
			const n = 2
			x := batch(1, append([]int{n}, tt.in...)...)
			var outs [2]Tensor
			for i, mode := range []Mode{Inference, Training} {
				e := mustBuild(t, m, Options{Mode: mode, Batch: n})
				if got := e.Inputs(); !slices.Equal(got, []string{"input"}) {
					t.Errorf("Inputs() = %v", got)
				}
				if got := e.Outputs(); !slices.Equal(got, []string{"output"}) {
					t.Errorf("Outputs() = %v", got)
				}
				out, err := e.Forward(map[string]Tensor{"input": x})
				if err != nil {
					t.Fatal(err)
				}
				outs[i] = out["output"]
				if want := []int{n, classes}; !slices.Equal(outs[i].Shape, want) || len(outs[i].Data) != n*classes {
					t.Errorf("%v: output shape %v with %d values, want %v", mode, outs[i].Shape, len(outs[i].Data), want)
				}
				for _, v := range outs[i].Data {
					if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
						t.Fatalf("%v: output %v is not finite", mode, outs[i].Data)
					}
				}
				if mode != Training {
					continue
				}
				loss, err := e.Step(map[string]Tensor{"input": x}, []int{0, classes - 1})
				if err != nil || math.IsNaN(loss) || loss <= 0 {
					t.Fatalf("Step: loss %v, %v", loss, err)
				}
				for _, name := range e.Params() {
					g, err := e.Grad(name)
					if err != nil {
						t.Fatal(err)
					}
					for _, v := range g.Data {
						if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
							t.Fatalf("gradient of %s is not finite", name)
						}
					}
				}
			}
		})
	}
}

// TestOptionsAndErrors covers bad options, bad batches and calls that
// must fail without panicking.
func TestOptionsAndErrors(t *testing.T) {
	tg := newTestGraph(13)
	tg.input("x", 3)
	tg.floats("w", []int64{2, 3})
	tg.floats("b", []int64{2})
	tg.node("Gemm", "fc", []string{"x", "w", "b"}, []string{"y"}, attrInt("transB", 1))
	tg.output("y")
	m := tg.model()

	for _, tt := range []struct {
		opts Options
		ok   bool
	}{
		{Options{Batch: 0}, false},
		{Options{Batch: 2, Mode: 5}, false},
		{Options{Batch: 2, LabelSmoothing: 1}, false},
		{Options{Batch: 2, LabelSmoothing: -0.1}, false},
		{Options{Batch: 2, DType: Float{}}, true},
		{Options{Batch: 2, DType: Float64}, true},
	} {
		e, err := Build(m, tt.opts)
		if (err == nil) != tt.ok {
			t.Errorf("Build(%+v): error %v, want success %t", tt.opts, err, tt.ok)
		}
		if e != nil {
			_ = e.Close()
		}
	}

	inf := mustBuild(t, m, Options{Batch: 2})
	if inf.Options().DType != Float32 {
		t.Errorf("default DType = %v, want float32", inf.Options().DType)
	}
	if sh, ok := inf.InputShape("x"); !ok || !slices.Equal(sh, []int{2, 3}) {
		t.Errorf("InputShape(x) = %v, %t", sh, ok)
	}
	errCases := map[string]func() error{
		"missing input": func() error { _, err := inf.Forward(map[string]Tensor{}); return err },
		"wrong shape":   func() error { _, err := inf.Forward(map[string]Tensor{"x": batch(1, 3, 3)}); return err },
		"short data": func() error {
			_, err := inf.Forward(map[string]Tensor{"x": {Shape: []int{2, 3}, Data: make([]float32, 5)}})
			return err
		},
		"unknown input": func() error {
			_, err := inf.Forward(map[string]Tensor{"x": batch(1, 2, 3), "z": batch(1, 2, 3)})
			return err
		},
		"step in inference": func() error { _, err := inf.Step(map[string]Tensor{"x": batch(1, 2, 3)}, []int{0, 1}); return err },
		"grad in inference": func() error { _, err := inf.Grad("w"); return err },
		"unknown param":     func() error { _, err := inf.Param("nope"); return err },
		"set wrong shape":   func() error { return inf.SetParam("w", batch(1, 3, 2)) },
		"unknown state":     func() error { return inf.SetState(map[string]Tensor{"nope": {Shape: []int{}, Data: []float32{1}}}) },
		"negative step":     func() error { return inf.SetState(map[string]Tensor{StepKey: {Shape: []int{}, Data: []float32{-1}}}) },
	}
	for name, f := range errCases {
		if err := f(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for _, p := range inf.params {
		if p.gradNode != nil {
			t.Errorf("inference engine has a gradient node for %q", p.name)
		}
	}

	tr := mustBuild(t, m, Options{Mode: Training, Batch: 2})
	if _, err := tr.Grad("w"); err == nil {
		t.Error("Grad before Step: no error")
	}
	for _, labels := range [][]int{{0}, {0, 2}, {-1, 0}} {
		if _, err := tr.Step(map[string]Tensor{"x": batch(1, 2, 3)}, labels); err == nil {
			t.Errorf("Step with labels %v: no error", labels)
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Forward(map[string]Tensor{"x": batch(1, 2, 3)}); !errors.Is(err, errClosed) {
		t.Errorf("Forward after Close: %v, want %v", err, errClosed)
	}
}

// TestParamRoundTrip checks Param, SetParam and that SetParam changes the
// computation.
func TestParamRoundTrip(t *testing.T) {
	tg := newTestGraph(13)
	tg.input("x", 3)
	tg.floats("w", []int64{2, 3})
	tg.node("MatMul", "mm", []string{"x", "wt"}, []string{"y"})
	tg.node("Transpose", "t", []string{"w"}, []string{"wt"})
	tg.output("y")
	if err := Check(tg.model()); err == nil || !strings.Contains(err.Error(), `node "t" (Transpose)`) {
		t.Errorf("Check of a graph with Transpose: %v", err)
	}

	tg = newTestGraph(13)
	tg.input("x", 3)
	tg.floats("w", []int64{3, 2})
	tg.node("MatMul", "mm", []string{"x", "w"}, []string{"y"})
	tg.output("y")
	e := mustBuild(t, tg.model(), Options{Batch: 1})
	w := Tensor{Shape: []int{3, 2}, Data: []float32{1, 2, 3, 4, 5, 6}}
	if err := e.SetParam("w", w); err != nil {
		t.Fatal(err)
	}
	got, err := e.Param("w")
	if err != nil || !slices.Equal(got.Data, w.Data) || !slices.Equal(got.Shape, w.Shape) {
		t.Fatalf("Param after SetParam = %v, %v", got, err)
	}
	y := forward(t, e, Tensor{Shape: []int{1, 3}, Data: []float32{1, 1, 1}}, "y")
	checkClose(t, "y", y.Data, []float64{9, 12}, 1e-6)
	got.Data[0] = 100 // a copy: the engine must not change
	y = forward(t, e, Tensor{Shape: []int{1, 3}, Data: []float32{1, 0, 0}}, "y")
	checkClose(t, "y", y.Data, []float64{1, 2}, 1e-6)
}

// TestModeString covers Mode's String.
func TestModeString(t *testing.T) {
	for m, want := range map[Mode]string{Inference: "inference", Training: "training", 7: "Mode(7)"} {
		if got := m.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(m), got, want)
		}
	}
}
