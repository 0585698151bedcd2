package engine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// TestClip checks Clip against min(max(x, lo), hi), including NaN, lo >
// hi and infinite bounds, and its gradient (1 inside [lo, hi], 0
// outside).
func TestClip(t *testing.T) {
	x := []float64{-2, -0.5, 0, 0.25, 0.5, 3, math.NaN(), math.Inf(1), math.Inf(-1)}
	in := []gradInput{{name: "x", shape: []int{3, 3}, data: x}}
	tests := []struct {
		name   string
		lo, hi float64
		want   []float64
	}{
		{"bounds", -0.5, 0.5, []float64{-0.5, -0.5, 0, 0.25, 0.5, 0.5, math.NaN(), 0.5, -0.5}},
		{"no lower bound", math.Inf(-1), 0, []float64{-2, -0.5, 0, 0, 0, 0, math.NaN(), 0, math.Inf(-1)}},
		{"lo above hi gives hi", 1, -1, []float64{-1, -1, -1, -1, -1, -1, math.NaN(), -1, -1}},
	}
	for _, tc := range tests {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			got, err := runForward(t, dt, in, func(n []*G.Node) (*G.Node, error) { return clip(n[0], tc.lo, tc.hi) })
			if err != nil {
				t.Fatal(err)
			}
			compareFloats(t, tc.name+" "+dt.String(), got, tc.want, 0, 0)
		}
	}
	// spreadInput keeps its values at least 2e-3 away from the bounds.
	r := rand.New(rand.NewPCG(4, 4))
	g := []gradInput{spreadInput(r, "x", true, 2, 3, 4, 5)}
	checkGradients(t, g, func(n []*G.Node) (*G.Node, error) { return clip(n[0], -0.302, 0.208) })
	if _, err := clip(G.NewTensor(G.NewGraph(), tensor.Float64, 1, G.WithShape(3), G.WithName("x")), math.NaN(), 1); err == nil || !strings.Contains(err.Error(), "clip: bounds [NaN, 1] must not be NaN") {
		t.Errorf("NaN bound: error %v", err)
	}
}

// TestLeakyRelu checks LeakyRelu against its formula and its gradient.
func TestLeakyRelu(t *testing.T) {
	in := []gradInput{{name: "x", shape: []int{5}, data: []float64{-2, -0.5, 0, 0.5, 3}}}
	got, err := runForward(t, tensor.Float32, in, func(n []*G.Node) (*G.Node, error) { return leakyRelu(n[0], 0.1) })
	if err != nil {
		t.Fatal(err)
	}
	compareFloats(t, "y", got, []float64{-0.2, -0.05, 0, 0.5, 3}, 1e-7, 1e-7)
	r := rand.New(rand.NewPCG(6, 6))
	for _, alpha := range []float64{0.01, -0.7, 2} {
		checkGradients(t, []gradInput{spreadInput(r, "x", true, 3, 4, 5)}, func(n []*G.Node) (*G.Node, error) { return leakyRelu(n[0], alpha) })
	}
	if _, err := leakyRelu(G.NewTensor(G.NewGraph(), tensor.Float64, 1, G.WithShape(3), G.WithName("x")), math.Inf(1)); err == nil || !strings.Contains(err.Error(), "leakyRelu: alpha +Inf is not a finite number") {
		t.Errorf("infinite alpha: error %v", err)
	}
}

