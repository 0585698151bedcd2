package finetune

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Classes returns the number of classes m's classifier outputs: the
// output width of its last Gemm or MatMul.
func Classes(m *onnximport.Model) (int, error) {
	h, err := findHead(m)
	if err != nil {
		return 0, err
	}
	w, _ := m.Initializer(h.weight)
	if len(w.GetDims()) != 2 {
		return 0, fmt.Errorf("classifier weight %q has shape %v, want 2 dimensions", h.weight, w.GetDims())
	}
	if h.outFirst {
		return int(w.GetDims()[0]), nil
	}
	return int(w.GetDims()[1]), nil
}

// NewHead replaces m's classifier (the last Gemm or MatMul and its bias)
// with a new one of the same input width and the given number of
// classes, initialised as PyTorch initialises nn.Linear: weight and bias
// uniform in [-1/sqrt(in), 1/sqrt(in)], drawn from a generator seeded
// with seed. The initializers keep their names; a classifier without a
// bias keeps none. Declared shapes of the values after the classifier are
// dropped, the graph output's class dimension is set.
func NewHead(m *onnximport.Model, classes int, seed uint64) error {
	if classes < 1 {
		return fmt.Errorf("new head: %d classes", classes)
	}
	h, err := findHead(m)
	if err != nil {
		return fmt.Errorf("new head: %w", err)
	}
	w, _ := m.Initializer(h.weight)
	dims := w.GetDims()
	if len(dims) != 2 {
		return fmt.Errorf("new head: classifier weight %q has shape %v, want 2 dimensions", h.weight, dims)
	}
	in := dims[1]
	if !h.outFirst {
		in = dims[0]
	}
	bound := 1 / math.Sqrt(float64(in))
	r := rand.New(rand.NewPCG(seed, 0x6865616421)) // "head!"
	uniform := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32((2*r.Float64() - 1) * bound)
		}
		return v
	}
	newDims := []int64{int64(classes), in}
	if !h.outFirst {
		newDims = []int64{in, int64(classes)}
	}
	replaceInit(m, onnximport.FloatTensor(h.weight, newDims, uniform(classes*int(in))))
	if h.bias != "" {
		b, _ := m.Initializer(h.bias)
		bd := []int64{int64(classes)}
		if len(b.GetDims()) == 2 { // a [1, classes] bias stays 2-D
			bd = []int64{1, int64(classes)}
		}
		replaceInit(m, onnximport.FloatTensor(h.bias, bd, uniform(classes)))
	}
	dropShapesAfter(m, h.node)
	for _, o := range m.Graph().GetOutput() {
		if t := o.GetType().GetTensorType(); t != nil && len(t.GetShape().GetDim()) == 2 {
			t.GetShape().GetDim()[1] = &onnxpb.TensorShapeProto_Dimension{
				Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(classes)}}
		}
	}
	return nil
}

// replaceInit puts t in place of the initializer of the same name, and
// sets the declared shape of a graph input of that name (models before IR
// 4 list their initializers as inputs).
func replaceInit(m *onnximport.Model, t *onnxpb.TensorProto) {
	g := m.Graph()
	for i, old := range g.GetInitializer() {
		if old.GetName() == t.GetName() {
			g.GetInitializer()[i] = t
		}
	}
	for _, vi := range g.GetInput() {
		tt := vi.GetType().GetTensorType()
		if vi.GetName() != t.GetName() || tt == nil || tt.GetShape() == nil {
			continue
		}
		dims := make([]*onnxpb.TensorShapeProto_Dimension, len(t.GetDims()))
		for i, d := range t.GetDims() {
			dims[i] = &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}}
		}
		tt.Shape.Dim = dims
	}
}

// dropShapesAfter removes the value_info entries of the values computed
// by node i and after it, whose shapes may change with the classifier.
func dropShapesAfter(m *onnximport.Model, i int) {
	g := m.Graph()
	after := map[string]bool{}
	for _, n := range g.GetNode()[i:] {
		for _, o := range n.GetOutput() {
			after[o] = true
		}
	}
	kept := g.GetValueInfo()[:0]
	for _, vi := range g.GetValueInfo() {
		if !after[vi.GetName()] {
			kept = append(kept, vi)
		}
	}
	g.ValueInfo = kept
}
