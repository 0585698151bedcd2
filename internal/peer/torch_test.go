package peer

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// Tolerances of the PyTorch reference's tests.
var (
	// torchRecordedTol compares the float64 reference with float32
	// computations of the same model (PyTorch's recorded outputs, ONNX
	// Runtime).
	torchRecordedTol = tolerance{abs: 1e-5, rel: 1e-5}
	// torchExactTol compares float64 computations that differ only in
	// rounding, after both are rounded to float32 for transport.
	torchExactTol = tolerance{abs: 1e-7, rel: 2.5e-7}
	// torchIdentityTol compares the identity configuration with ONNX
	// Runtime's plain Conv on dyadic inputs, which float32 sums exactly.
	torchIdentityTol = tolerance{abs: 1e-6, rel: 1e-6}
)

// runAll evaluates every job in one Python process and fails the test on an
// error of the whole request; each job's own error is left to the caller.
func runAll(t *testing.T, tr *TorchRunner, jobs []torchJob) []torchJobResult {
	t.Helper()
	res, err := tr.runJobs(jobs)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// worstTracker remembers the largest difference seen and where.
type worstTracker struct {
	diff  float64
	where string
}

// add records diff at where if it is the largest so far.
func (w *worstTracker) add(diff float64, where string) {
	if diff >= w.diff {
		w.diff, w.where = diff, where
	}
}

// String reports the largest difference.
func (w worstTracker) String() string {
	return fmt.Sprintf("%.3g (%s)", w.diff, w.where)
}

func TestTorchForeignFixtures(t *testing.T) {
	tr := Torch(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	models, err := filepath.Glob(filepath.Join(root, "testdata", "foreign", "*", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if len(models) == 0 {
		t.Fatalf("no fixtures under %s", filepath.Join(root, "testdata", "foreign"))
	}
	type fixture struct {
		name    string
		model   string
		outputs []string
		inputs  map[string]Tensor
		want    map[string]Tensor
	}
	var fixtures []fixture
	var jobs []torchJob
	for _, model := range models {
		dir := filepath.Dir(model)
		inNames, outNames, err := graphIO(model)
		if err != nil {
			t.Fatal(err)
		}
		set := filepath.Join(dir, "test_data_set_0")
		inputs, err := readDataSet(set, "input", inNames)
		if err != nil {
			t.Fatal(err)
		}
		want, err := readDataSet(set, "output", outNames)
		if err != nil {
			t.Fatal(err)
		}
		fixtures = append(fixtures, fixture{filepath.Base(dir), model, outNames, inputs, want})
		jobs = append(jobs,
			torchJob{model: model, inputs: inputs},
			torchJob{model: model, inputs: inputs, opts: TorchOptions{Float32: true}})
	}
	res := runAll(t, tr, jobs)

	var worst64, worst32 worstTracker
	checked := 0
	for i, f := range fixtures {
		r64, r32 := res[2*i], res[2*i+1]
		t.Run(f.name, func(t *testing.T) {
			for _, r := range []torchJobResult{r64, r32} {
				if r.err != nil {
					t.Fatal(r.err)
				}
			}
			for _, name := range f.outputs {
				d, err := compareTensor(r64.result.Outputs[name], f.want[name], torchRecordedTol)
				if err != nil {
					t.Errorf("float64 output %q against PyTorch's recorded output: %v", name, err)
				}
				worst64.add(d, f.name)
				d, err = compareTensor(r32.result.Outputs[name], f.want[name], torchRecordedTol)
				if err != nil {
					t.Errorf("float32 output %q against PyTorch's recorded output: %v", name, err)
				}
				worst32.add(d, f.name)
				checked++
			}
		})
	}
	t.Logf("checked %d fixture outputs against PyTorch's recorded outputs; worst difference float64 %v, float32 %v",
		checked, worst64, worst32)

	t.Run("agrees with ONNX Runtime", func(t *testing.T) {
		rt := ORT(t)
		var worst worstTracker
		agreed := 0
		for i, f := range fixtures {
			got, err := rt.Run(f.model, f.inputs)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range f.outputs {
				d, err := compareTensor(got[name], res[2*i].result.Outputs[name], torchRecordedTol)
				if err != nil {
					t.Errorf("%s: output %q: ONNX Runtime against the reference: %v", f.name, name, err)
				}
				worst.add(d, f.name)
				agreed++
			}
		}
		t.Logf("checked %d fixture outputs of ONNX Runtime against the reference; worst difference %v", agreed, worst)
	})
}

// plainCase is a hand-built model of default-domain operators.
type plainCase struct {
	name    string
	opset   int64
	nodes   []*onnxpb.NodeProto
	inits   []*onnxpb.TensorProto
	inputs  map[string]Tensor
	outputs []*onnxpb.ValueInfoProto
}

// floatOutputs declares float outputs of unknown shape.
func floatOutputs(names ...string) []*onnxpb.ValueInfoProto {
	out := make([]*onnxpb.ValueInfoProto, len(names))
	for i, n := range names {
		out[i] = anyValue(n, onnxpb.TensorProto_FLOAT)
	}
	return out
}

// model builds the case's model.
func (c plainCase) model() *onnxpb.ModelProto {
	g := &onnxpb.GraphProto{Node: c.nodes, Initializer: c.inits, Output: c.outputs}
	names := make([]string, 0, len(c.inputs))
	for n := range c.inputs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		g.Input = append(g.Input, floatValue(n, dims(c.inputs[n].Dims...)))
	}
	opset := c.opset
	if opset == 0 {
		opset = 13
	}
	return opsetModel(g, opset)
}

// plainCases returns models that exercise every plain operator the
// reference implements, with the attributes whose semantics are easy to get
// wrong (asymmetric pads, ceil_mode, count_include_pad, opset-dependent
// Softmax and Unsqueeze, ...).
func plainCases() []plainCase {
	rng := rand.New(rand.NewPCG(11, 12))
	x := func(d ...int64) map[string]Tensor { return map[string]Tensor{"x": randTensor(rng, 1, d...)} }
	w := func(name string, d ...int64) *onnxpb.TensorProto { return tensorInit(name, randTensor(rng, 0.5, d...)) }
	pool := func(op string, attrs ...*onnxpb.AttributeProto) []*onnxpb.NodeProto {
		return []*onnxpb.NodeProto{node(op, "pool", []string{"x"}, []string{"y"}, attrs...)}
	}
	conv := func(bias bool, attrs ...*onnxpb.AttributeProto) []*onnxpb.NodeProto {
		in := []string{"x", "w"}
		if bias {
			in = append(in, "b")
		}
		return []*onnxpb.NodeProto{node(opConv, "conv", in, []string{"y"}, attrs...)}
	}
	y := floatOutputs("y")
	return []plainCase{
		{name: "conv asymmetric pads stride dilation", inputs: x(1, 3, 9, 8), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 4, 3, 3, 2), w("b", 4)},
			nodes: conv(true, intsAttr("pads", 0, 1, 2, 0), intsAttr("strides", 2, 1), intsAttr("dilations", 1, 2))},
		{name: "conv group 2 no bias", inputs: x(2, 4, 6, 6), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 6, 2, 3, 3)},
			nodes: conv(false, intAttr("group", 2), intsAttr("pads", 1, 1, 1, 1))},
		{name: "conv depthwise", inputs: x(1, 3, 6, 6), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 3, 1, 3, 3), w("b", 3)},
			nodes: conv(true, intAttr("group", 3), intsAttr("strides", 2, 2))},
		{name: "conv SAME_UPPER", inputs: x(1, 2, 7, 7), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 3, 2, 4, 4), w("b", 3)},
			nodes: conv(true, stringAttr("auto_pad", "SAME_UPPER"), intsAttr("strides", 2, 2))},
		{name: "conv SAME_LOWER", inputs: x(1, 2, 7, 7), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 3, 2, 4, 4), w("b", 3)},
			nodes: conv(true, stringAttr("auto_pad", "SAME_LOWER"), intsAttr("strides", 2, 2))},
		{name: "conv VALID stride 3", inputs: x(1, 2, 10, 11), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 3, 2, 3, 3)},
			nodes: conv(false, stringAttr("auto_pad", "VALID"), intsAttr("strides", 3, 3))},
		{name: "conv 1d", inputs: x(1, 2, 10), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 3, 2, 3), w("b", 3)},
			nodes: conv(true, intsAttr("pads", 1, 2), intsAttr("strides", 2))},
		{name: "maxpool asymmetric pads", inputs: x(1, 2, 7, 6), outputs: y,
			nodes: pool("MaxPool", intsAttr("kernel_shape", 3, 2), intsAttr("pads", 1, 0, 0, 1), intsAttr("strides", 2, 2))},
		{name: "maxpool ceil_mode", inputs: x(1, 2, 8, 8), outputs: y,
			nodes: pool("MaxPool", intsAttr("kernel_shape", 3, 3), intsAttr("strides", 2, 2), intAttr("ceil_mode", 1))},
		{name: "maxpool ceil_mode window starting in the end pad", inputs: x(1, 1, 5, 5), outputs: y,
			nodes: pool("MaxPool", intsAttr("kernel_shape", 2, 2), intsAttr("strides", 2, 2),
				intsAttr("pads", 1, 1, 1, 1), intAttr("ceil_mode", 1))},
		{name: "maxpool dilations", inputs: x(1, 2, 9, 9), outputs: y,
			nodes: pool("MaxPool", intsAttr("kernel_shape", 3, 3), intsAttr("dilations", 2, 2), intsAttr("pads", 1, 1, 1, 1))},
		{name: "maxpool SAME_LOWER", inputs: x(1, 2, 7, 7), outputs: y,
			nodes: pool("MaxPool", intsAttr("kernel_shape", 2, 2), intsAttr("strides", 2, 2), stringAttr("auto_pad", "SAME_LOWER"))},
		{name: "averagepool pads ceil_mode excluding pads", inputs: x(1, 2, 7, 7), outputs: y,
			nodes: pool("AveragePool", intsAttr("kernel_shape", 3, 3), intsAttr("strides", 2, 2),
				intsAttr("pads", 1, 0, 1, 2), intAttr("ceil_mode", 1))},
		{name: "averagepool pads ceil_mode including pads", inputs: x(1, 2, 7, 7), outputs: y,
			nodes: pool("AveragePool", intsAttr("kernel_shape", 3, 3), intsAttr("strides", 2, 2),
				intsAttr("pads", 1, 0, 1, 2), intAttr("ceil_mode", 1), intAttr("count_include_pad", 1))},
		{name: "averagepool SAME_UPPER", inputs: x(1, 2, 7, 7), outputs: y,
			nodes: pool("AveragePool", intsAttr("kernel_shape", 2, 2), intsAttr("strides", 2, 2), stringAttr("auto_pad", "SAME_UPPER"))},
		{name: "global average pool", inputs: x(2, 3, 4, 5), outputs: y,
			nodes: pool("GlobalAveragePool")},
		{name: "gemm transposes alpha beta", inputs: x(3, 4), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 5, 3), w("c", 5)},
			nodes: []*onnxpb.NodeProto{node("Gemm", "gemm", []string{"x", "w", "c"}, []string{"y"},
				intAttr("transA", 1), intAttr("transB", 1), floatAttr("alpha", 0.5), floatAttr("beta", 2))}},
		{name: "matmul batched", inputs: x(2, 3, 4), outputs: y,
			inits: []*onnxpb.TensorProto{w("w", 4, 5)},
			nodes: []*onnxpb.NodeProto{node("MatMul", "mm", []string{"x", "w"}, []string{"y"})}},
		{name: "arithmetic broadcast", inputs: x(2, 3, 4), outputs: floatOutputs("add", "sub", "mul", "div"),
			inits: []*onnxpb.TensorProto{floatInit("b", []int64{3, 1}, 0.5, -2, 3)},
			nodes: []*onnxpb.NodeProto{
				node(opAdd, "add", []string{"x", "b"}, []string{"add"}),
				node("Sub", "sub", []string{"b", "x"}, []string{"sub"}),
				node(opMul, "mul", []string{"x", "b"}, []string{"mul"}),
				node("Div", "div", []string{"x", "b"}, []string{"div"}),
			}},
		{name: "batch normalization", inputs: x(2, 3, 4, 4), outputs: y,
			inits: []*onnxpb.TensorProto{w("scale", 3), w("bias", 3), w("mean", 3),
				floatInit("var", []int64{3}, 0.5, 1.5, 2)},
			nodes: []*onnxpb.NodeProto{node("BatchNormalization", "bn", []string{"x", "scale", "bias", "mean", "var"},
				[]string{"y"}, floatAttr("epsilon", 1e-3))}},
		{name: "dropout", inputs: x(2, 3), outputs: y,
			nodes: []*onnxpb.NodeProto{node("Dropout", "drop", []string{"x"}, []string{"y"})}},
		{name: "softmax opset 13 axis 1", inputs: x(2, 3, 4), outputs: floatOutputs("y", "logy"),
			nodes: []*onnxpb.NodeProto{
				node("Softmax", "sm", []string{"x"}, []string{"y"}, intAttr("axis", 1)),
				node("LogSoftmax", "lsm", []string{"x"}, []string{"logy"}),
			}},
		{name: "softmax opset 11 coerced to 2-d", opset: 11, inputs: x(2, 3, 4), outputs: floatOutputs("y", "logy"),
			nodes: []*onnxpb.NodeProto{
				node("Softmax", "sm", []string{"x"}, []string{"y"}, intAttr("axis", 1)),
				node("LogSoftmax", "lsm", []string{"x"}, []string{"logy"}),
			}},
		{name: "clip opset 13", inputs: x(3, 4), outputs: floatOutputs("both", "max_only"),
			inits: []*onnxpb.TensorProto{floatInit("lo", nil, -0.5), floatInit("hi", nil, 0.7)},
			nodes: []*onnxpb.NodeProto{
				node("Clip", "clip", []string{"x", "lo", "hi"}, []string{"both"}),
				node("Clip", "clip_hi", []string{"x", "", "hi"}, []string{"max_only"}),
			}},
		{name: "clip opset 6 attributes", opset: 6, inputs: x(3, 4), outputs: y,
			nodes: []*onnxpb.NodeProto{node("Clip", "clip", []string{"x"}, []string{"y"}, floatAttr("min", -0.3), floatAttr("max", 0.4))}},
		{name: "activations", inputs: x(3, 4), outputs: floatOutputs("relu", "leaky", "sigmoid", "tanh", "identity"),
			nodes: []*onnxpb.NodeProto{
				node(opRelu, "relu", []string{"x"}, []string{"relu"}),
				node("LeakyRelu", "leaky", []string{"x"}, []string{"leaky"}, floatAttr("alpha", 0.2)),
				node("Sigmoid", "sigmoid", []string{"x"}, []string{"sigmoid"}),
				node("Tanh", "tanh", []string{"x"}, []string{"tanh"}),
				node("Identity", "identity", []string{"x"}, []string{"identity"}),
			}},
		{name: "flatten", inputs: x(2, 3, 4, 5), outputs: floatOutputs("f2", "f0", "fneg"),
			nodes: []*onnxpb.NodeProto{
				node("Flatten", "f2", []string{"x"}, []string{"f2"}, intAttr("axis", 2)),
				node("Flatten", "f0", []string{"x"}, []string{"f0"}, intAttr("axis", 0)),
				node("Flatten", "fneg", []string{"x"}, []string{"fneg"}, intAttr("axis", -1)),
			}},
		{name: "reshape 0 and -1", inputs: x(2, 3, 4), outputs: y,
			inits: []*onnxpb.TensorProto{int64Init("shape", []int64{3}, 0, -1, 2)},
			nodes: []*onnxpb.NodeProto{node("Reshape", "reshape", []string{"x", "shape"}, []string{"y"})}},
		{name: "dynamic flatten opset 13", inputs: x(2, 3, 4, 4), outputs: floatOutputs("y", "shape"),
			inits: []*onnxpb.TensorProto{int64Init("zero", nil, 0), int64Init("axes", []int64{1}, 0)},
			nodes: []*onnxpb.NodeProto{
				node("Shape", "shape", []string{"x"}, []string{"s"}),
				node("Gather", "gather", []string{"s", "zero"}, []string{"batch"}, intAttr("axis", 0)),
				node("Unsqueeze", "unsqueeze", []string{"batch", "axes"}, []string{"batch1"}),
				node("Constant", "minus1", nil, []string{"m1"}, &onnxpb.AttributeProto{
					Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
					T: int64Init("", []int64{1}, -1)}),
				node("Concat", "concat", []string{"batch1", "m1"}, []string{"newshape"}, intAttr("axis", 0)),
				node("Reshape", "reshape", []string{"x", "newshape"}, []string{"y"}),
				node("Cast", "cast", []string{"newshape"}, []string{"shape"}, intAttr("to", int64(onnxpb.TensorProto_FLOAT))),
			}},
		{name: "dynamic flatten opset 11", opset: 11, inputs: x(2, 3, 4, 4), outputs: y,
			inits: []*onnxpb.TensorProto{int64Init("zero", nil, 0), int64Init("m1", []int64{1}, -1)},
			nodes: []*onnxpb.NodeProto{
				node("Shape", "shape", []string{"x"}, []string{"s"}),
				node("Gather", "gather", []string{"s", "zero"}, []string{"batch"}, intAttr("axis", 0)),
				node("Unsqueeze", "unsqueeze", []string{"batch"}, []string{"batch1"}, intsAttr("axes", 0)),
				node("Concat", "concat", []string{"batch1", "m1"}, []string{"newshape"}, intAttr("axis", 0)),
				node("Reshape", "reshape", []string{"x", "newshape"}, []string{"y"}),
			}},
		{name: "squeeze and unsqueeze opset 13", inputs: x(2, 1, 3, 1), outputs: floatOutputs("axis1", "all", "unsq"),
			inits: []*onnxpb.TensorProto{int64Init("one", []int64{1}, 1), int64Init("ends", []int64{2}, 0, -1)},
			nodes: []*onnxpb.NodeProto{
				node("Squeeze", "sq1", []string{"x", "one"}, []string{"axis1"}),
				node("Squeeze", "sqall", []string{"x"}, []string{"all"}),
				node("Unsqueeze", "unsq", []string{"all", "ends"}, []string{"unsq"}),
			}},
		{name: "squeeze opset 11", opset: 11, inputs: x(2, 1, 3, 1), outputs: y,
			nodes: []*onnxpb.NodeProto{node("Squeeze", "sq", []string{"x"}, []string{"y"}, intsAttr("axes", -1))}},
		{name: "cast truncates", inputs: map[string]Tensor{"x": randTensor(rng, 3, 4, 5)}, outputs: floatOutputs("y", "b"),
			nodes: []*onnxpb.NodeProto{
				node("Cast", "toint", []string{"x"}, []string{"i"}, intAttr("to", int64(onnxpb.TensorProto_INT64))),
				node("Cast", "tofloat", []string{"i"}, []string{"y"}, intAttr("to", int64(onnxpb.TensorProto_FLOAT))),
				node("Cast", "tobool", []string{"i"}, []string{"bool"}, intAttr("to", int64(onnxpb.TensorProto_BOOL))),
				node("Cast", "boolfloat", []string{"bool"}, []string{"b"}, intAttr("to", int64(onnxpb.TensorProto_FLOAT))),
			}},
		{name: "constant", inputs: x(2, 3), outputs: floatOutputs("y", "z"),
			nodes: []*onnxpb.NodeProto{
				node("Constant", "c", nil, []string{"c"}, &onnxpb.AttributeProto{
					Name: proto.String("value_floats"), Type: onnxpb.AttributeProto_FLOATS.Enum(), Floats: []float32{1, 2, 3}}),
				node(opAdd, "add", []string{"x", "c"}, []string{"y"}),
				node("Constant", "t", nil, []string{"t"}, &onnxpb.AttributeProto{
					Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
					T: floatInit("", []int64{2, 1}, -1, 4)}),
				node(opMul, "mul", []string{"x", "t"}, []string{"z"}),
			}},
		{name: "shape start end opset 15", opset: 15, inputs: x(2, 3, 4, 5),
			outputs: []*onnxpb.ValueInfoProto{anyValue("mid", onnxpb.TensorProto_INT64), anyValue("all", onnxpb.TensorProto_INT64)},
			nodes: []*onnxpb.NodeProto{
				node("Shape", "mid", []string{"x"}, []string{"mid"}, intAttr("start", 1), intAttr("end", -1)),
				node("Shape", "all", []string{"x"}, []string{"all"}),
			}},
		{name: "gather negative 2-d indices", inputs: x(3, 5), outputs: y,
			inits: []*onnxpb.TensorProto{int64Init("idx", []int64{2, 2}, 0, -1, 2, 1)},
			nodes: []*onnxpb.NodeProto{node("Gather", "gather", []string{"x", "idx"}, []string{"y"}, intAttr("axis", 1))}},
		{name: "concat negative axis", inputs: x(2, 3), outputs: y,
			inits: []*onnxpb.TensorProto{w("z", 2, 2)},
			nodes: []*onnxpb.NodeProto{node("Concat", "concat", []string{"x", "z", "x"}, []string{"y"}, intAttr("axis", -1))}},
	}
}