// TestOpsChainGradients checks the gradient of a small network built
// from every operation here (convolution with groups and asymmetric
// pads, training-mode batch normalization, LeakyRelu, MaxPool with
// ceil_mode, Clip, AveragePool, GlobalAveragePool) for every input.
func TestOpsChainGradients(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	in := []gradInput{
		randomInput(r, "x", true, 2, 4, 7, 6),
		randomInput(r, "w", true, 6, 2, 3, 3),
		randomInput(r, "b", true, 6),
		randomInput(r, "scale", true, 6),
		randomInput(r, "bias", true, 6),
	}
	checkGradients(t, in, func(n []*G.Node) (*G.Node, error) {
		y, err := conv(n[0], n[1], n[2], window2([]int64{3, 3}, []int64{1, 1}, []int64{1, 1}, []int64{1, 0, 0, 1}), 2)
		if err != nil {
			return nil, err
		}
		if y, _, err = batchNorm(y, n[3], n[4], nil, nil, 1e-5, true); err != nil {
			return nil, err
		}
		if y, err = leakyRelu(y, 0.2); err != nil {
			return nil, err
		}
		if y, err = maxPool(y, poolWindow([]int64{2, 2}, []int64{2, 2}, []int64{1, 1}, []int64{0, 0, 0, 0}, "NOTSET", true)); err != nil {
			return nil, err
		}
		if y, err = clip(y, -10, 10); err != nil {
			return nil, err
		}
		if y, err = avgPool(y, poolWindow([]int64{2, 2}, []int64{1, 1}, []int64{1, 1}, []int64{1, 1, 0, 0}, "NOTSET", false), true); err != nil {
			return nil, err
		}
		return globalAvgPool(y)
	})
}

// TestKernelsSplit runs the forward and gradient tests of every operation
// with each kernel's work split over the CPUs however small it is, as it
// is for real tensors (go test -race checks the split).
func TestKernelsSplit(t *testing.T) {
	saved := kernelParallelMin
	kernelParallelMin = 0
	defer func() { kernelParallelMin = saved }()
	for _, test := range []func(*testing.T){
		TestConvForward, TestConvGradients, TestPoolForward, TestPoolGradients, TestGlobalAvgPool,
		TestBatchNormInference, TestBatchNormTraining, TestOpsChainGradients,
	} {
		test(t)
	}
}

// conformanceRoot holds ONNX's backend test data (Debian
// libonnx-testdata).
const conformanceRoot = "/usr/share/libonnx-testdata/data"

// conformanceCase is one model of ONNX's backend test data made of a
// single node this file's operations implement, with the tensors of its
// first data set.
type conformanceCase struct {
	name   string // directory relative to conformanceRoot
	model  *onnximport.Model
	node   *onnxpb.NodeProto
	opset  int64
	in     []*onnximport.Tensor // per node input; nil when absent
	wanted []*onnximport.Tensor // output_i.pb
}

