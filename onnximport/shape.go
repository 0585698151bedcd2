package onnximport

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// maxFolded bounds the length of integer tensors whose values are folded
// for shape computations.
const maxFolded = 64

// Shapes maps value names of a graph to their inferred shapes.
type Shapes map[string]Shape

// ShapeOps lists the default-domain operators InferShapes understands.
func ShapeOps() []string {
	ops := make([]string, 0, len(shapeRules))
	for op := range shapeRules {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return ops
}

// inference is the state of one InferShapes run.
type inference struct {
	m      *Model
	opset  int64
	shapes Shapes
	vals   map[string][]Dim // folded integer values of small tensors
}

// shapeRule computes the output shapes of one node from the state.
type shapeRule func(s *inference, n *onnxpb.NodeProto) ([]Shape, error)

// shapeRules holds the rule of each supported operator.
var shapeRules = map[string]shapeRule{
	OpAdd: broadcastRule, OpSub: broadcastRule, OpMul: broadcastRule, OpDiv: broadcastRule,
	OpRelu: sameRule, OpLeakyRelu: sameRule, OpSigmoid: sameRule, OpTanh: sameRule, OpClip: sameRule,
	OpSoftmax: sameRule, OpLogSoftmax: sameRule, OpIdentity: sameRule, OpCast: sameRule,
	OpAbs: sameRule, OpAcos: sameRule, OpExp: sameRule, OpLog: sameRule, OpNeg: sameRule,
	OpReciprocal: sameRule, OpSqrt: sameRule,
	OpReduceMean: reduceRule, OpReduceSum: reduceRule, OpReduceSumSquare: reduceRule,
	OpTranspose: transposeRule,
	OpDropout:   dropoutRule, OpBatchNormalization: batchNormRule,
	OpConv: convRule, OpMaxPool: poolRule, OpAveragePool: poolRule,
	OpGlobalAveragePool: globalPoolRule, OpFlatten: flattenRule, OpReshape: reshapeRule,
	OpGemm: gemmRule, OpMatMul: matMulRule, OpConcat: concatRule, OpConstant: constantRule,
	OpShape: shapeOpRule, OpGather: gatherRule, OpUnsqueeze: unsqueezeRule, OpSqueeze: squeezeRule,
}

// InferShapes computes the shape of every value of the main graph it can,
// starting from the declared shapes of the graph inputs (a dim_param or a
// missing dimension stays symbolic) and the initializers. Nodes whose
// operator is not supported are reported, all together, in the error; the
// shapes that could be computed are returned either way. A node whose
// input shapes are unknown because of an earlier problem gets no shape and
// no error of its own.
func (m *Model) InferShapes() (Shapes, error) {
	s := &inference{m: m, opset: m.Opset(""), shapes: Shapes{}, vals: map[string][]Dim{}}
	g := m.Graph()
	for _, in := range g.GetInput() {
		if sh, ok := DeclaredShape(in); ok {
			s.shapes[in.GetName()] = sh
		}
	}
	for _, t := range g.GetInitializer() {
		s.shapes[t.GetName()] = ShapeOf(t.GetDims()...)
		s.fold(t.GetName(), t)
	}
	var errs []error
	for i, n := range g.GetNode() {
		if err := s.node(n); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", nodeLabel(i, n), err))
		}
	}
	return s.shapes, joinLimited(errs)
}

// errUnknownInput stops a node whose inputs have no shape.
var errUnknownInput = errors.New("input shape unknown")

// node infers the outputs of one node.
func (s *inference) node(n *onnxpb.NodeProto) error {
	rule, ok := shapeRules[n.GetOpType()]
	switch {
	case IsDecoupledConv(n):
		rule, ok = convRule, true
	case !IsDefaultDomain(n.GetDomain()):
		return fmt.Errorf("shape inference does not support domain %q", n.GetDomain())
	}
	if !ok {
		return fmt.Errorf("shape inference does not support this operator")
	}
	if len(n.GetOutput()) == 0 || n.GetOutput()[0] == "" {
		return fmt.Errorf("node has no output")
	}
	outs, err := rule(s, n)
	if errors.Is(err, errUnknownInput) {
		return nil
	}
	if err != nil {
		return err
	}
	for i, name := range n.GetOutput() {
		// A nil shape marks an output the rule does not produce; a
		// scalar's shape is empty but not nil.
		if name != "" && i < len(outs) && outs[i] != nil {
			s.shapes[name] = outs[i]
		}
	}
	return nil
}

