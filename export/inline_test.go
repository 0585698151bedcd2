package export

import (
	"bytes"
	"math"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/export/exporttest"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// foldTol is the tolerance of a folded constant against the float64
// formula, relative to the largest value of the tensor.
const foldTol = 1e-6

// TestInlineFolds checks the inline form of decoupled models: no custom
// domain or function is left, and the filters, their norms and the
// learnable radii are initializers holding the formulas of DCNET.md
// section 1 and 2, under the names the package documentation gives,
// while the filters and radius inputs themselves are gone.
func TestInlineFolds(t *testing.T) {
	sigmoid := dcnet.DefaultConfig()
	sigmoid.Magnitude, sigmoid.Angular, sigmoid.Weighted, sigmoid.Rho = dcnet.MagTanh, dcnet.AngSigmoid, dcnet.WeightLinear, 2
	seg := dcnet.DefaultConfig()
	seg.Magnitude, seg.Weighted, seg.LearnRho, seg.Eps = dcnet.MagSeg, dcnet.WeightLog, true, 1e-3
	for _, c := range []struct {
		name string
		o    exporttest.Options
	}{
		{"ball-learn-opset13", exporttest.Options{Opset: 13, Decoupled: ballLearn()}},
		{"tanh-weighted-linear-opset11", exporttest.Options{Opset: 11, Decoupled: &sigmoid}},
		{"seg-weighted-log-opset7", exporttest.Options{Opset: 7, Decoupled: &seg}},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.o.Steps = 2
			r := makeRun(t, c.o)
			m, err := load(t, r, Last).Model()
			if err != nil {
				t.Fatal(err)
			}
			before, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			in, err := Inline(m)
			if err != nil {
				t.Fatal(err)
			}
			if after, _ := m.Encode(); !bytes.Equal(before, after) {
				t.Error("Inline changed its argument")
			}
			if err := in.Check(); err != nil {
				t.Fatal(err)
			}
			if len(in.Proto.GetFunctions()) != 0 || in.Opset(dcnet.Domain) != 0 {
				t.Errorf("%d functions and %s opset %d left", len(in.Proto.GetFunctions()), dcnet.Domain, in.Opset(dcnet.Domain))
			}
			for _, n := range in.Graph().GetNode() {
				if !onnximport.IsDefaultDomain(n.GetDomain()) {
					t.Errorf("node %q is in domain %q", n.GetName(), n.GetDomain())
				}
			}
			src := initializerValues(t, m)
			got := initializerValues(t, in)
			layers := 0
			for _, n := range m.Graph().GetNode() {
				if !dcnet.IsDecoupled(n) {
					continue
				}
				layers++
				checkFolded(t, n, src, got)
			}
			if layers != 4 {
				t.Errorf("%d decoupled layers, want 4", layers)
			}
		})
	}
}

// checkFolded compares the folded constants of decoupled node n with
// the formulas, from the function form's initializers src.
func checkFolded(t *testing.T, n *onnxpb.NodeProto, src, got map[string]*onnximport.Tensor) {
	t.Helper()
	cfg, err := dcnet.FromNode(n)
	if err != nil {
		t.Fatal(err)
	}
	wName := n.GetInput()[dcnet.IndexW]
	w := src[wName]
	cout, per := int(w.Dims[0]), int(w.Dims[1]*w.Dims[2]*w.Dims[3])
	norms := make([]float64, cout)
	dir := make([]float64, len(w.Float))
	for c := range cout {
		s := 0.0
		for _, x := range w.Float[c*per : (c+1)*per] {
			s += float64(x) * float64(x)
		}
		norms[c] = math.Sqrt(s + float64(cfg.Eps))
		for k := c * per; k < (c+1)*per; k++ {
			dir[k] = float64(w.Float[k]) / norms[c]
		}
	}
	expect := func(name string, dims []int64, want []float64) {
		t.Helper()
		v, ok := got[name]
		if !ok {
			t.Errorf("no initializer %q", name)
			return
		}
		if !slices.Equal(v.Dims, dims) {
			t.Errorf("initializer %q has shape %v, want %v", name, v.Dims, dims)
		}
		want32 := make([]float32, len(want))
		for i, x := range want {
			want32[i] = float32(x)
		}
		if d, ok := maxRelDiff(v.Float, want32); !ok || d > foldTol {
			t.Errorf("initializer %q differs from the formula by %.3g of its largest value", name, d)
		}
	}
	expect(wName+".normalized", w.Dims, dir)
	ones := slices.Repeat([]float64{1}, per)
	expect(n.GetName()+".ones", []int64{1, w.Dims[1], w.Dims[2], w.Dims[3]}, ones)
	channel := []int64{1, int64(cout), 1, 1}
	switch cfg.Weighted {
	case dcnet.WeightLinear:
		expect(wName+".norm", channel, norms)
	case dcnet.WeightLog:
		logs := make([]float64, cout)
		for c, x := range norms {
			logs[c] = math.Log(1 + x)
		}
		expect(wName+".log1p_norm", channel, logs)
	}
	gone := []string{wName}
	if cfg.LearnRho {
		v, s := src[n.GetInput()[dcnet.IndexRhoV]], src[n.GetInput()[dcnet.IndexRhoScale]]
		rho := make([]float64, cout)
		for c, x := range v.Float {
			rho[c] = (float64(x)*float64(x) + dcnet.RhoFloor) * float64(s.Float[0])
		}
		expect(n.GetName()+".rho", channel, rho)
		gone = append(gone, n.GetInput()[dcnet.IndexRhoV], n.GetInput()[dcnet.IndexRhoScale])
	}
	for _, name := range gone {
		if _, ok := got[name]; ok {
			t.Errorf("initializer %q is still there", name)
		}
	}
}