// conformanceBuilders build each operator's node from a case; the extra
// function, if any, returns outputs computed after the run (training-mode
// running statistics).
var conformanceBuilders = map[string]func(c *conformanceCase, in []*G.Node) ([]*G.Node, func() [][]float64, error){
	"Conv": func(c *conformanceCase, in []*G.Node) ([]*G.Node, func() [][]float64, error) {
		var kernel []int64
		for _, d := range in[1].Shape()[2:] {
			kernel = append(kernel, int64(d))
		}
		win, err := onnximport.ParseWindow(c.node, kernel)
		if err != nil {
			return nil, nil, err
		}
		var b *G.Node
		if len(in) > 2 {
			b = in[2]
		}
		y, err := conv(in[0], in[1], b, win, onnximport.AttrInt(c.node, "group", 1))
		return []*G.Node{y}, nil, err
	},
	"MaxPool": func(c *conformanceCase, in []*G.Node) ([]*G.Node, func() [][]float64, error) {
		if len(c.node.GetOutput()) > 1 {
			return nil, nil, errors.New("maxPool: the Indices output is not supported")
		}
		win, err := onnximport.ParseWindow(c.node, nil)
		if err != nil {
			return nil, nil, err
		}
		y, err := maxPool(in[0], win)
		return []*G.Node{y}, nil, err
	},
	"AveragePool": func(c *conformanceCase, in []*G.Node) ([]*G.Node, func() [][]float64, error) {
		win, err := onnximport.ParseWindow(c.node, nil)
		if err != nil {
			return nil, nil, err
		}
		y, err := avgPool(in[0], win, onnximport.AttrInt(c.node, "count_include_pad", 0) != 0)
		return []*G.Node{y}, nil, err
	},
	"GlobalAveragePool": func(c *conformanceCase, in []*G.Node) ([]*G.Node, func() [][]float64, error) {
		y, err := globalAvgPool(in[0])
		return []*G.Node{y}, nil, err
	},
	"BatchNormalization": func(c *conformanceCase, in []*G.Node) ([]*G.Node, func() [][]float64, error) {
		train := onnximport.AttrInt(c.node, "training_mode", 0) == 1
		if onnximport.AttrInt(c.node, "spatial", 1) != 1 {
			return nil, nil, errors.New("batchNorm: spatial 0 is not supported")
		}
		if !train && len(c.node.GetOutput()) > 1 {
			return nil, nil, errors.New("batchNorm: outputs besides Y are only supported in training mode")
		}
		eps := float64(onnximport.AttrFloat(c.node, "epsilon", 1e-5))
		y, stat, err := batchNorm(in[0], in[1], in[2], in[3], in[4], eps, train)
		if err != nil || !train {
			return []*G.Node{y}, nil, err
		}
		momentum := float64(onnximport.AttrFloat(c.node, "momentum", 0.9))
		running := func() [][]float64 {
			mean, variance := c.in[3].Float, c.in[4].Float
			out := [][]float64{make([]float64, len(mean)), make([]float64, len(variance))}
			for i := range mean {
				out[0][i] = momentum*float64(mean[i]) + (1-momentum)*stat.Mean[i]
				out[1][i] = momentum*float64(variance[i]) + (1-momentum)*stat.Var[i]
			}
			return out[:len(c.node.GetOutput())-1]
		}
		return []*G.Node{y}, running, nil
	},
	"Clip": func(c *conformanceCase, in []*G.Node) ([]*G.Node, func() [][]float64, error) {
		lo, hi := math.Inf(-1), math.Inf(1)
		if c.opset < 11 {
			lo = float64(onnximport.AttrFloat(c.node, "min", -math.MaxFloat32))
			hi = float64(onnximport.AttrFloat(c.node, "max", math.MaxFloat32))
		}
		if len(c.in) > 1 && c.in[1] != nil {
			lo = float64(c.in[1].Float[0])
		}
		if len(c.in) > 2 && c.in[2] != nil {
			hi = float64(c.in[2].Float[0])
		}
		y, err := clip(in[0], lo, hi)
		return []*G.Node{y}, nil, err
	},
	"LeakyRelu": func(c *conformanceCase, in []*G.Node) ([]*G.Node, func() [][]float64, error) {
		y, err := leakyRelu(in[0], float64(onnximport.AttrFloat(c.node, "alpha", 0.01)))
		return []*G.Node{y}, nil, err
	},
}

// conformanceScalarInputs are the inputs read as numbers, not graph
// nodes: Clip's bounds.
var conformanceScalarInputs = map[string]int{"Clip": 1}

