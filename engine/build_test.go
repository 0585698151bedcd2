package engine

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// TestCheck names every node the engine cannot run, with its operator,
// and lists the supported operators.
func TestCheck(t *testing.T) {
	tg := newTestGraph(13)
	tg.input("x", 4)
	tg.node("Relu", "ok", []string{"x"}, []string{"r"})
	tg.node("Acos", "acos1", []string{"r"}, []string{"a"})
	tg.node("Gather", "gather_data", []string{"r", "idx"}, []string{"g"})
	tg.ints("idx", 0)
	tg.node("Shape", "shape", []string{"x"}, []string{"s"})
	tg.node("Gather", "gather_shape", []string{"s", "idx"}, []string{"s0"})
	tg.node("Cast", "cast_int", []string{"r"}, []string{"ci"}, attrInt("to", int64(onnxpb.TensorProto_INT64)))
	tg.node("Reshape", "reshape_dyn", []string{"r", "r"}, []string{"rr"})
	tg.node("Clip", "clip_attrs", []string{"r"}, []string{"cl"}, attrFloat("min", 0))
	custom := tg.node("Bar", "custom", []string{"x"}, []string{"c"})
	custom.Domain = proto.String("com.example")
	tg.nodes = append(tg.nodes, &onnxpb.NodeProto{OpType: proto.String("Erf"), Input: []string{"x"}, Output: []string{"e"}})
	tg.output("a")
	err := Check(tg.model())
	if err == nil {
		t.Fatal("Check accepted unsupported nodes")
	}
	msg := err.Error()
	for _, want := range []string{
		`node "acos1" (Acos): operator is not supported`,
		`node "gather_data" (Gather): supported only on constant integer tensors`,
		`node "cast_int" (Cast): casting to INT64 is supported only on constant integer tensors`,
		`node "reshape_dyn" (Reshape): target shape "r" is not a constant`,
		`node "clip_attrs" (Clip): attributes min and max were replaced by inputs in opset 11`,
		`node "custom" (com.example.Bar): domain "com.example" is not supported`,
		`node #9 (Erf): operator is not supported`,
		"the engine supports Add, AveragePool, BatchNormalization,",
		"ai.dcnet.DecoupledConv*",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("Check error lacks %q:\n%s", want, msg)
		}
	}
	for _, ok := range []string{`"ok"`, `"shape"`, `"gather_shape"`} {
		if strings.Contains(msg, ok) {
			t.Errorf("Check error blames supported node %s:\n%s", ok, msg)
		}
	}
	if _, err := Build(tg.model(), Options{Batch: 1}); err == nil || err.Error() != msg {
		t.Errorf("Build does not report Check's error first: %v", err)
	}

	if err := Check(nil); err == nil {
		t.Error("Check(nil) succeeded")
	}
	p, err := models.Build("resnet18", models.Config{Input: [3]int64{3, 32, 32}})
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(&onnximport.Model{Proto: p}); err != nil {
		t.Errorf("Check(resnet18): %v", err)
	}
	sup := Supported()
	if !slices.IsSorted(sup[:len(sup)-1]) || sup[len(sup)-1] != "ai.dcnet.DecoupledConv*" {
		t.Errorf("Supported() = %v", sup)
	}
}