// TestEvaluate checks the constant evaluator on broadcasting, reductions
// and reshapes with small hand-computed cases.
func TestEvaluate(t *testing.T) {
	f := func(dims []int64, v ...float32) *value { return &value{dims: dims, f: v} }
	ints := func(v ...int64) *value { return &value{dims: []int64{int64(len(v))}, i: v} }
	node := func(op string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{OpType: proto.String(op), Attribute: attrs}
	}
	intsAttr := func(name string, v ...int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
	}
	intAttr := func(name string, v int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
	}
	a23 := f([]int64{2, 3}, 1, 2, 3, 4, 5, 6)
	tests := []struct {
		name string
		n    *onnxpb.NodeProto
		in   []*value
		want *value
	}{
		{"add row", node("Add"), []*value{a23, f([]int64{3}, 10, 20, 30)}, f([]int64{2, 3}, 11, 22, 33, 14, 25, 36)},
		{"sub column", node("Sub"), []*value{a23, f([]int64{2, 1}, 1, 2)}, f([]int64{2, 3}, 0, 1, 2, 2, 3, 4)},
		{"mul scalar", node("Mul"), []*value{f(nil, 2), a23}, f([]int64{2, 3}, 2, 4, 6, 8, 10, 12)},
		{"div outer", node("Div"), []*value{f([]int64{2, 1}, 6, 12), f([]int64{1, 3}, 1, 2, 3)}, f([]int64{2, 3}, 6, 3, 2, 12, 6, 4)},
		{"sqrt", node("Sqrt"), []*value{f([]int64{2}, 4, 9)}, f([]int64{2}, 2, 3)},
		{"sum of squares rows", node("ReduceSumSquare", intsAttr("axes", 1)), []*value{a23}, f([]int64{2, 1}, 14, 77)},
		{"mean columns no keepdims", node("ReduceMean", intsAttr("axes", -2), intAttr("keepdims", 0)), []*value{a23}, f([]int64{3}, 2.5, 3.5, 4.5)},
		{"sum all, axes input", node("ReduceSum"), []*value{a23, ints()}, f([]int64{1, 1}, 21)},
		{"transpose", node("Transpose"), []*value{a23}, f([]int64{3, 2}, 1, 4, 2, 5, 3, 6)},
		{"transpose perm", node("Transpose", intsAttr("perm", 1, 0, 2)), []*value{f([]int64{1, 2, 2}, 1, 2, 3, 4)}, f([]int64{2, 1, 2}, 1, 2, 3, 4)},
		{"unsqueeze attribute", node("Unsqueeze", intsAttr("axes", 0, 2, 3)), []*value{f([]int64{2}, 1, 2)}, f([]int64{1, 2, 1, 1}, 1, 2)},
		{"unsqueeze input negative", node("Unsqueeze"), []*value{f([]int64{2}, 1, 2), ints(-1)}, f([]int64{2, 1}, 1, 2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := evaluate(tc.n, tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(value{}), cmp.Comparer(func(a, b []int64) bool {
				return slices.Equal(a, b)
			})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if _, err := evaluate(node("Add"), []*value{a23, f([]int64{2}, 1, 2)}); err == nil {
		t.Error("shapes [2 3] and [2] broadcast")
	}
}