func TestTorchPlainOpsAgainstORT(t *testing.T) {
	tr := Torch(t)
	rt := ORT(t)
	cases := plainCases()
	dir := t.TempDir()
	paths := make([]string, len(cases))
	jobs := make([]torchJob, len(cases))
	for i, c := range cases {
		paths[i] = writeModel(t, dir, fmt.Sprintf("plain%d.onnx", i), c.model())
		jobs[i] = torchJob{model: paths[i], inputs: c.inputs}
	}
	res := runAll(t, tr, jobs)
	var worst worstTracker
	checked, values := 0, 0
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if res[i].err != nil {
				t.Fatal(res[i].err)
			}
			want, err := rt.Run(paths[i], c.inputs)
			if err != nil {
				t.Fatal(err)
			}
			for _, out := range c.outputs {
				name := out.GetName()
				got, ok := res[i].result.Outputs[name]
				if !ok {
					t.Fatalf("output %q missing", name)
				}
				d, err := compareTensor(got, want[name], torchRecordedTol)
				if err != nil {
					t.Errorf("output %q: reference against ONNX Runtime: %v", name, err)
				}
				worst.add(d, c.name+"/"+name)
				checked++
				values += len(got.Data)
			}
		})
	}
	t.Logf("checked %d outputs (%d values) of %d plain-operator models against ONNX Runtime; worst difference %v",
		checked, values, len(cases), worst)
}