// DeclaredShape returns the shape declared in a value's tensor type; ok
// is false when the type is not a tensor or declares no shape. A dim_param
// becomes a symbol and a missing dimension Unknown.
func DeclaredShape(v *onnxpb.ValueInfoProto) (Shape, bool) {
	tt := v.GetType().GetTensorType()
	if tt == nil || tt.GetShape() == nil {
		return nil, false
	}
	sh := Shape{}
	for _, d := range tt.GetShape().GetDim() {
		_, hasValue := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue)
		switch {
		case d.GetDimParam() != "":
			sh = append(sh, Dim{Sym: d.GetDimParam()})
		case hasValue && d.GetDimValue() >= 0:
			sh = append(sh, Dim{Size: d.GetDimValue()})
		default:
			sh = append(sh, Unknown)
		}
	}
	return sh, true
}

// fold records the values of a small integer tensor.
func (s *inference) fold(name string, t *onnxpb.TensorProto) {
	if IsFloatType(dataType(t)) || len(t.GetDims()) > 1 {
		return
	}
	if n, err := numElements(t.GetDims()); err != nil || n > maxFolded {
		return
	}
	v, err := s.m.Tensor(t)
	if err != nil || v.Int == nil {
		return
	}
	ds := make([]Dim, len(v.Int))
	for i, x := range v.Int {
		ds[i] = Dim{Size: x}
	}
	s.vals[name] = ds
}

// in returns the shape of input i, or errUnknownInput.
func (s *inference) in(n *onnxpb.NodeProto, i int) (Shape, error) {
	if i >= len(n.GetInput()) || n.GetInput()[i] == "" {
		return nil, fmt.Errorf("input %d is missing", i)
	}
	sh, ok := s.shapes[n.GetInput()[i]]
	if !ok {
		return nil, errUnknownInput
	}
	return sh, nil
}

// value returns the folded integer values of input i.
func (s *inference) value(n *onnxpb.NodeProto, i int) ([]Dim, bool) {
	if i >= len(n.GetInput()) {
		return nil, false
	}
	v, ok := s.vals[n.GetInput()[i]]
	return v, ok
}

// normAxis maps a possibly negative axis into [0, rank).
func normAxis(axis int64, rank int) (int, error) {
	if axis < 0 {
		axis += int64(rank)
	}
	if axis < 0 || axis >= int64(rank) {
		return 0, fmt.Errorf("axis %d is out of range for rank %d", axis, rank)
	}
	return int(axis), nil
}

func sameRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	if n.GetOpType() == OpCast || n.GetOpType() == OpIdentity {
		if v, ok := s.value(n, 0); ok {
			s.vals[n.GetOutput()[0]] = v
		}
	}
	return []Shape{x}, nil
}

func dropoutRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	return []Shape{x, x}, nil
}

func batchNormRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	if len(x) < 2 {
		return nil, fmt.Errorf("input has rank %d, want at least 2", len(x))
	}
	c := Shape{x[1]}
	return []Shape{x, c, c, c, c}, nil
}

func broadcastRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	a, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	b, err := s.in(n, 1)
	if err != nil {
		return nil, err
	}
	out, err := Broadcast(a, b)
	if err != nil {
		return nil, err
	}
	return []Shape{out}, nil
}