// conformanceCases returns the single-node cases of the operators of
// conformanceBuilders, or skips the test when the data is missing (fails
// with DCCONVERT_REQUIRE_PEERS=1).
func conformanceCases(t *testing.T) []*conformanceCase {
	t.Helper()
	var paths []string
	for _, sub := range []string{"node", "pytorch-converted", "pytorch-operator"} {
		m, _ := filepath.Glob(filepath.Join(conformanceRoot, sub, "*", "model.onnx"))
		paths = append(paths, m...)
	}
	if len(paths) == 0 {
		msg := "ONNX backend test data not found under " + conformanceRoot + " (apt-get install -y libonnx-testdata)"
		if os.Getenv("DCCONVERT_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	sort.Strings(paths)
	var cases []*conformanceCase
	for _, p := range paths {
		c, err := loadConformanceCase(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if c != nil {
			cases = append(cases, c)
		}
	}
	return cases
}

// loadConformanceCase reads a model and its first data set, or returns
// nil when the model is not a single node of an operator under test.
// Models onnximport refuses only for their old operator set (the
// pytorch-converted ones use opset 6, GlobalAveragePool's opset 1) are
// decoded unchecked: these operators mean the same in those sets.
func loadConformanceCase(path string) (*conformanceCase, error) {
	m, err := onnximport.ReadFile(path)
	if err != nil {
		b, rerr := os.ReadFile(path)
		if rerr != nil {
			return nil, rerr
		}
		if m, err = onnximport.Decode(b); err != nil {
			return nil, err
		}
	}
	nodes := m.Graph().GetNode()
	if len(nodes) != 1 || conformanceBuilders[nodes[0].GetOpType()] == nil || !onnximport.IsDefaultDomain(nodes[0].GetDomain()) {
		return nil, nil
	}
	dir := filepath.Dir(path)
	rel, _ := filepath.Rel(conformanceRoot, dir)
	c := &conformanceCase{name: rel, model: m, node: nodes[0], opset: m.Opset("")}
	// Values by name: initializers, then the graph inputs without one,
	// fed from input_i.pb in order.
	values := map[string]*onnximport.Tensor{}
	for name, tp := range m.Initializers() {
		if values[name], err = m.Tensor(tp); err != nil {
			return nil, err
		}
	}
	i := 0
	for _, vi := range m.Graph().GetInput() {
		if _, ok := values[vi.GetName()]; ok {
			continue
		}
		if values[vi.GetName()], err = readTensorFile(m, filepath.Join(dir, "test_data_set_0", fmt.Sprintf("input_%d.pb", i))); err != nil {
			return nil, err
		}
		i++
	}
	for _, name := range c.node.GetInput() {
		c.in = append(c.in, values[name]) // nil for "" (absent)
	}
	for i := range c.node.GetOutput() {
		out, err := readTensorFile(m, filepath.Join(dir, "test_data_set_0", fmt.Sprintf("output_%d.pb", i)))
		if err != nil {
			return nil, err
		}
		c.wanted = append(c.wanted, out)
	}
	return c, nil
}

// readTensorFile decodes a TensorProto file.
func readTensorFile(m *onnximport.Model, path string) (*onnximport.Tensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	tp := &onnxpb.TensorProto{}
	if err := proto.Unmarshal(b, tp); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m.Tensor(tp)
}

// run builds the case's node in a graph of element type dt, runs it and
// returns its outputs as float64.
func (c *conformanceCase) run(t *testing.T, dt tensor.Dtype) ([][]float64, error) {
	t.Helper()
	for i, in := range c.in {
		if in != nil && in.Float == nil {
			return nil, fmt.Errorf("input %d has data type %v", i, in.Type)
		}
	}
	g := G.NewGraph()
	var nodes []*G.Node
	for i, in := range c.in {
		if in == nil || (conformanceScalarInputs[c.node.GetOpType()] > 0 && i >= conformanceScalarInputs[c.node.GetOpType()]) {
			nodes = append(nodes, nil)
			continue
		}
		shape := make([]int, len(in.Dims))
		for j, d := range in.Dims {
			shape[j] = int(d)
		}
		var v *tensor.Dense
		if dt == tensor.Float32 {
			v = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float32(nil), in.Float...)))
		} else {
			f := make([]float64, len(in.Float))
			for j, x := range in.Float {
				f[j] = float64(x)
			}
			v = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
		}
		nodes = append(nodes, G.NewTensor(g, dt, len(shape), G.WithShape(shape...), G.WithName(fmt.Sprintf("in%d", i)), G.WithValue(v)))
	}
	outs, extra, err := conformanceBuilders[c.node.GetOpType()](c, nodes)
	if err != nil {
		return nil, err
	}
	for i, out := range c.wanted {
		if out.Float == nil {
			return nil, fmt.Errorf("output %d has data type %v", i, out.Type)
		}
	}
	vals := make([]G.Value, len(outs))
	for i, o := range outs {
		G.Read(o, &vals[i])
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("%s: running: %v", c.name, err)
	}
	var got [][]float64
	for i, v := range vals {
		if want := c.wanted[i].Dims; !cmp.Equal(shapeOf(outs[i]), want) {
			t.Errorf("%s: output %d has shape %v, want %v", c.name, i, outs[i].Shape(), want)
		}
		got = append(got, floatsOf(t, v))
	}
	if extra != nil {
		got = append(got, extra()...)
	}
	return got, nil
}