// conformanceRoot is where Debian's libonnx-testdata puts ONNX's backend
// test cases.
const conformanceRoot = "/usr/include/onnx/backend/test/data"

// referenceOps are the default-domain operators torch_ref.py implements.
var referenceOps = map[string]bool{
	"Add": true, "AveragePool": true, "BatchNormalization": true, "Cast": true,
	"Clip": true, "Concat": true, "Constant": true, "Conv": true, "Div": true,
	"Dropout": true, "Flatten": true, "Gather": true, "Gemm": true,
	"GlobalAveragePool": true, "Identity": true, "LeakyRelu": true,
	"LogSoftmax": true, "MatMul": true, "MaxPool": true, "Mul": true,
	"Relu": true, "Reshape": true, "Shape": true, "Sigmoid": true,
	"Softmax": true, "Squeeze": true, "Sub": true, "Tanh": true, "Unsqueeze": true,
}

// conformanceUnsupported lists the backend test cases of implemented
// operators that use what the reference deliberately leaves out.
var conformanceUnsupported = map[string]string{
	"test_batchnorm_epsilon_training_mode":            "training-mode BatchNormalization",
	"test_batchnorm_example_training_mode":            "training-mode BatchNormalization",
	"test_maxpool_with_argmax_2d_precomputed_pads":    "MaxPool's Indices output",
	"test_maxpool_with_argmax_2d_precomputed_strides": "MaxPool's Indices output",
	"test_training_dropout":                           "training-mode Dropout",
	"test_training_dropout_default":                   "training-mode Dropout",
	"test_training_dropout_default_mask":              "training-mode Dropout",
	"test_training_dropout_mask":                      "training-mode Dropout",
	"test_training_dropout_zero_ratio":                "training-mode Dropout",
	"test_training_dropout_zero_ratio_mask":           "training-mode Dropout",
}

// conformanceTypes are the element types the conformance test exchanges;
// each value fits float32 exactly in the test data that uses it.
var conformanceTypes = map[onnxpb.TensorProto_DataType]bool{
	onnxpb.TensorProto_FLOAT: true,
	onnxpb.TensorProto_INT64: true, onnxpb.TensorProto_INT32: true,
	onnxpb.TensorProto_BOOL: true,
}

// usesOnlyReferenceOps reports whether a backend test's model is one the
// reference can run: default-domain implemented operators, and inputs and
// outputs of the exchanged element types.
func usesOnlyReferenceOps(m *onnxpb.ModelProto) bool {
	for _, n := range m.GetGraph().GetNode() {
		if (n.GetDomain() != "" && n.GetDomain() != "ai.onnx") || !referenceOps[n.GetOpType()] {
			return false
		}
	}
	for _, vi := range append(slices.Clone(m.GetGraph().GetInput()), m.GetGraph().GetOutput()...) {
		tt := vi.GetType().GetTensorType()
		if tt == nil || !conformanceTypes[onnxpb.TensorProto_DataType(tt.GetElemType())] {
			return false
		}
	}
	return true
}

// readAnyTensorProto decodes a serialized TensorProto of an exchanged
// element type into float32 values.
func readAnyTensorProto(path string) (Tensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Tensor{}, err
	}
	var tp onnxpb.TensorProto
	if err := proto.Unmarshal(b, &tp); err != nil {
		return Tensor{}, fmt.Errorf("decoding %s: %w", path, err)
	}
	dt := onnxpb.TensorProto_DataType(tp.GetDataType())
	if dt == onnxpb.TensorProto_FLOAT {
		return readTensorProto(path)
	}
	n, err := numElements(tp.GetDims())
	if err != nil {
		return Tensor{}, fmt.Errorf("%s: %w", path, err)
	}
	var vals []float64
	raw := tp.GetRawData()
	switch dt {
	case onnxpb.TensorProto_INT64:
		if len(raw) > 0 {
			for i := 0; i+8 <= len(raw); i += 8 {
				vals = append(vals, float64(int64(leUint(raw[i:i+8]))))
			}
		} else {
			for _, v := range tp.GetInt64Data() {
				vals = append(vals, float64(v))
			}
		}
	case onnxpb.TensorProto_INT32:
		if len(raw) > 0 {
			for i := 0; i+4 <= len(raw); i += 4 {
				vals = append(vals, float64(int32(leUint(raw[i:i+4]))))
			}
		} else {
			for _, v := range tp.GetInt32Data() {
				vals = append(vals, float64(v))
			}
		}
	case onnxpb.TensorProto_BOOL:
		if len(raw) > 0 {
			for _, v := range raw {
				vals = append(vals, float64(v))
			}
		} else {
			for _, v := range tp.GetInt32Data() {
				vals = append(vals, float64(v))
			}
		}
	default:
		return Tensor{}, fmt.Errorf("%s: data type %v is not supported here", path, dt)
	}
	if len(vals) != n {
		return Tensor{}, fmt.Errorf("%s: %d values, shape %v needs %d", path, len(vals), tp.GetDims(), n)
	}
	return Tensor{Dims: tp.GetDims(), Data: toFloat32(vals)}, nil
}