// Broadcast returns the shape of numpy-style multidirectional
// broadcasting of a and b.
func Broadcast(a, b Shape) (Shape, error) {
	r := max(len(a), len(b))
	out := make(Shape, r)
	for i := 0; i < r; i++ {
		da, db := Dim{Size: 1}, Dim{Size: 1}
		if j := len(a) - r + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - r + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db:
			out[i] = da
		case da.Known() && da.Size == 1:
			out[i] = db
		case db.Known() && db.Size == 1:
			out[i] = da
		case !da.Known() && db.Known():
			out[i] = db
		case da.Known() && !db.Known():
			out[i] = da
		case !da.Known() && !db.Known():
			out[i] = Unknown
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast", a, b)
		}
	}
	return out, nil
}

func convRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	w, err := s.in(n, 1)
	if err != nil {
		return nil, err
	}
	if len(x) < 3 || len(w) != len(x) {
		return nil, fmt.Errorf("input shape %v and weight shape %v do not fit a convolution", x, w)
	}
	kernel, ok := w[2:].Static()
	if !ok {
		return nil, fmt.Errorf("weight shape %v is not static", w)
	}
	win, err := ParseWindow(n, kernel)
	if err != nil {
		return nil, err
	}
	group := AttrInt(n, "group", 1)
	if group < 1 {
		return nil, fmt.Errorf("group %d must be positive", group)
	}
	if x[1].Known() && w[1].Known() && x[1].Size != w[1].Size*group {
		return nil, fmt.Errorf("input has %d channels, weight %v with group %d expects %d", x[1].Size, w, group, w[1].Size*group)
	}
	if w[0].Known() && w[0].Size%group != 0 {
		return nil, fmt.Errorf("%d output channels are not divisible by group %d", w[0].Size, group)
	}
	sp, _, err := win.Output(x[2:])
	if err != nil {
		return nil, err
	}
	return []Shape{append(Shape{x[0], w[0]}, sp...)}, nil
}

func poolRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	if len(x) < 3 {
		return nil, fmt.Errorf("input has rank %d, want at least 3", len(x))
	}
	if AttrInts(n, "kernel_shape") == nil {
		return nil, fmt.Errorf("attribute kernel_shape is missing")
	}
	win, err := ParseWindow(n, nil)
	if err != nil {
		return nil, err
	}
	sp, _, err := win.Output(x[2:])
	if err != nil {
		return nil, err
	}
	out := append(Shape{x[0], x[1]}, sp...)
	return []Shape{out, out}, nil
}

func globalPoolRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	if len(x) < 3 {
		return nil, fmt.Errorf("input has rank %d, want at least 3", len(x))
	}
	out := Shape{x[0], x[1]}
	for range x[2:] {
		out = append(out, Dim{Size: 1})
	}
	return []Shape{out}, nil
}

func flattenRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	axis := AttrInt(n, "axis", 1)
	if axis < 0 {
		axis += int64(len(x))
	}
	if axis < 0 || axis > int64(len(x)) {
		return nil, fmt.Errorf("axis %d is out of range for rank %d", AttrInt(n, "axis", 1), len(x))
	}
	return []Shape{{product(x[:axis]), product(x[axis:])}}, nil
}

func reshapeRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	target, ok := s.value(n, 1)
	if !ok {
		if _, err := s.in(n, 1); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("target shape %q is not a constant", n.GetInput()[1])
	}
	allowZero := AttrInt(n, "allowzero", 0) != 0
	out := make(Shape, len(target))
	infer := -1
	for i, d := range target {
		switch {
		case d.Known() && d.Size == -1:
			if infer >= 0 {
				return nil, fmt.Errorf("target shape %v has more than one -1", Shape(target))
			}
			infer = i
		case d.Known() && d.Size == 0 && !allowZero:
			if i >= len(x) {
				return nil, fmt.Errorf("target shape %v copies dimension %d of rank-%d input", Shape(target), i, len(x))
			}
			out[i] = x[i]
		case d.Known() && d.Size < 0:
			return nil, fmt.Errorf("target shape %v has a negative dimension", Shape(target))
		default:
			out[i] = d
		}
	}
	total := product(x)
	if infer >= 0 {
		rest := append(append([]Dim(nil), out[:infer]...), out[infer+1:]...)
		q, ok := quotient(total, rest)
		if !ok {
			return nil, fmt.Errorf("cannot reshape %v to %v", x, Shape(target))
		}
		out[infer] = q
	} else if p := product(out); total.Known() && p.Known() && p.Size != total.Size {
		return nil, fmt.Errorf("cannot reshape %v (%d elements) to %v (%d elements)", x, total.Size, out, p.Size)
	}
	return []Shape{out}, nil
}

func gemmRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	a, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	b, err := s.in(n, 1)
	if err != nil {
		return nil, err
	}
	if len(a) != 2 || len(b) != 2 {
		return nil, fmt.Errorf("inputs %v and %v must be matrices", a, b)
	}
	m, ka := a[0], a[1]
	if AttrInt(n, "transA", 0) != 0 {
		m, ka = ka, m
	}
	kb, nn := b[0], b[1]
	if AttrInt(n, "transB", 0) != 0 {
		kb, nn = nn, kb
	}
	if ka.Known() && kb.Known() && ka.Size != kb.Size {
		return nil, fmt.Errorf("inner dimensions of %v and %v differ (%d, %d)", a, b, ka.Size, kb.Size)
	}
	return []Shape{{m, nn}}, nil
}

func matMulRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	a, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	b, err := s.in(n, 1)
	if err != nil {
		return nil, err
	}
	if len(a) == 0 || len(b) == 0 {
		return nil, fmt.Errorf("inputs %v and %v must not be scalars", a, b)
	}
	a1, b1 := len(a) == 1, len(b) == 1
	if a1 {
		a = Shape{{Size: 1}, a[0]}
	}
	if b1 {
		b = Shape{b[0], {Size: 1}}
	}
	ka, kb := a[len(a)-1], b[len(b)-2]
	if ka.Known() && kb.Known() && ka.Size != kb.Size {
		return nil, fmt.Errorf("inner dimensions of %v and %v differ", a, b)
	}
	batch, err := Broadcast(a[:len(a)-2], b[:len(b)-2])
	if err != nil {
		return nil, err
	}
	out := append(batch, a[len(a)-2], b[len(b)-1])
	if b1 {
		out = append(out[:len(out)-2], out[len(out)-2])
	}
	if a1 {
		out = append(out[:len(out)-2], out[len(out)-1])
	}
	return []Shape{out}, nil
}

func concatRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	var shapes []Shape
	for i := range n.GetInput() {
		sh, err := s.in(n, i)
		if err != nil {
			return nil, err
		}
		shapes = append(shapes, sh)
	}
	if len(shapes) == 0 {
		return nil, fmt.Errorf("no inputs")
	}
	r := len(shapes[0])
	axis, err := normAxis(AttrInt(n, "axis", 0), r)
	if err != nil {
		return nil, err
	}
	out := append(Shape(nil), shapes[0]...)
	sum, symbolic := int64(0), false
	var vals []Dim
	folded := true
	for i, sh := range shapes {
		if len(sh) != r {
			return nil, fmt.Errorf("input shapes %v and %v differ in rank", shapes[0], sh)
		}
		for j := range sh {
			if j == axis {
				continue
			}
			if out[j].Known() && sh[j].Known() && out[j].Size != sh[j].Size {
				return nil, fmt.Errorf("input shapes %v and %v differ outside axis %d", shapes[0], sh, axis)
			}
		}
		if sh[axis].Known() {
			sum += sh[axis].Size
		} else {
			symbolic = true
		}
		v, ok := s.value(n, i)
		folded = folded && ok
		vals = append(vals, v...)
	}
	if symbolic {
		out[axis] = Unknown
	} else {
		out[axis] = Dim{Size: sum}
	}
	if folded && r == 1 {
		s.vals[n.GetOutput()[0]] = vals
	}
	return []Shape{out}, nil
}

func constantRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	if len(n.GetAttribute()) != 1 {
		return nil, fmt.Errorf("has %d attributes, want exactly one value", len(n.GetAttribute()))
	}
	a := n.GetAttribute()[0]
	out := n.GetOutput()[0]
	switch a.GetName() {
	case "value":
		t := a.GetT()
		if t == nil {
			return nil, fmt.Errorf("attribute value holds no tensor")
		}
		if _, err := numElements(t.GetDims()); err != nil {
			return nil, err
		}
		s.fold(out, t)
		return []Shape{ShapeOf(t.GetDims()...)}, nil
	case "value_float", "value_string":
		return []Shape{{}}, nil
	case "value_int":
		s.vals[out] = []Dim{{Size: a.GetI()}}
		return []Shape{{}}, nil
	case "value_floats":
		return []Shape{ShapeOf(int64(len(a.GetFloats())))}, nil
	case "value_strings":
		return []Shape{ShapeOf(int64(len(a.GetStrings())))}, nil
	case "value_ints":
		v := make([]Dim, len(a.GetInts()))
		for i, x := range a.GetInts() {
			v[i] = Dim{Size: x}
		}
		if len(v) <= maxFolded {
			s.vals[out] = v
		}
		return []Shape{ShapeOf(int64(len(v)))}, nil
	}
	return nil, fmt.Errorf("attribute %q is not supported", a.GetName())
}

func shapeOpRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	r := int64(len(x))
	clampAxis := func(a int64) int64 {
		if a < 0 {
			a += r
		}
		return min(max(a, 0), r)
	}
	start, end := clampAxis(AttrInt(n, "start", 0)), clampAxis(AttrInt(n, "end", r))
	if end < start {
		end = start
	}
	s.vals[n.GetOutput()[0]] = append([]Dim(nil), x[start:end]...)
	return []Shape{ShapeOf(end - start)}, nil
}

func gatherRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	data, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	idx, err := s.in(n, 1)
	if err != nil {
		return nil, err
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("data must not be a scalar")
	}
	axis, err := normAxis(AttrInt(n, "axis", 0), len(data))
	if err != nil {
		return nil, err
	}
	out := append(append(append(Shape{}, data[:axis]...), idx...), data[axis+1:]...)
	dv, ok1 := s.value(n, 0)
	iv, ok2 := s.value(n, 1)
	if ok1 && ok2 && len(data) == 1 {
		var v []Dim
		for _, i := range iv {
			if !i.Known() {
				return []Shape{out}, nil
			}
			j := i.Size
			if j < 0 {
				j += int64(len(dv))
			}
			if j < 0 || j >= int64(len(dv)) {
				return nil, fmt.Errorf("index %d is out of range for %d values", i.Size, len(dv))
			}
			v = append(v, dv[j])
		}
		s.vals[n.GetOutput()[0]] = v
	}
	return []Shape{out}, nil
}

// axesOf returns the axes of Squeeze/Unsqueeze: an attribute before opset
// 13, the second input from 13 on.
func (s *inference) axesOf(n *onnxpb.NodeProto) ([]int64, bool, error) {
	if s.opset < 13 {
		a := AttrInts(n, "axes")
		return a, a != nil, nil
	}
	if len(n.GetInput()) < 2 || n.GetInput()[1] == "" {
		return nil, false, nil
	}
	v, ok := s.value(n, 1)
	if !ok {
		return nil, false, fmt.Errorf("axes %q are not a constant", n.GetInput()[1])
	}
	axes := make([]int64, len(v))
	for i, d := range v {
		if !d.Known() {
			return nil, false, fmt.Errorf("axes %q are not a constant", n.GetInput()[1])
		}
		axes[i] = d.Size
	}
	return axes, true, nil
}

func unsqueezeRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	axes, ok, err := s.axesOf(n)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("axes are missing")
	}
	r := len(x) + len(axes)
	ones := make([]bool, r)
	for _, a := range axes {
		i, err := normAxis(a, r)
		if err != nil {
			return nil, err
		}
		if ones[i] {
			return nil, fmt.Errorf("axis %d is repeated", a)
		}
		ones[i] = true
	}
	out := make(Shape, 0, r)
	j := 0
	for i := 0; i < r; i++ {
		if ones[i] {
			out = append(out, Dim{Size: 1})
		} else {
			out = append(out, x[j])
			j++
		}
	}
	if v, ok := s.value(n, 0); ok && len(out) <= 1 {
		s.vals[n.GetOutput()[0]] = v
	}
	return []Shape{out}, nil
}

func squeezeRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	axes, ok, err := s.axesOf(n)
	if err != nil {
		return nil, err
	}
	drop := make([]bool, len(x))
	if ok {
		for _, a := range axes {
			i, err := normAxis(a, len(x))
			if err != nil {
				return nil, err
			}
			if x[i].Known() && x[i].Size != 1 {
				return nil, fmt.Errorf("axis %d has size %d, not 1", a, x[i].Size)
			}
			drop[i] = true
		}
	} else {
		for i, d := range x {
			if !d.Known() {
				return nil, fmt.Errorf("cannot squeeze %v without axes: dimension %d is symbolic", x, i)
			}
			drop[i] = d.Size == 1
		}
	}
	out := Shape{}
	for i, d := range x {
		if !drop[i] {
			out = append(out, d)
		}
	}
	if v, ok := s.value(n, 0); ok {
		s.vals[n.GetOutput()[0]] = v
	}
	return []Shape{out}, nil
}

// reduceRule infers ReduceSum, ReduceMean and ReduceSumSquare: axes are
// an attribute, or the second input for ReduceSum from opset 13 and the
// others from 18; no axes reduce every axis unless noop_with_empty_axes.
func reduceRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	axes := AttrInts(n, "axes")
	fromInput := s.opset >= 18 || (n.GetOpType() == OpReduceSum && s.opset >= 13)
	if fromInput && len(n.GetInput()) > 1 && n.GetInput()[1] != "" {
		v, ok := s.value(n, 1)
		if !ok {
			return nil, fmt.Errorf("axes %q are not a constant", n.GetInput()[1])
		}
		for _, d := range v {
			axes = append(axes, d.Size)
		}
	}
	if len(axes) == 0 {
		if AttrInt(n, "noop_with_empty_axes", 0) != 0 {
			return []Shape{x}, nil
		}
		for i := range x {
			axes = append(axes, int64(i))
		}
	}
	reduced := make([]bool, len(x))
	for _, a := range axes {
		i, err := normAxis(a, len(x))
		if err != nil {
			return nil, err
		}
		reduced[i] = true
	}
	keep := AttrInt(n, "keepdims", 1) != 0
	out := Shape{}
	for i, d := range x {
		switch {
		case !reduced[i]:
			out = append(out, d)
		case keep:
			out = append(out, Dim{Size: 1})
		}
	}
	return []Shape{out}, nil
}

// transposeRule permutes the dimensions (reversed without a perm).
func transposeRule(s *inference, n *onnxpb.NodeProto) ([]Shape, error) {
	x, err := s.in(n, 0)
	if err != nil {
		return nil, err
	}
	perm := AttrInts(n, "perm")
	if perm == nil {
		for i := len(x) - 1; i >= 0; i-- {
			perm = append(perm, int64(i))
		}
	}
	if len(perm) != len(x) {
		return nil, fmt.Errorf("perm %v does not fit rank %d", perm, len(x))
	}
	out := make(Shape, len(x))
	seen := make([]bool, len(x))
	for i, p := range perm {
		if p < 0 || p >= int64(len(x)) || seen[p] {
			return nil, fmt.Errorf("perm %v is not a permutation", perm)
		}
		seen[p] = true
		out[i] = x[p]
	}
	return []Shape{out}, nil
}

// String lists shapes by name, one per line, sorted, for tests and
// traces.
func (s Shapes) String() string {
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s %v\n", n, s[n])
	}
	return b.String()
}