// shapeOf returns a node's shape as int64s.
func shapeOf(n *G.Node) []int64 {
	var s []int64
	for _, d := range n.Shape() {
		s = append(s, int64(d))
	}
	return s
}

// TestOpsConformance runs every single-node Conv, MaxPool, AveragePool,
// GlobalAveragePool, BatchNormalization, Clip and LeakyRelu model of
// ONNX's backend test data, in float32 and float64, and compares each
// output with the reference within 1e-5 (absolute or relative). Cases
// the operations refuse (1-D and 3-D windows, integer types, MaxPool's
// Indices output) are listed with the reason in
// testdata/ops_unsupported.golden (go test -update rewrites it).
func TestOpsConformance(t *testing.T) {
	const tol = 1e-5
	var report strings.Builder
	passed, failed, unsupported := 0, 0, 0
	for _, c := range conformanceCases(t) {
		ok, refused := true, false
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			got, err := c.run(t, dt)
			if err != nil {
				fmt.Fprintf(&report, "%s: %v\n", c.name, err)
				refused = true
				break
			}
			if len(got) != len(c.wanted) {
				t.Errorf("%s: %d outputs, want %d", c.name, len(got), len(c.wanted))
				ok = false
				continue
			}
			for i, w := range c.wanted {
				want := make([]float64, len(w.Float))
				for j, x := range w.Float {
					want[j] = float64(x)
				}
				if !compareFloats(t, fmt.Sprintf("%s %v output %d", c.name, dt, i), got[i], want, tol, tol) {
					ok = false
				}
			}
		}
		switch {
		case refused:
			unsupported++
		case ok:
			passed++
		default:
			failed++
		}
	}
	t.Logf("%d passed, %d failed, %d unsupported (listed in testdata/ops_unsupported.golden)", passed, failed, unsupported)
	compareGolden(t, "testdata/ops_unsupported.golden", report.String())
}

// compareGolden compares got with a golden file, or rewrites the file
// under -update.
func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s changed (-want +got; go test -update accepts the change):\n%s", path, diff)
	}
}

// TestKernelOutputReuse runs x -> Relu -> Reshape -> Clip -> Reshape
// several times with new inputs and checks every result: the kernels
// compute into the tensors of their first run (Relu overwriting it, Clip
// zeroing it first), even after Gorgonia's Reshape has reshaped them in
// place.
func TestKernelOutputReuse(t *testing.T) {
	g := G.NewGraph()
	x := G.NewTensor(g, tensor.Float64, 2, G.WithShape(2, 3), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(make([]float64, 6)))))
	y, err := relu(x)
	if err != nil {
		t.Fatal(err)
	}
	flat, err := G.Reshape(y, tensor.Shape{6})
	if err != nil {
		t.Fatal(err)
	}
	c, err := clip(flat, -1, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	out, err := G.Reshape(c, tensor.Shape{3, 2})
	if err != nil {
		t.Fatal(err)
	}
	var got G.Value
	G.Read(out, &got)
	m := G.NewTapeMachine(g)
	defer m.Close()
	var first []*tensor.Dense
	for run, in := range [][]float64{{-1, 0.2, 3, 0.4, -0.5, 0.1}, {0.3, -2, 0.6, 0.1, 0.7, -0.2}, {1, 1, 1, -1, -1, -1}} {
		if err := G.Let(x, tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(in))); err != nil {
			t.Fatal(err)
		}
		m.Reset()
		if err := m.RunAll(); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		want := make([]float64, len(in))
		for i, v := range in {
			want[i] = min(max(v, 0), 0.5)
		}
		if d, ok := got.(*tensor.Dense); !ok || !d.Shape().Eq(tensor.Shape{3, 2}) || !cmp.Equal(d.Float64s(), want) {
			t.Errorf("run %d: %v, want %v of shape (3, 2)", run, got, want)
		}
		vals := []*tensor.Dense{y.Value().(*tensor.Dense), c.Value().(*tensor.Dense)}
		if first == nil {
			first = vals
		}
		for i, v := range vals {
			if v != first[i] {
				t.Errorf("run %d: kernel %d computed into a new tensor", run, i)
			}
		}
	}
}