// leUint reads a little-endian unsigned integer of len(b) bytes.
func leUint(b []byte) uint64 {
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

func TestTorchONNXConformance(t *testing.T) {
	tr := Torch(t)
	if _, err := os.Stat(conformanceRoot); err != nil {
		missing(t, "onnx backend test data: %v; install Debian package libonnx-testdata", err)
	}
	type testCase struct {
		name    string
		model   string
		outputs []string
		want    map[string]Tensor
	}
	var cases []testCase
	var jobs []torchJob
	skipped := 0
	for _, suite := range []string{"node", "pytorch-converted", "pytorch-operator", "simple"} {
		models, err := filepath.Glob(filepath.Join(conformanceRoot, suite, "*", "model.onnx"))
		if err != nil {
			t.Fatal(err)
		}
		for _, path := range models {
			name := filepath.Base(filepath.Dir(path))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var m onnxpb.ModelProto
			if err := proto.Unmarshal(b, &m); err != nil {
				t.Fatalf("decoding %s: %v", path, err)
			}
			if !usesOnlyReferenceOps(&m) {
				continue
			}
			if reason, ok := conformanceUnsupported[name]; ok {
				t.Logf("%s/%s: not run (%s)", suite, name, reason)
				skipped++
				continue
			}
			inNames, outNames, err := graphIO(path)
			if err != nil {
				t.Fatal(err)
			}
			sets, err := filepath.Glob(filepath.Join(filepath.Dir(path), "test_data_set_*"))
			if err != nil {
				t.Fatal(err)
			}
			for _, set := range sets {
				inputs, err := readAnyDataSet(set, "input", inNames)
				if err != nil {
					t.Fatal(err)
				}
				want, err := readAnyDataSet(set, "output", outNames)
				if err != nil {
					t.Fatal(err)
				}
				cases = append(cases, testCase{suite + "/" + name + "/" + filepath.Base(set), path, outNames, want})
				jobs = append(jobs, torchJob{model: path, inputs: inputs})
			}
		}
	}
	if len(cases) < 100 {
		t.Fatalf("found %d applicable backend test cases under %s, want at least 100", len(cases), conformanceRoot)
	}
	res := runAll(t, tr, jobs)
	var worst worstTracker
	checked := 0
	for i, c := range cases {
		if res[i].err != nil {
			t.Errorf("%s: %v", c.name, res[i].err)
			continue
		}
		for _, name := range c.outputs {
			d, err := compareTensor(res[i].result.Outputs[name], c.want[name], torchRecordedTol)
			if err != nil {
				t.Errorf("%s: output %q: %v", c.name, name, err)
			}
			worst.add(d, c.name)
			checked++
		}
	}
	t.Logf("checked %d outputs of %d ONNX backend test cases (%d left out as unsupported); worst difference %v",
		checked, len(cases), skipped, worst)
}

// readAnyDataSet is readDataSet for tensors of any exchanged element type.
func readAnyDataSet(dir, kind string, names []string) (map[string]Tensor, error) {
	out := make(map[string]Tensor, len(names))
	for i, name := range names {
		t, err := readAnyTensorProto(filepath.Join(dir, fmt.Sprintf("%s_%d.pb", kind, i)))
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// geomCase is an input and kernel size with a convolution geometry.
type geomCase struct {
	name   string
	x, w   []int64
	geom   convGeom
	noBias bool
}

// geomCases covers asymmetric pads, strides, dilations, 1x1 and
// rectangular kernels, every auto_pad and missing biases.
var geomCases = []geomCase{
	{name: "3x3 pads 1", x: []int64{2, 3, 6, 6}, w: []int64{4, 3, 3, 3}, geom: convGeom{pads: []int64{1, 1, 1, 1}}},
	{name: "asymmetric pads", x: []int64{2, 3, 6, 7}, w: []int64{4, 3, 3, 3}, geom: convGeom{pads: []int64{0, 2, 1, 0}}},
	{name: "stride 2x3", x: []int64{1, 3, 9, 10}, w: []int64{4, 3, 3, 3},
		geom: convGeom{pads: []int64{1, 1, 1, 1}, strides: []int64{2, 3}}},
	{name: "dilation 2x1 no bias", x: []int64{1, 3, 9, 8}, w: []int64{4, 3, 3, 2},
		geom: convGeom{pads: []int64{2, 1, 2, 0}, dilations: []int64{2, 1}}, noBias: true},
	{name: "1x1 kernel no bias", x: []int64{2, 3, 5, 5}, w: []int64{4, 3, 1, 1}, noBias: true},
	{name: "2x3 kernel stride dilation asymmetric pads no bias", x: []int64{1, 3, 10, 9}, w: []int64{4, 3, 2, 3},
		geom: convGeom{pads: []int64{1, 0, 0, 2}, strides: []int64{2, 1}, dilations: []int64{1, 2}, kernel: true}, noBias: true},
	{name: "SAME_UPPER even kernel stride 2", x: []int64{1, 3, 7, 7}, w: []int64{4, 3, 2, 2},
		geom: convGeom{autoPad: "SAME_UPPER", strides: []int64{2, 2}}},
	{name: "SAME_LOWER even kernel stride 2", x: []int64{1, 3, 7, 7}, w: []int64{4, 3, 2, 2},
		geom: convGeom{autoPad: "SAME_LOWER", strides: []int64{2, 2}}},
	{name: "VALID stride 2", x: []int64{1, 3, 7, 8}, w: []int64{4, 3, 3, 3},
		geom: convGeom{autoPad: "VALID", strides: []int64{2, 2}}},
}

// TestTorchDecoupledIdentity checks DCNET.md's identity: magnitude linear,
// angular cos, weighted linear, alpha 1 gives conv(X, W) + b. ONNX Runtime
// runs the plain Conv on small dyadic numbers, which float32 sums exactly,
// so the difference measures the reference alone.
func TestTorchDecoupledIdentity(t *testing.T) {
	tr := Torch(t)
	rt := ORT(t)
	rng := rand.New(rand.NewPCG(21, 22))
	dir := t.TempDir()
	var jobs []torchJob
	var plains []string
	inputs := make([]map[string]Tensor, len(geomCases))
	for i, gc := range geomCases {
		x := dyadicTensor(rng, 8, 4, gc.x...)
		w := dyadicTensor(rng, 8, 8, gc.w...)
		inits := []*onnxpb.TensorProto{tensorInit("w", w)}
		in := []string{"x", "w"}
		if !gc.noBias {
			inits = append(inits, tensorInit("b", dyadicTensor(rng, 8, 8, gc.w[0])))
			in = append(in, "b")
		}
		geomAttrs := gc.geom.attrs(gc.w[2], gc.w[3])
		graph := func(n *onnxpb.NodeProto) *onnxpb.GraphProto {
			return &onnxpb.GraphProto{Node: []*onnxpb.NodeProto{n}, Initializer: inits,
				Input: []*onnxpb.ValueInfoProto{floatValue("x", dims(gc.x...))}, Output: floatOutputs("y")}
		}
		dc := dcNode(opDecoupled, "dc", in, "y", append(geomAttrs, defaultConfig().attrs()...)...)
		plain := node(opConv, "conv", in, []string{"y"}, geomAttrs...)
		inputs[i] = map[string]Tensor{"x": x}
		jobs = append(jobs, torchJob{model: writeModel(t, dir, fmt.Sprintf("dc%d.onnx", i), dcModel(graph(dc))), inputs: inputs[i]})
		plains = append(plains, writeModel(t, dir, fmt.Sprintf("plain%d.onnx", i), graphModel(graph(plain))))
	}
	res := runAll(t, tr, jobs)
	var worst worstTracker
	values := 0
	for i, gc := range geomCases {
		t.Run(gc.name, func(t *testing.T) {
			if res[i].err != nil {
				t.Fatal(res[i].err)
			}
			want, err := rt.Run(plains[i], inputs[i])
			if err != nil {
				t.Fatal(err)
			}
			got := res[i].result.Outputs["y"]
			d, err := compareTensor(got, want["y"], torchIdentityTol)
			if err != nil {
				t.Errorf("identity configuration against ONNX Runtime's Conv: %v", err)
			}
			worst.add(d, gc.name)
			values += len(got.Data)
		})
	}
	t.Logf("checked the identity configuration on %d geometries (%d values) against ONNX Runtime's Conv; worst difference %v",
		len(geomCases), values, worst)
}

// TestTorchDecoupledHand checks sphere x cos (alpha P/N) and linear x cos
// with weighted none (alpha P) on tiny cases worked out by hand.
//
// X (1x1x3x3) = [1 2 0; 0 1 2; 2 0 1], W (1x1x2x2) = [3 0; 0 4], eps = 1e-4
// (as float32: 9.99999975e-5), so |w| = sqrt(25 + eps) = 5.00001.
//
// No padding, stride 1: the four patches are [1 2; 0 1], [2 0; 1 2],
// [0 1; 2 0], [1 2; 0 1], with <w, x> = 7, 14, 0, 7 and |x|^2 = 6, 9, 5, 6,
// so N = sqrt(|x|^2 + eps) = 2.4495102, 3.0000167, 2.2360903, 2.4495102 and
// cos = <w, x> / (|w| N) = 0.5715417, 0.9333263, 0, 0.5715417.
// With alpha 2 and bias 0.5:
//
//	sphere: 2 cos + 0.5        = 1.6430834, 2.3666526, 0.5, 1.6430834
//	linear: 2 <w, x> / |w| + 0.5 = 3.2999944, 6.0999888, 0.5, 3.2999944
//
// Pads (top 1, left 0, bottom 0, right 1), stride 2, no bias, alpha 1: the
// padded input's rows are [0 0 0 0], [1 2 0 0], [0 1 2 0], [2 0 1 0]; the
// patches [0 0; 1 2], [0 0; 0 0], [0 1; 2 0], [2 0; 1 0] give <w, x> = 8, 0,
// 0, 6 and |x|^2 = 5, 0, 5, 5 (N = 2.2360903, 0.01, 2.2360903, 2.2360903):
//
//	sphere: 8 / (5.00001 * 2.2360903) = 0.7155332, 0, 0, 0.5366499
//	linear: 8 / 5.00001 = 1.5999968, 0, 0, 6 / 5.00001 = 1.1999976
//
// Dilation 2, no pads: one patch, the corners [1 0; 2 1]: <w, x> = 7,
// |x|^2 = 6, so sphere 0.5715417 and linear 7 / 5.00001 = 1.3999972.
func TestTorchDecoupledHand(t *testing.T) {
	tr := Torch(t)
	x := Tensor{Dims: []int64{1, 1, 3, 3}, Data: []float32{1, 2, 0, 0, 1, 2, 2, 0, 1}}
	w := floatInit("w", []int64{1, 1, 2, 2}, 3, 0, 0, 4)
	sphere := dcConfig{magnitude: "sphere", angular: "cos", weighted: "none", alpha: 2, beta: 0.5, k: 0.3, rho: 1, eps: 1e-4}
	linear := sphere
	linear.magnitude = "linear"
	unit := func(c dcConfig) dcConfig { c.alpha = 1; return c }
	tests := []struct {
		name string
		cfg  dcConfig
		geom convGeom
		bias bool
		want []float32
		dims []int64
	}{
		{name: "sphere cos", cfg: sphere, bias: true, dims: []int64{1, 1, 2, 2},
			want: []float32{1.6430834, 2.3666526, 0.5, 1.6430834}},
		{name: "linear cos none", cfg: linear, bias: true, dims: []int64{1, 1, 2, 2},
			want: []float32{3.2999944, 6.0999888, 0.5, 3.2999944}},
		{name: "sphere cos asymmetric pads stride 2 no bias", cfg: unit(sphere), dims: []int64{1, 1, 2, 2},
			geom: convGeom{pads: []int64{1, 0, 0, 1}, strides: []int64{2, 2}},
			want: []float32{0.7155332, 0, 0, 0.5366499}},
		{name: "linear cos none asymmetric pads stride 2 no bias", cfg: unit(linear), dims: []int64{1, 1, 2, 2},
			geom: convGeom{pads: []int64{1, 0, 0, 1}, strides: []int64{2, 2}},
			want: []float32{1.5999968, 0, 0, 1.1999976}},
		{name: "sphere cos dilation 2", cfg: unit(sphere), dims: []int64{1, 1, 1, 1},
			geom: convGeom{dilations: []int64{2, 2}}, want: []float32{0.5715417}},
		{name: "linear cos none dilation 2", cfg: unit(linear), dims: []int64{1, 1, 1, 1},
			geom: convGeom{dilations: []int64{2, 2}}, want: []float32{1.3999972}},
	}
	dir := t.TempDir()
	jobs := make([]torchJob, len(tests))
	for i, tt := range tests {
		in := []string{"x", "w"}
		inits := []*onnxpb.TensorProto{w}
		if tt.bias {
			in = append(in, "b")
			inits = append(inits, floatInit("b", []int64{1}, 0.5))
		}
		g := &onnxpb.GraphProto{
			Node:        []*onnxpb.NodeProto{dcNode(opDecoupled, "dc", in, "y", append(tt.geom.attrs(2, 2), tt.cfg.attrs()...)...)},
			Initializer: inits,
			Input:       []*onnxpb.ValueInfoProto{floatValue("x", dims(1, 1, 3, 3))},
			Output:      floatOutputs("y"),
		}
		jobs[i] = torchJob{model: writeModel(t, dir, fmt.Sprintf("hand%d.onnx", i), dcModel(g)), inputs: map[string]Tensor{"x": x}}
	}
	res := runAll(t, tr, jobs)
	// The hand-computed values carry 8 significant digits.
	handTol := tolerance{abs: 1e-7, rel: 1e-7}
	var worst worstTracker
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res[i].err != nil {
				t.Fatal(res[i].err)
			}
			d, err := compareTensor(res[i].result.Outputs["y"], Tensor{Dims: tt.dims, Data: tt.want}, handTol)
			if err != nil {
				t.Error(err)
			}
			worst.add(d, tt.name)
		})
	}
	t.Logf("checked %d hand-computed cases; worst difference %v", len(tests), worst)
}