// TestCheckInlined checks that an inlined decoupled model is judged by
// the standard operators of its bodies: each one the engine lacks is
// named.
func TestCheckInlined(t *testing.T) {
	p, err := models.Build("vgg-mini", models.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m := &onnximport.Model{Proto: p}
	cfg := dcnet.DefaultConfig()
	cfg.Magnitude, cfg.Angular, cfg.LearnRho = dcnet.MagBall, dcnet.AngLinear, true
	if _, err := rewrite.Run(m, rewrite.Options{Config: cfg, Inline: true}, nil); err != nil {
		t.Fatal(err)
	}
	missing := map[string]bool{}
	for _, n := range m.Graph().GetNode() {
		if onnximport.IsDecoupledConv(n) {
			t.Fatalf("inlined model still has %s", n.GetOpType())
		}
		if _, ok := handlers[n.GetOpType()]; !ok {
			missing[n.GetOpType()] = true
		}
	}
	if len(missing) == 0 {
		t.Skip("every operator of the inlined bodies is supported")
	}
	err = Check(m)
	if err == nil {
		t.Fatalf("Check accepted an inlined model with %v", missing)
	}
	for op := range missing {
		if !strings.Contains(err.Error(), "("+op+")") {
			t.Errorf("Check error does not name %s", op)
		}
	}
}

// TestSharedInitializers checks that an initializer used by several
// nodes, directly or through Identity nodes, becomes one parameter per
// use, each with its own value and gradient, and that shared running
// statistics become one State entry per use.
func TestSharedInitializers(t *testing.T) {
	tg := newTestGraph(13)
	tg.input("x", 2, 3, 3)
	tg.floats("w", []int64{2, 2, 1, 1})
	tg.floats("scale", []int64{2}, 1, 1)
	tg.floats("bias", []int64{2}, 0, 0)
	tg.floats("rm", []int64{2}, 0, 0)
	tg.floats("rv", []int64{2}, 1, 1)
	tg.node("Conv", "c1", []string{"x", "w"}, []string{"y1"})
	tg.node("BatchNormalization", "bn1", []string{"y1", "scale", "bias", "rm", "rv"}, []string{"z1"})
	tg.node("Identity", "id", []string{"w"}, []string{"w2"})
	tg.node("Identity", "id_rv", []string{"rv"}, []string{"rv2"})
	tg.node("Conv", "c2", []string{"z1", "w2"}, []string{"y2"})
	tg.node("BatchNormalization", "bn2", []string{"y2", "scale", "bias", "rm", "rv2"}, []string{"z2"})
	tg.node("Conv", "", []string{"z2", "w"}, []string{"y3"})
	tg.node("Flatten", "flat", []string{"y3"}, []string{"f"})
	tg.output("f")
	e := mustBuild(t, tg.model(), Options{Mode: Training, Batch: 2})
	want := []string{"w", "scale", "bias", "w@c2", "scale@bn2", "bias@bn2", "w@#6"}
	if got := e.Params(); !slices.Equal(got, want) {
		t.Errorf("Params() = %v, want %v", got, want)
	}
	st := e.State()
	for _, name := range []string{"rm", "rv", "rm@bn2", "rv@bn2", StepKey} {
		if _, ok := st[name]; !ok {
			t.Errorf("State() lacks %q: %v", name, slices.Sorted(mapKeys(st)))
		}
	}
	if len(st) != 5 {
		t.Errorf("State() has %d entries, want 5: %v", len(st), slices.Sorted(mapKeys(st)))
	}

	// Each use has its own value: changing one changes only its node.
	x := batch(3, 2, 2, 3, 3)
	if _, err := e.Step(map[string]Tensor{"x": x}, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	grads := map[string][]float32{}
	for _, name := range e.Params() {
		g, err := e.Grad(name)
		if err != nil {
			t.Fatal(err)
		}
		grads[name] = g.Data
	}
	if slices.Equal(grads["w"], grads["w@c2"]) || slices.Equal(grads["w"], grads["w@#10"]) {
		t.Errorf("uses of w share a gradient: %v %v %v", grads["w"], grads["w@c2"], grads["w@#10"])
	}
	w, _ := e.Param("w")
	zero := Tensor{Shape: w.Shape, Data: make([]float32, len(w.Data))}
	if err := e.SetParam("w@c2", zero); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.Param("w"); !slices.Equal(got.Data, w.Data) {
		t.Errorf("SetParam(w@c2) changed w to %v", got.Data)
	}
}

// TestSoftmaxAxis checks both axis semantics: before opset 13 the input
// is flattened to 2-D at axis, from 13 one axis is normalised.
func TestSoftmaxAxis(t *testing.T) {
	const n = 2
	x := batch(5, n, 2, 3)
	for _, op := range []string{"Softmax", "LogSoftmax"} {
		for _, opset := range []int64{11, 13} {
			tg := newTestGraph(opset)
			tg.input("x", 2, 3)
			tg.node(op, "sm", []string{"x"}, []string{"y"}, attrInt("axis", 1))
			tg.output("y")
			e := mustBuild(t, tg.model(), Options{Batch: n})
			y := forward(t, e, x, "y")
			want := make([]float64, len(x.Data))
			norm := func(idx []int) {
				m := math.Inf(-1)
				for _, i := range idx {
					m = math.Max(m, float64(x.Data[i]))
				}
				s := 0.0
				for _, i := range idx {
					s += math.Exp(float64(x.Data[i]) - m)
				}
				for _, i := range idx {
					want[i] = math.Exp(float64(x.Data[i])-m) / s
					if op == "LogSoftmax" {
						want[i] = math.Log(want[i])
					}
				}
			}
			for b := 0; b < n; b++ {
				if opset < 13 {
					norm([]int{b*6 + 0, b*6 + 1, b*6 + 2, b*6 + 3, b*6 + 4, b*6 + 5})
					continue
				}
				for j := 0; j < 3; j++ {
					norm([]int{b*6 + j, b*6 + 3 + j})
				}
			}
			checkClose(t, op, y.Data, want, 1e-6)
		}
	}
}

// TestLinearOps checks Gemm (transA, transB, alpha, beta, broadcast C),
// MatMul of a 3-D by a 2-D operand, and numpy broadcasting of the
// elementwise operators against direct computation.
func TestLinearOps(t *testing.T) {
	const n = 3
	x := batch(9, n, 3)
	xv := func(i, j int) float64 { return float64(x.Data[i*3+j]) }

	t.Run("gemm", func(t *testing.T) {
		a := pattern(12, 4) // B as [4, 3] for transB, [3, 4] otherwise
		c := pattern(4, 5)
		for _, transB := range []int64{0, 1} {
			tg := newTestGraph(13)
			tg.input("x", 3)
			dims := []int64{3, 4}
			if transB != 0 {
				dims = []int64{4, 3}
			}
			tg.floats("b", dims, a...)
			tg.floats("c", []int64{1, 4}, c...)
			tg.node("Gemm", "g", []string{"x", "b", "c"}, []string{"y"},
				attrInt("transB", transB), attrFloat("alpha", 2), attrFloat("beta", 0.5))
			tg.output("y")
			e := mustBuild(t, tg.model(), Options{Batch: n})
			y := forward(t, e, x, "y")
			var want []float64
			for i := 0; i < n; i++ {
				for j := 0; j < 4; j++ {
					s := 0.0
					for k := 0; k < 3; k++ {
						bv := a[k*4+j]
						if transB != 0 {
							bv = a[j*3+k]
						}
						s += xv(i, k) * float64(bv)
					}
					want = append(want, 2*s+0.5*float64(c[j]))
				}
			}
			checkClose(t, "gemm", y.Data, want, 1e-5)
		}
		// transA: the input is read as [K, M]; M must be the batch for
		// the output to be [batch, ...].
		tg := newTestGraph(13)
		tg.input("x", 3)
		tg.floats("b", []int64{3, 2}, 1, 2, 3, 4, 5, 6)
		tg.node("Gemm", "g", []string{"x", "b"}, []string{"y"}, attrInt("transA", 1))
		tg.output("y")
		e := mustBuild(t, tg.model(), Options{Batch: n})
		y := forward(t, e, x, "y")
		var want []float64
		for i := 0; i < 3; i++ {
			for j := 0; j < 2; j++ {
				s := 0.0
				for k := 0; k < n; k++ {
					s += xv(k, i) * float64(1+k*2+j)
				}
				want = append(want, s)
			}
		}
		checkClose(t, "gemm transA", y.Data, want, 1e-5)
	})

	t.Run("matmul 3-D", func(t *testing.T) {
		tg := newTestGraph(13)
		tg.input("x", 2, 3)
		w := pattern(6, 11)
		tg.floats("w", []int64{3, 2}, w...)
		tg.node("MatMul", "mm", []string{"x", "w"}, []string{"y"})
		tg.output("y")
		e := mustBuild(t, tg.model(), Options{Batch: 2})
		x3 := batch(12, 2, 2, 3)
		y := forward(t, e, x3, "y")
		if !slices.Equal(y.Shape, []int{2, 2, 2}) {
			t.Fatalf("shape %v, want [2 2 2]", y.Shape)
		}
		var want []float64
		for r := 0; r < 4; r++ {
			for j := 0; j < 2; j++ {
				s := 0.0
				for k := 0; k < 3; k++ {
					s += float64(x3.Data[r*3+k]) * float64(w[k*2+j])
				}
				want = append(want, s)
			}
		}
		checkClose(t, "matmul", y.Data, want, 1e-5)
	})

	t.Run("broadcast", func(t *testing.T) {
		// y = ((x[N,3,1] + r[1,2]) * s) - d[3,1], then / q[2]; s scalar.
		tg := newTestGraph(13)
		tg.input("x", 3, 1)
		tg.floats("r", []int64{1, 2}, 1, -2)
		tg.floats("d", []int64{3, 1}, 0.5, 1, 1.5)
		tg.floats("q", []int64{2}, 2, 4)
		tg.node("Constant", "s", nil, []string{"s"}, attrTensor("value", floatTensor("", nil, []float32{3})))
		tg.node("Add", "add", []string{"x", "r"}, []string{"a"})
		tg.node("Mul", "mul", []string{"a", "s"}, []string{"m"})
		tg.node("Sub", "sub", []string{"m", "d"}, []string{"u"})
		tg.node("Div", "div", []string{"u", "q"}, []string{"y"})
		tg.output("y")
		e := mustBuild(t, tg.model(), Options{Batch: n})
		if got := e.Params(); !slices.Equal(got, []string{"r"}) {
			t.Errorf("Params() = %v, want the Add bias [r] only", got)
		}
		y := forward(t, e, Tensor{Shape: []int{n, 3, 1}, Data: x.Data}, "y")
		if !slices.Equal(y.Shape, []int{n, 3, 2}) {
			t.Fatalf("shape %v, want [%d 3 2]", y.Shape, n)
		}
		var want []float64
		for b := 0; b < n; b++ {
			for i := 0; i < 3; i++ {
				for j := 0; j < 2; j++ {
					v := (xv(b, i) + []float64{1, -2}[j]) * 3
					v -= []float64{0.5, 1, 1.5}[i]
					want = append(want, v/[]float64{2, 4}[j])
				}
			}
		}
		checkClose(t, "broadcast", y.Data, want, 1e-5)
	})
}

// TestShapeOps checks the shape computations torch emits (Shape, Gather,
// Unsqueeze, Concat into Reshape), Flatten, Squeeze and Unsqueeze in both
// of their opset forms, Cast, Constant, float Concat and Clip in both of
// its forms.
func TestShapeOps(t *testing.T) {
	const n = 2
	for _, opset := range []int64{10, 13} {
		tg := newTestGraph(opset)
		tg.input("x", 2, 2, 2)
		tg.node("Shape", "shape", []string{"x"}, []string{"s"})
		tg.node("Constant", "zero", nil, []string{"i0"}, attrTensor("value", &onnxpb.TensorProto{
			DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: []int64{0},
		}))
		tg.node("Gather", "g", []string{"s", "i0"}, []string{"s0"}, attrInt("axis", 0))
		unsq := []string{"s0"}
		var axes []*onnxpb.AttributeProto
		if opset >= 13 {
			tg.ints("axes0", 0)
			unsq = append(unsq, "axes0")
		} else {
			axes = append(axes, attrInts("axes", 0))
		}
		tg.node("Unsqueeze", "u", unsq, []string{"s0u"}, axes...)
		tg.ints("minus1", -1)
		tg.node("Concat", "cat", []string{"s0u", "minus1"}, []string{"target"}, attrInt("axis", 0))
		tg.node("Cast", "cast", []string{"target"}, []string{"target64"}, attrInt("to", int64(onnxpb.TensorProto_INT64)))
		tg.node("Reshape", "flat", []string{"x", "target64"}, []string{"f"})
		tg.node("Flatten", "flat2", []string{"x"}, []string{"f2"}, attrInt("axis", 1))
		tg.node("Cast", "castf", []string{"f2"}, []string{"f2c"}, attrInt("to", int64(onnxpb.TensorProto_FLOAT)))
		// [N,8] -> Unsqueeze -> [N,1,8] -> Squeeze -> [N,8]
		if opset >= 13 {
			tg.ints("axes1", 1)
			tg.node("Unsqueeze", "u2", []string{"f2c", "axes1"}, []string{"f3"})
			tg.node("Squeeze", "sq", []string{"f3", "axes1"}, []string{"f4"})
		} else {
			tg.node("Unsqueeze", "u2", []string{"f2c"}, []string{"f3"}, attrInts("axes", 1))
			tg.node("Squeeze", "sq", []string{"f3"}, []string{"f4"}, attrInts("axes", 1))
		}
		tg.node("Concat", "catf", []string{"f", "f4"}, []string{"both"}, attrInt("axis", 1))
		if opset >= 13 {
			tg.node("Constant", "lo", nil, []string{"lo"}, &onnxpb.AttributeProto{Name: proto.String("value_float"), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(-0.25)})
			tg.floats("hi", nil, 0.5)
			tg.node("Clip", "clip", []string{"both", "lo", "hi"}, []string{"y"})
		} else {
			tg.node("Clip", "clip", []string{"both"}, []string{"y"}, attrFloat("min", -0.25), attrFloat("max", 0.5))
		}
		tg.output("y", "f")
		e := mustBuild(t, tg.model(), Options{Batch: n})
		x := batch(2, n, 2, 2, 2)
		out, err := e.Forward(map[string]Tensor{"x": x})
		if err != nil {
			t.Fatalf("opset %d: %v", opset, err)
		}
		if got := out["f"]; !slices.Equal(got.Shape, []int{n, 8}) || !slices.Equal(got.Data, x.Data) {
			t.Errorf("opset %d: reshape gave %v %v, want [%d 8] %v", opset, got.Shape, got.Data, n, x.Data)
		}
		y := out["y"]
		if !slices.Equal(y.Shape, []int{n, 16}) {
			t.Fatalf("opset %d: y shape %v, want [%d 16]", opset, y.Shape, n)
		}
		var want []float64
		for b := 0; b < n; b++ {
			for rep := 0; rep < 2; rep++ {
				for _, v := range x.Data[b*8 : (b+1)*8] {
					want = append(want, math.Min(math.Max(float64(v), -0.25), 0.5))
				}
			}
		}
		checkClose(t, "clip", y.Data, want, 1e-6)
	}
}

// TestIdentityParams checks that a parameter reached through Identity
// nodes keeps the initializer's name, and that a model whose batch
// dimension is fixed is rebound to the engine's batch size.
func TestIdentityParams(t *testing.T) {
	tg := newTestGraph(9)
	tg.input("x", 3)
	tg.inputs[0].Type.GetTensorType().GetShape().GetDim()[0].Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: 1}
	tg.floats("fc.weight", []int64{2, 3})
	tg.floats("fc.bias", []int64{2})
	tg.node("Identity", "i1", []string{"fc.weight"}, []string{"onnx::Gemm_1"})
	tg.node("Identity", "i2", []string{"onnx::Gemm_1"}, []string{"onnx::Gemm_2"})
	tg.node("Gemm", "fc", []string{"x", "onnx::Gemm_2", "fc.bias"}, []string{"y"}, attrInt("transB", 1))
	tg.output("y")
	e := mustBuild(t, tg.model(), Options{Mode: Training, Batch: 4})
	if got := e.Params(); !slices.Equal(got, []string{"fc.weight", "fc.bias"}) {
		t.Errorf("Params() = %v", got)
	}
	if _, err := e.Step(map[string]Tensor{"x": batch(1, 4, 3)}, []int{0, 1, 1, 0}); err != nil {
		t.Fatal(err)
	}
	g, err := e.Grad("fc.weight")
	if err != nil || !slices.Equal(g.Shape, []int{2, 3}) {
		t.Errorf("Grad(fc.weight) = %v, %v", g, err)
	}
}

// readFixtureTensor reads a serialized TensorProto of a fixture's data
// set.
func readFixtureTensor(t *testing.T, m *onnximport.Model, path string) Tensor {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tp onnxpb.TensorProto
	if err := proto.Unmarshal(b, &tp); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	d, err := m.Tensor(&tp)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return Tensor{Shape: intShape(d.Dims), Data: slices.Clone(d.Float)}
}

// TestForeignFixtures runs the PyTorch exports of testdata/foreign and
// compares with PyTorch's outputs (the tolerance of the ONNX Runtime
// check, 1e-5 + 1e-4|want|), then runs a training step on each.
func TestForeignFixtures(t *testing.T) {
	paths, _ := filepath.Glob("../testdata/foreign/*/model.onnx")
	if len(paths) == 0 {
		t.Fatal("no fixtures under ../testdata/foreign")
	}
	for _, path := range paths {
		name := filepath.Base(filepath.Dir(path))
		t.Run(name, func(t *testing.T) {
			m, err := onnximport.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(filepath.Dir(path), "test_data_set_0")
			x := readFixtureTensor(t, m, filepath.Join(dir, "input_0.pb"))
			want := readFixtureTensor(t, m, filepath.Join(dir, "output_0.pb"))
			n := x.Shape[0]
			e := mustBuild(t, m, Options{Batch: n})
			out, err := e.Forward(map[string]Tensor{"input": x})
			if err != nil {
				t.Fatal(err)
			}
			got := out["output"]
			if !slices.Equal(got.Shape, want.Shape) {
				t.Fatalf("output shape %v, want %v", got.Shape, want.Shape)
			}
			for i := range got.Data {
				w := float64(want.Data[i])
				if d := math.Abs(float64(got.Data[i]) - w); d > 1e-5+1e-4*math.Abs(w) {
					t.Errorf("output[%d] = %v, PyTorch %v", i, got.Data[i], w)
				}
			}
			if name == "zero_bias" {
				var biases []string
				for _, p := range e.Params() {
					if strings.Contains(p, "bias") {
						biases = append(biases, p)
					}
				}
				if len(biases) != 4 || biases[0] != "conv1.bias" || !strings.HasPrefix(biases[1], "conv1.bias@") || !strings.HasPrefix(biases[2], "conv1.bias@") {
					t.Errorf("bias parameters %v: want conv1.bias, two conv1.bias@<node> and the linear bias", biases)
				}
			}
			tr := mustBuild(t, m, Options{Mode: Training, Batch: n})
			labels := make([]int, n)
			for i := range labels {
				labels[i] = i % want.Shape[1]
			}
			loss, err := tr.Step(map[string]Tensor{"input": x}, labels)
			if err != nil || math.IsNaN(loss) {
				t.Fatalf("Step: %v, %v", loss, err)
			}
		})
	}
}