// gridNode is one decoupled node of the grid test's models.
type gridNode struct {
	name  string
	cfg   dcConfig
	in    dcInputs
	names []string
}

// TestTorchDecoupledGrid runs every magnitude x angular x weighting, with
// fixed and learnable rho, on every geometry of geomCases, against the
// direct-loop float64 reference of this package, outputs and statistics.
func TestTorchDecoupledGrid(t *testing.T) {
	tr := Torch(t)
	rng := rand.New(rand.NewPCG(31, 32))
	dir := t.TempDir()
	type model struct {
		x, w  Tensor
		gc    geomCase
		nodes []gridNode
	}
	var models []model
	var jobs []torchJob
	for i, gc := range geomCases {
		x := randTensor(rng, 1, gc.x...)
		w := randTensor(rng, 0.5, gc.w...)
		cout := int(gc.w[0])
		opt := dcInputs{scale: positive(rng, cout)}
		if !gc.noBias {
			opt.bias = randTensor(rng, 0.5, gc.w[0]).Data
		}
		// rho at the median patch norm puts entries on both sides of it.
		probe := naiveDecoupled(x, w, dcInputs{}, dcConfig{magnitude: "sphere", angular: "cos", weighted: "none", alpha: 1, eps: 1e-4}, gc.geom)
		rho := median(probe.n)
		learn := opt
		learn.rhoV = []float32{0.8, 0.95, 1.05, 1.2}[:cout]
		learn.rhoScale = proto.Float32(float32(rho))

		inits := []*onnxpb.TensorProto{tensorInit("w", w),
			floatInit("alpha", []int64{int64(cout)}, opt.scale...),
			floatInit("rho_v", []int64{int64(cout)}, learn.rhoV...),
			floatInit("rho_scale", nil, *learn.rhoScale)}
		bias := ""
		if opt.bias != nil {
			inits = append(inits, floatInit("b", []int64{int64(cout)}, opt.bias...))
			bias = "b"
		}
		m := model{x: x, w: w, gc: gc}
		g := &onnxpb.GraphProto{Initializer: inits, Input: []*onnxpb.ValueInfoProto{floatValue("x", dims(gc.x...))}}
		geomAttrs := gc.geom.attrs(gc.w[2], gc.w[3])
		add := func(cfg dcConfig, in dcInputs, names []string, suffix string) {
			name := cfg.String() + suffix
			m.nodes = append(m.nodes, gridNode{name: name, cfg: cfg, in: in, names: names})
			g.Node = append(g.Node, dcNode(opDecoupled, name, names, name, append(slices.Clone(geomAttrs), cfg.attrs()...)...))
			g.Output = append(g.Output, anyValue(name, onnxpb.TensorProto_FLOAT))
		}
		for _, mag := range magnitudes {
			for _, ang := range angulars {
				for _, wt := range weightings {
					cfg := dcConfig{magnitude: mag, angular: ang, weighted: wt, alpha: 1.25, beta: 0.4, k: 0.3, rho: rho, eps: 1e-3}
					if wt == "none" && ang == "cos" {
						// The plain form: no Alpha input.
						plain := dcInputs{bias: opt.bias}
						add(cfg, plain, []string{"x", "w", bias}, "")
						continue
					}
					add(cfg, opt, []string{"x", "w", bias, "alpha"}, "")
					if needsRho(mag) {
						cfg.rho = 1000 // ignored: RhoV and RhoScale are given
						add(cfg, learn, []string{"x", "w", bias, "alpha", "rho_v", "rho_scale"}, "_learn")
					}
				}
			}
		}
		models = append(models, m)
		jobs = append(jobs, torchJob{model: writeModel(t, dir, fmt.Sprintf("grid%d.onnx", i), dcModel(g)),
			inputs: map[string]Tensor{"x": x}})
	}
	res := runAll(t, tr, jobs)
	var worst, worstStats worstTracker
	checked, values := 0, 0
	for i, m := range models {
		t.Run(m.gc.name, func(t *testing.T) {
			if res[i].err != nil {
				t.Fatal(res[i].err)
			}
			for _, n := range m.nodes {
				ref := naiveDecoupled(m.x, m.w, n.in, n.cfg, m.gc.geom)
				got := res[i].result.Outputs[n.name]
				d, err := compareTensor(got, ref.tensor(), torchExactTol)
				if err != nil {
					t.Errorf("node %s: %v", n.name, err)
				}
				worst.add(d, m.gc.name+"/"+n.name)
				st, ok := res[i].result.Stats[n.name]
				if !ok {
					t.Errorf("node %s: no statistics", n.name)
					continue
				}
				ws := naiveStats(ref)
				sd := statsDiff(st, ws)
				if sd > 1e-9 {
					t.Errorf("node %s: statistics %+v, want %+v", n.name, st, ws)
				}
				worstStats.add(sd, m.gc.name+"/"+n.name)
				if needsRho(n.cfg.magnitude) && (st.BelowRho < 0.1 || st.BelowRho > 0.9) {
					t.Errorf("node %s: %.2f of the entries below rho, want 10-90 %%", n.name, st.BelowRho)
				}
				checked++
				values += len(got.Data)
			}
		})
	}
	t.Logf("checked %d decoupled nodes (%d values) on %d geometries against the direct-loop reference; worst difference %v; worst statistics difference %v",
		checked, values, len(models), worst, worstStats)
}

// median returns the median of v.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// naiveStats computes DecoupledStats from the direct-loop reference.
func naiveStats(r dcRef) DecoupledStats {
	bN, cout, oh, ow := int(r.dims[0]), int(r.dims[1]), int(r.dims[2]), int(r.dims[3])
	st := DecoupledStats{Entries: int64(len(r.cos)), MinAbsCos: math.Inf(1), MinN: math.Inf(1), MaxN: math.Inf(-1)}
	var below, above int
	for b := range bN {
		for c := range cout {
			for l := range oh * ow {
				n := r.n[b*oh*ow+l]
				ac := math.Abs(r.cos[(b*cout+c)*oh*ow+l])
				st.CosQuartiles[min(3, int(math.Floor(ac*4)))]++
				st.MinAbsCos, st.MaxAbsCos = math.Min(st.MinAbsCos, ac), math.Max(st.MaxAbsCos, ac)
				st.MinN, st.MaxN = math.Min(st.MinN, n), math.Max(st.MaxN, n)
				if r.rho != nil {
					if n <= r.rho[c] {
						below++
					} else {
						above++
					}
				}
			}
		}
	}
	total := float64(len(r.cos))
	for i := range st.CosQuartiles {
		st.CosQuartiles[i] /= total
	}
	st.BelowRho, st.AboveRho = float64(below)/total, float64(above)/total
	return st
}

// statsDiff returns the largest difference between two statistics' numbers
// (relative for N), or +Inf when the entry counts differ.
func statsDiff(got, want DecoupledStats) float64 {
	if got.Entries != want.Entries {
		return math.Inf(1)
	}
	d := math.Max(math.Abs(got.BelowRho-want.BelowRho), math.Abs(got.AboveRho-want.AboveRho))
	for i := range got.CosQuartiles {
		d = math.Max(d, math.Abs(got.CosQuartiles[i]-want.CosQuartiles[i]))
	}
	d = math.Max(d, math.Abs(got.MinAbsCos-want.MinAbsCos))
	d = math.Max(d, math.Abs(got.MaxAbsCos-want.MaxAbsCos))
	d = math.Max(d, math.Abs(got.MinN-want.MinN)/want.MinN)
	d = math.Max(d, math.Abs(got.MaxN-want.MaxN)/want.MaxN)
	return d
}

// TestTorchMagnitudes checks each magnitude function at one location with a
// known N against DCNET.md's table evaluated here, with rho from the
// attribute on either side of N, learnable rho straddling N, and attribute
// defaults.
//
// X (1x1x2x2) = [3 0; 0 4] and a 2x2 kernel without padding give one
// location with N = sqrt(25 + eps). Channel 0 filter [1 0; 0 1] gives
// cos = 7 / (sqrt(2 + eps) N), channel 1 filter [1 0; 0 -1] gives
// cos = -1 / (sqrt(2 + eps) N); with angular cos and weighting none,
// y_c = h(N, rho_c) cos_c.
func TestTorchMagnitudes(t *testing.T) {
	tr := Torch(t)
	eps := float64(float32(1e-4))
	n := math.Sqrt(25 + eps)
	wn := math.Sqrt(2 + eps)
	cos := [2]float64{7 / (wn * n), -1 / (wn * n)}
	type variant struct {
		suffix      string
		alpha, beta float64
		rho         [2]float64 // per channel
		learn       bool
		defaults    bool // write only magnitude, angular and rho
		below       float64
	}
	learnRho := [2]float64{(1*1 + rhoVEps) * 4, (1.5*1.5 + rhoVEps) * 4} // 4.0004, 9.0004
	variants := []variant{
		{suffix: "rho4", alpha: 1.5, beta: 0.25, rho: [2]float64{4, 4}, below: 0},
		{suffix: "rho6", alpha: 1.5, beta: 0.25, rho: [2]float64{6, 6}, below: 1},
		{suffix: "learn", alpha: 1.5, beta: 0.25, rho: learnRho, learn: true, below: 0.5},
		{suffix: "defaults", alpha: 1, beta: 0.5, rho: [2]float64{4, 4}, defaults: true, below: 0},
	}
	g := &onnxpb.GraphProto{
		Initializer: []*onnxpb.TensorProto{
			floatInit("w", []int64{2, 1, 2, 2}, 1, 0, 0, 1, 1, 0, 0, -1),
			floatInit("rho_v", []int64{2}, 1, 1.5),
			floatInit("rho_scale", nil, 4),
		},
		Input: []*onnxpb.ValueInfoProto{floatValue("x", dims(1, 1, 2, 2))},
	}
	for _, mag := range magnitudes {
		for _, v := range variants {
			name := mag + "_" + v.suffix
			attrs := []*onnxpb.AttributeProto{stringAttr(attrMag, mag), stringAttr(attrAngular, "cos"), floatAttr("rho", v.rho[0])}
			if !v.defaults {
				attrs = append(attrs, stringAttr(attrWeighted, "none"), floatAttr("alpha", v.alpha),
					floatAttr("beta", v.beta), floatAttr("eps", 1e-4))
			}
			in := []string{"x", "w"}
			if v.learn {
				in = append(in, "", "", "rho_v", "rho_scale")
			}
			g.Node = append(g.Node, dcNode(opDecoupled, name, in, name, attrs...))
			g.Output = append(g.Output, anyValue(name, onnxpb.TensorProto_FLOAT))
		}
	}
	path := writeModel(t, t.TempDir(), "magnitudes.onnx", dcModel(g))
	res, err := tr.Run(path, map[string]Tensor{"x": {Dims: []int64{1, 1, 2, 2}, Data: []float32{3, 0, 0, 4}}})
	if err != nil {
		t.Fatal(err)
	}
	var worst worstTracker
	checked := 0
	for _, mag := range magnitudes {
		for _, v := range variants {
			name := mag + "_" + v.suffix
			cfg := dcConfig{magnitude: mag, alpha: v.alpha, beta: v.beta}.float32Rounded()
			want := Tensor{Dims: []int64{1, 2, 1, 1}}
			for c := range 2 {
				// h from DCNET.md's table, written out again here.
				a, b, rho := cfg.alpha, cfg.beta, v.rho[c]
				var h float64
				switch mag {
				case "sphere":
					h = a
				case "ball":
					h = a * math.Min(n, rho) / rho
				case "tanh":
					h = a * math.Tanh(n/rho)
				case "linear":
					h = a * n
				case "seg":
					if n <= rho {
						h = a * n
					} else {
						h = b*n + a*rho - b*rho
					}
				case "log":
					h = a * math.Log(1+n)
				case "mix":
					h = a*n + b*math.Log(1+n)
				}
				want.Data = append(want.Data, float32(h*cos[c]))
			}
			d, err := compareTensor(res.Outputs[name], want, torchExactTol)
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			worst.add(d, name)
			st := res.Stats[name]
			wantBelow, wantAbove := v.below, 1-v.below
			if !needsRho(mag) {
				wantBelow, wantAbove = 0, 0
			}
			if st.BelowRho != wantBelow || st.AboveRho != wantAbove {
				t.Errorf("%s: below/above rho %g/%g, want %g/%g", name, st.BelowRho, st.AboveRho, wantBelow, wantAbove)
			}
			if math.Abs(st.MinN-n) > 1e-12 || math.Abs(st.MaxN-n) > 1e-12 {
				t.Errorf("%s: N in [%.15g, %.15g], want %.15g", name, st.MinN, st.MaxN, n)
			}
			checked++
		}
	}
	t.Logf("checked %d magnitude cases (%d magnitudes x %d rho variants) against the table; worst difference %v",
		checked, len(magnitudes), len(variants), worst)
}

// TestTorchAngular checks the angular activations on patches with cos = 1,
// 0, -1, 0.8 and a zero patch: X (1x1x1x10) = [3 6 -2 1 -1 -2 2 1 0 0],
// W (1x1x1x2) = [1 2], stride 2. With eps = 1e-30 the norms are exact in
// float64: cos = 15/15, 0/(sqrt5 sqrt5), -15/15, 4/5, 0/1e-15. Magnitude
// sphere (alpha 1) and weighting none make y = g(cos): g(0) = 1, g(pi/2) = 0,
// g(pi) = -1 for every g, and g(acos 0.8) from DCNET.md's table. Nodes with
// the default eps check the same functions just inside |cos| < 1.
func TestTorchAngular(t *testing.T) {
	tr := Torch(t)
	type angCase struct {
		name string
		cfg  dcConfig
		noK  bool // leave k out: default 0.3
	}
	var cases []angCase
	for _, eps := range []float64{1e-30, 1e-4} {
		for _, ang := range angulars {
			ks := []float64{0.3}
			if ang == "sigmoid" {
				ks = []float64{0.3, 0.1, 1, 2.5}
			}
			for i, k := range ks {
				cfg := dcConfig{magnitude: "sphere", angular: ang, weighted: "none", alpha: 1, beta: 0.5, k: k, rho: 1, eps: eps}
				cases = append(cases, angCase{name: fmt.Sprintf("%s_k%g_eps%g", ang, k, eps), cfg: cfg, noK: i == 0})
			}
		}
	}
	x := Tensor{Dims: []int64{1, 1, 1, 10}, Data: []float32{3, 6, -2, 1, -1, -2, 2, 1, 0, 0}}
	w := Tensor{Dims: []int64{1, 1, 1, 2}, Data: []float32{1, 2}}
	geom := convGeom{strides: []int64{1, 2}}
	g := &onnxpb.GraphProto{
		Initializer: []*onnxpb.TensorProto{tensorInit("w", w)},
		Input:       []*onnxpb.ValueInfoProto{floatValue("x", dims(x.Dims...))},
	}
	for _, c := range cases {
		attrs := geom.attrs(1, 2)
		for _, a := range c.cfg.attrs() {
			if !(c.noK && a.GetName() == "k") {
				attrs = append(attrs, a)
			}
		}
		g.Node = append(g.Node, dcNode(opDecoupled, c.name, []string{"x", "w"}, c.name, attrs...))
		g.Output = append(g.Output, anyValue(c.name, onnxpb.TensorProto_FLOAT))
	}
	path := writeModel(t, t.TempDir(), "angular.onnx", dcModel(g))
	res, err := tr.Run(path, map[string]Tensor{"x": x})
	if err != nil {
		t.Fatal(err)
	}
	var worst worstTracker
	checked := 0
	for _, c := range cases {
		got := res.Outputs[c.name]
		var want Tensor
		if c.cfg.eps < 1e-20 {
			cfg := c.cfg.float32Rounded()
			want = Tensor{Dims: []int64{1, 1, 1, 5}, Data: []float32{1, 0, -1, float32(angular(cfg, 0.8)), 0}}
		} else {
			want = naiveDecoupled(x, w, dcInputs{}, c.cfg, geom).tensor()
		}
		d, err := compareTensor(got, want, torchExactTol)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		for i, v := range got.Data {
			if math.IsNaN(float64(v)) || math.Abs(float64(v)) > 1+1e-7 {
				t.Errorf("%s: value %d is %g, outside [-1, 1]", c.name, i, v)
			}
		}
		worst.add(d, c.name)
		checked += len(got.Data)
	}
	t.Logf("checked %d angular values (%d configurations) at cos = 1, 0, -1, 0.8 and a zero patch; worst difference %v",
		checked, len(cases), worst)
}

// TestTorchDecoupledStats checks that the statistics see every branch: on
// random data with rho at the median N, about half the entries of ball and
// seg lie on each side, and |cos| fills all four quarters (a 1x2 kernel on
// one channel spreads the angle).
func TestTorchDecoupledStats(t *testing.T) {
	tr := Torch(t)
	rng := rand.New(rand.NewPCG(41, 42))
	x := randTensor(rng, 1, 2, 1, 12, 12)
	w := randTensor(rng, 1, 3, 1, 1, 2)
	probe := naiveDecoupled(x, w, dcInputs{}, dcConfig{magnitude: "sphere", angular: "cos", weighted: "none", alpha: 1, eps: 1e-4}, convGeom{})
	rho := median(probe.n)
	learn := dcInputs{rhoV: []float32{0.9, 1, 1.1}, rhoScale: proto.Float32(float32(rho))}
	type statCase struct {
		cfg dcConfig
		in  dcInputs
	}
	var cases []statCase
	for _, mag := range []string{"ball", "seg", "tanh", "mix"} {
		cases = append(cases, statCase{cfg: dcConfig{magnitude: mag, angular: "sigmoid", weighted: "none", alpha: 1, beta: 0.5, k: 0.3, rho: rho, eps: 1e-4}})
	}
	cases = append(cases, statCase{cfg: dcConfig{magnitude: "seg", angular: "linear", weighted: "none", alpha: 1, beta: 0.5, k: 0.3, rho: 1, eps: 1e-4}, in: learn})
	g := &onnxpb.GraphProto{
		Initializer: []*onnxpb.TensorProto{tensorInit("w", w),
			floatInit("rho_v", []int64{3}, learn.rhoV...), floatInit("rho_scale", nil, *learn.rhoScale)},
		Input: []*onnxpb.ValueInfoProto{floatValue("x", dims(x.Dims...))},
	}
	names := make([]string, len(cases))
	for i, c := range cases {
		names[i] = fmt.Sprintf("%s_%d", c.cfg, i)
		in := []string{"x", "w"}
		if c.in.rhoV != nil {
			in = append(in, "", "", "rho_v", "rho_scale")
		}
		g.Node = append(g.Node, dcNode(opDecoupled, names[i], in, names[i], c.cfg.attrs()...))
		g.Output = append(g.Output, anyValue(names[i], onnxpb.TensorProto_FLOAT))
	}
	path := writeModel(t, t.TempDir(), "stats.onnx", dcModel(g))
	res, err := tr.Run(path, map[string]Tensor{"x": x})
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		st := res.Stats[names[i]]
		ref := naiveDecoupled(x, w, c.in, c.cfg, convGeom{})
		want := naiveStats(ref)
		if d := statsDiff(st, want); d > 1e-9 {
			t.Errorf("%s: statistics %+v, want %+v", names[i], st, want)
		}
		if needsRho(c.cfg.magnitude) {
			if st.BelowRho < 0.1 || st.BelowRho > 0.9 || math.Abs(st.BelowRho+st.AboveRho-1) > 1e-12 {
				t.Errorf("%s: %.3f below and %.3f above rho, want each in 10-90 %%", names[i], st.BelowRho, st.AboveRho)
			}
		} else if st.BelowRho != 0 || st.AboveRho != 0 {
			t.Errorf("%s: %.3f below and %.3f above rho for a magnitude without rho", names[i], st.BelowRho, st.AboveRho)
		}
		for q, f := range st.CosQuartiles {
			if f < 0.05 {
				t.Errorf("%s: only %.3f of |cos| in quarter %d", names[i], f, q)
			}
		}
		if _, err := compareTensor(res.Outputs[names[i]], ref.tensor(), torchExactTol); err != nil {
			t.Errorf("%s: %v", names[i], err)
		}
		t.Logf("%s: %d entries, %.3f below rho, %.3f above, |cos| quarters %.3f, N in [%.3g, %.3g]",
			names[i], st.Entries, st.BelowRho, st.AboveRho, st.CosQuartiles, st.MinN, st.MaxN)
	}
	t.Logf("checked the statistics of %d decoupled nodes against the direct-loop reference", len(cases))
}

// TestTorchReadsAttributesOnly checks that the op type's name and a
// FunctionProto the model carries do not change the result: only the
// attributes do.
func TestTorchReadsAttributesOnly(t *testing.T) {
	tr := Torch(t)
	rng := rand.New(rand.NewPCG(51, 52))
	x := randTensor(rng, 1, 1, 2, 5, 5)
	w := randTensor(rng, 1, 3, 2, 3, 3)
	cfg := dcConfig{magnitude: "tanh", angular: "sqcos", weighted: "log", alpha: 0.7, beta: 0.5, k: 0.3, rho: 2, eps: 1e-4}
	geom := convGeom{pads: []int64{1, 1, 1, 1}}
	opTypes := []string{"DecoupledConv_0badc0de", "DecoupledConv", "DecoupledConv_sphere_cos_none"}
	g := &onnxpb.GraphProto{
		Initializer: []*onnxpb.TensorProto{tensorInit("w", w)},
		Input:       []*onnxpb.ValueInfoProto{floatValue("x", dims(x.Dims...))},
	}
	for i, op := range opTypes {
		name := fmt.Sprintf("y%d", i)
		g.Node = append(g.Node, dcNode(op, name, []string{"x", "w"}, name, append(geom.attrs(3, 3), cfg.attrs()...)...))
		g.Output = append(g.Output, anyValue(name, onnxpb.TensorProto_FLOAT))
	}
	m := dcModel(g)
	// A body that would compute something else entirely.
	m.Functions = []*onnxpb.FunctionProto{{
		Name:        proto.String(opTypes[0]),
		Domain:      proto.String(dcnetDomain),
		Input:       []string{"X", "W"},
		Output:      []string{"Y"},
		Node:        []*onnxpb.NodeProto{node("Identity", "id", []string{"X"}, []string{"Y"})},
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
	}}
	path := writeModel(t, t.TempDir(), "names.onnx", m)
	res, err := tr.Run(path, map[string]Tensor{"x": x})
	if err != nil {
		t.Fatal(err)
	}
	want := naiveDecoupled(x, w, dcInputs{}, cfg, geom).tensor()
	for i, op := range opTypes {
		name := fmt.Sprintf("y%d", i)
		if _, err := compareTensor(res.Outputs[name], want, torchExactTol); err != nil {
			t.Errorf("op type %s: %v", op, err)
		}
		if st := res.Stats[name]; st.Magnitude != cfg.magnitude || st.Angular != cfg.angular || st.Weighted != cfg.weighted {
			t.Errorf("op type %s: read configuration %s/%s/%s, want %s/%s/%s", op,
				st.Magnitude, st.Angular, st.Weighted, cfg.magnitude, cfg.angular, cfg.weighted)
		}
	}
	t.Logf("checked %d op type names with a misleading FunctionProto present", len(opTypes))
}

func TestTorchIntermediates(t *testing.T) {
	tr := Torch(t)
	rng := rand.New(rand.NewPCG(61, 62))
	x := randTensor(rng, 1, 2, 2, 6, 6)
	w := randTensor(rng, 1, 3, 2, 3, 3)
	geom := convGeom{pads: []int64{0, 1, 1, 0}, strides: []int64{2, 1}}
	ballCfg := dcConfig{magnitude: "ball", angular: "sigmoid", weighted: "log", alpha: 1, beta: 0.5, k: 0.3, rho: 3, eps: 1e-4}
	sphereCfg := dcConfig{magnitude: "sphere", angular: "cos", weighted: "none", alpha: 1, beta: 0.5, k: 0.3, rho: 1, eps: 1e-4}
	g := &onnxpb.GraphProto{
		Node: []*onnxpb.NodeProto{
			dcNode(opDecoupled, "ball", []string{"x", "w"}, "y_ball", append(geom.attrs(3, 3), ballCfg.attrs()...)...),
			dcNode(opDecoupled, "sphere", []string{"x", "w"}, "y_sphere", append(geom.attrs(3, 3), sphereCfg.attrs()...)...),
			node(opAdd, "add", []string{"y_ball", "y_sphere"}, []string{"sum"}),
			node(opRelu, "relu", []string{"sum"}, []string{"out"}),
		},
		Initializer: []*onnxpb.TensorProto{tensorInit("w", w)},
		Input:       []*onnxpb.ValueInfoProto{floatValue("x", dims(x.Dims...))},
		Output:      floatOutputs("out"),
	}
	path := writeModel(t, t.TempDir(), "intermediates.onnx", dcModel(g))
	inputs := map[string]Tensor{"x": x}
	res, err := tr.RunWith(path, inputs, TorchOptions{Intermediates: true})
	if err != nil {
		t.Fatal(err)
	}
	wantNames := []string{"y_ball", "y_sphere", "sum", "out",
		"ball/w_norm", "ball/N", "ball/P", "ball/cos", "ball/theta", "ball/rho", "ball/h", "ball/m", "ball/g",
		"sphere/w_norm", "sphere/N", "sphere/P", "sphere/cos", "sphere/h", "sphere/m", "sphere/g"}
	got := slices.Sorted(maps.Keys(res.Values))
	slices.Sort(wantNames)
	if !slices.Equal(got, wantNames) {
		t.Errorf("intermediate values %v, want %v", got, wantNames)
	}
	ref := naiveDecoupled(x, w, dcInputs{}, ballCfg, geom)
	wantN := Tensor{Dims: []int64{ref.dims[0], 1, ref.dims[2], ref.dims[3]}, Data: toFloat32(ref.n)}
	if _, err := compareTensor(res.Values["ball/N"], wantN, torchExactTol); err != nil {
		t.Errorf("ball/N: %v", err)
	}
	if _, err := compareTensor(res.Values["ball/cos"], Tensor{Dims: ref.dims, Data: toFloat32(ref.cos)}, torchExactTol); err != nil {
		t.Errorf("ball/cos: %v", err)
	}
	if _, err := compareTensor(res.Values["y_ball"], ref.tensor(), torchExactTol); err != nil {
		t.Errorf("y_ball: %v", err)
	}

	plain, err := tr.Run(path, inputs)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Values != nil {
		t.Errorf("Run returned %d intermediate values, want none", len(plain.Values))
	}
	f32, err := tr.RunWith(path, inputs, TorchOptions{Float32: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := compareTensor(f32.Outputs["out"], plain.Outputs["out"], torchRecordedTol)
	if err != nil {
		t.Errorf("float32 against float64: %v", err)
	}
	t.Logf("checked %d intermediate values; float32 run differs from float64 by at most %.3g", len(res.Values), d)
}

func TestTorchErrors(t *testing.T) {
	tr := Torch(t)
	dir := t.TempDir()
	x := Tensor{Dims: []int64{1, 1, 3, 3}, Data: []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}}
	dcGraph := func(in []string, attrs ...*onnxpb.AttributeProto) *onnxpb.ModelProto {
		return dcModel(&onnxpb.GraphProto{
			Node: []*onnxpb.NodeProto{dcNode(opDecoupled, "dc", in, "y", attrs...)},
			Initializer: []*onnxpb.TensorProto{
				floatInit("w", []int64{2, 1, 2, 2}, 1, 0, 0, 1, 0, 1, 1, 0),
				floatInit("b3", []int64{3}, 1, 2, 3),
				floatInit("rho_v", []int64{2}, 1, 1),
				floatInit("rho_scale", nil, 2),
			},
			Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(1, 1, 3, 3))},
			Output: floatOutputs("y"),
		})
	}
	cfg := defaultConfig()
	without := func(drop string) []*onnxpb.AttributeProto {
		var out []*onnxpb.AttributeProto
		for _, a := range cfg.attrs() {
			if a.GetName() != drop {
				out = append(out, a)
			}
		}
		return out
	}
	// withAttrs returns base with extra's attributes replacing or added.
	withAttrs := func(base []*onnxpb.AttributeProto, extra ...*onnxpb.AttributeProto) []*onnxpb.AttributeProto {
		out := slices.Clone(base)
		for _, e := range extra {
			for i, a := range out {
				if a.GetName() == e.GetName() {
					out = slices.Delete(out, i, i+1)
					break
				}
			}
			out = append(out, e)
		}
		return out
	}
	with := func(extra ...*onnxpb.AttributeProto) []*onnxpb.AttributeProto {
		return withAttrs(cfg.attrs(), extra...)
	}
	ball := with(stringAttr(attrMag, "ball"))
	xw := []string{"x", "w"}
	garbage := filepath.Join(dir, "garbage.onnx")
	if err := os.WriteFile(garbage, []byte("this is not a protobuf\xff\xff\xff"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		model  *onnxpb.ModelProto // nil: use path
		path   string
		inputs map[string]Tensor
		want   string
	}{
		{name: "unsupported operator", model: graphModel(&onnxpb.GraphProto{
			Node:   []*onnxpb.NodeProto{node("Erf", "bad", []string{"x"}, []string{"y"})},
			Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(1, 1, 3, 3))},
			Output: floatOutputs("y"),
		}), want: `node "bad" (Erf): operator is not supported`},
		{name: "other domain", model: dcModel(&onnxpb.GraphProto{
			Node:   []*onnxpb.NodeProto{dcNode("Conv", "c", xw, "y")},
			Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(1, 1, 3, 3))},
			Output: floatOutputs("y"),
		}), want: `(ai.dcnet.Conv): operator is not supported`},
		{name: "magnitude missing", model: dcGraph(xw, without(attrMag)...), want: "attribute magnitude is missing"},
		{name: "unknown angular", model: dcGraph(xw, with(stringAttr(attrAngular, "tan"))...), want: `angular "tan" is not one of`},
		{name: "unknown weighting", model: dcGraph(xw, with(stringAttr(attrWeighted, "sqrt"))...), want: `weighted "sqrt" is not one of`},
		{name: "group 2", model: dcGraph(xw, with(intAttr("group", 2))...), want: "group 2"},
		{name: "eps 0", model: dcGraph(xw, with(floatAttr("eps", 0))...), want: "eps 0 must be > 0"},
		{name: "alpha negative", model: dcGraph(xw, with(floatAttr("alpha", -1))...), want: "alpha -1 must be > 0"},
		{name: "rho missing", model: dcGraph(xw, withAttrs(without("rho"), stringAttr(attrMag, "ball"))...),
			want: "needs attribute rho"},
		{name: "rho 0", model: dcGraph(xw, withAttrs(ball, floatAttr("rho", 0))...), want: "rho 0 must be > 0"},
		{name: "RhoV without RhoScale", model: dcGraph([]string{"x", "w", "", "", "rho_v"}, ball...),
			want: "RhoV and RhoScale must be given together"},
		{name: "bias of the wrong size", model: dcGraph([]string{"x", "w", "b3"}, cfg.attrs()...), want: "B has shape [3], want [2]"},
		{name: "input not fed", model: dcGraph(xw, cfg.attrs()...), inputs: map[string]Tensor{}, want: `input "x" is not fed`},
		{name: "unknown input", model: dcGraph(xw, cfg.attrs()...), inputs: map[string]Tensor{"x": x, "z": x},
			want: `input "z" is not a graph input`},
		{name: "not a protobuf", path: garbage, want: "garbage.onnx"},
		{name: "missing file", path: filepath.Join(dir, "absent.onnx"), want: "absent.onnx"},
	}
	// One request runs every case (a failing job leaves the others
	// running); Run takes the same path for one model, checked last.
	jobs := make([]torchJob, len(tests))
	for i, tt := range tests {
		jobs[i] = torchJob{model: tt.path, inputs: tt.inputs}
		if tt.model != nil {
			jobs[i].model = writeModel(t, dir, fmt.Sprintf("err%d.onnx", i), tt.model)
		}
		if tt.inputs == nil {
			jobs[i].inputs = map[string]Tensor{"x": x}
		}
	}
	res := runAll(t, tr, jobs)
	check := func(t *testing.T, path string, err error, want string) {
		t.Helper()
		if err == nil {
			t.Fatal("the run succeeded, want an error")
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
		if !strings.Contains(err.Error(), filepath.Base(path)) {
			t.Errorf("error %q does not name the model file", err)
		}
		t.Logf("error: %v", err)
	}
	checked := 0
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if res[i].result != nil {
				t.Fatalf("the run succeeded with outputs %v, want an error", slices.Sorted(maps.Keys(res[i].result.Outputs)))
			}
			check(t, jobs[i].model, res[i].err, tt.want)
			checked++
		})
	}
	t.Run("Run", func(t *testing.T) {
		_, err := tr.Run(jobs[0].model, jobs[0].inputs)
		check(t, jobs[0].model, err, tests[0].want)
		checked++
	})
	t.Logf("checked %d failing cases", checked)
}

// TestTorchGradcheck runs torch_ref.py's gradcheck mode: PyTorch's
// finite-difference check of the decoupled convolution's gradients for
// every configuration, and finite gradients where |cos| = 1.
func TestTorchGradcheck(t *testing.T) {
	tr := Torch(t)
	out, err := tr.runScript(t.TempDir(), "gradcheck")
	if err != nil {
		t.Fatalf("torch reference gradcheck: %v (output %s)", err, out)
	}
	var summary struct {
		Checked  int      `json:"checked"`
		Finite   int      `json:"finite_at_unit_cos"`
		Failures []string `json:"failures"`
	}
	if err := json.Unmarshal(out, &summary); err != nil {
		t.Fatalf("reading the gradcheck summary %q: %v", out, err)
	}
	for _, f := range summary.Failures {
		t.Error(f)
	}
	// 7 magnitudes x 4 angulars x 3 weightings, twice for the 3 with rho.
	if want := (7 + 3) * 4 * 3; summary.Checked != want {
		t.Errorf("gradcheck ran %d configurations, want %d", summary.Checked, want)
	}
	if summary.Finite != 2 {
		t.Errorf("%d angular functions had finite gradients at |cos| = 1, want 2", summary.Finite)
	}
	t.Logf("gradcheck passed for %d configurations; gradients finite at |cos| = 1 for %d angular functions",
		summary.Checked, summary.Finite)
}
