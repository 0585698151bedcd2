package engine

import (
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"sync"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/dcnet"
)

// decoupledShared is the state a decoupled convolution's forward
// operation and its gradient operations share: the checked inputs, the
// geometry, the kernel with its buffers, and the radius statistic.
type decoupledShared struct {
	id    uint64
	cfg   dcnet.Config
	train bool
	dt    tensor.Dtype
	geom  im2colGeom
	outC  int
	// nodes, types and shapes of the operation's inputs, in order: X, W,
	// then the optional inputs that are present.
	nodes  []*G.Node
	types  []hm.Type
	shapes []tensor.Shape
	// index maps decoupledIn* to the position among the inputs, or -1.
	index [decoupledInCount]int
	stat  *rhoStat

	mu  sync.Mutex // guards the kernel
	k32 *decoupledKernel[float32]
	k64 *decoupledKernel[float64]
}

// outShape returns the shape of the output, [batch, outC, outH, outW].
func (sh *decoupledShared) outShape() tensor.Shape {
	return tensor.Shape{sh.geom.batch, sh.outC, sh.geom.outH, sh.geom.outW}
}

// gradSizes returns the number of values of each input's gradient, in the
// order of the inputs, and their total.
func (sh *decoupledShared) gradSizes() ([]int, int) {
	sizes := make([]int, len(sh.shapes))
	total := 0
	for i, s := range sh.shapes {
		sizes[i] = max(1, s.TotalSize())
		total += sizes[i]
	}
	return sizes, total
}

// decoupledOp is the forward operation of a decoupled convolution. Its
// inputs are X, W and the present optional inputs in the order B, Alpha,
// RhoV, RhoScale; its output is y.
type decoupledOp struct{ sh *decoupledShared }

// Arity returns the number of inputs.
func (op *decoupledOp) Arity() int { return len(op.sh.types) }

// Type returns the function type from the input types to a 4-D tensor.
func (op *decoupledOp) Type() hm.Type {
	ts := append(append([]hm.Type(nil), op.sh.types...), op.sh.outType())
	return hm.NewFnType(ts...)
}

// InferShape returns the output shape after checking the input shapes.
func (op *decoupledOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if err := op.sh.checkShapes(in, 0); err != nil {
		return nil, err
	}
	return op.sh.outShape(), nil
}

// checkShapes compares the shapes of the first len(sh.shapes) dimsizers
// with the inputs' static shapes; extra counts the dimsizers that follow.
func (sh *decoupledShared) checkShapes(in []G.DimSizer, extra int) error {
	if len(in) != len(sh.shapes)+extra {
		return fmt.Errorf("decoupled convolution: %d inputs, want %d", len(in), len(sh.shapes)+extra)
	}
	for i, want := range sh.shapes {
		s, ok := in[i].(tensor.Shape)
		if !ok || !s.Eq(want) {
			return fmt.Errorf("decoupled convolution: input %d has shape %v, want %v", i, in[i], want)
		}
	}
	return nil
}

// Do computes y.
func (op *decoupledOp) Do(in ...G.Value) (G.Value, error) {
	y := tensor.New(tensor.Of(op.sh.dt), tensor.WithShape(op.sh.outShape()...))
	return op.UsePreallocDo(y, in...)
}

// UsePreallocDo computes y into prealloc, which must be a dense tensor of
// the output's shape and element type.
func (op *decoupledOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	sh := op.sh
	y, ok := prealloc.(*tensor.Dense)
	if !ok || y.Dtype() != sh.dt || !y.Shape().Eq(sh.outShape()) || y.RequiresIterator() || y.IsView() {
		return nil, fmt.Errorf("decoupled convolution: output buffer %v does not fit shape %v", prealloc.Shape(), sh.outShape())
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var scale float64
	var err error
	if sh.dt == tensor.Float32 {
		scale, err = decoupledDoForward(sh, sh.k32, in, y)
	} else {
		scale, err = decoupledDoForward(sh, sh.k64, in, y)
	}
	if err != nil {
		return nil, err
	}
	if sh.stat != nil && sh.train {
		sh.stat.Batch, sh.stat.Valid = scale, true
	}
	return y, nil
}

// decoupledArgs are the input values of a decoupled operation as slices.
type decoupledArgs[T im2colFloat] struct {
	x, w, b, alpha, rhoV []T
	rhoScale             float64
}

// decoupledReadArgs checks the input values against the static shapes
// and returns their data.
func decoupledReadArgs[T im2colFloat](sh *decoupledShared, in []G.Value) (decoupledArgs[T], error) {
	var a decoupledArgs[T]
	if len(in) != len(sh.shapes) {
		return a, fmt.Errorf("decoupled convolution: %d input values, want %d", len(in), len(sh.shapes))
	}
	slice := func(which int) ([]T, error) {
		i := sh.index[which]
		if i < 0 {
			return nil, nil
		}
		return decoupledData[T](in[i], sh.shapes[i], decoupledInputNames[which])
	}
	var errs []error
	var err error
	if a.x, err = slice(decoupledInX); err != nil {
		errs = append(errs, err)
	}
	if a.w, err = slice(decoupledInW); err != nil {
		errs = append(errs, err)
	}
	if a.b, err = slice(decoupledInB); err != nil {
		errs = append(errs, err)
	}
	if a.alpha, err = slice(decoupledInAlpha); err != nil {
		errs = append(errs, err)
	}
	if a.rhoV, err = slice(decoupledInRhoV); err != nil {
		errs = append(errs, err)
	}
	if i := sh.index[decoupledInRhoScale]; i >= 0 {
		if a.rhoScale, err = decoupledScalar(in[i]); err != nil {
			errs = append(errs, err)
		} else if !(a.rhoScale > 0) {
			errs = append(errs, fmt.Errorf("input %s is %g, want a number greater than 0", dcnet.InputRhoScale, a.rhoScale))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return a, fmt.Errorf("decoupled convolution: %w", err)
	}
	return a, nil
}

// decoupledData returns the values of v, a dense tensor of shape want and
// element type T, in row-major order.
func decoupledData[T im2colFloat](v G.Value, want tensor.Shape, name string) ([]T, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("input %s is a %T, want a dense tensor", name, v)
	}
	if !d.Shape().Eq(want) {
		return nil, fmt.Errorf("input %s has shape %v, want %v", name, d.Shape(), want)
	}
	if d.RequiresIterator() {
		d = d.Materialize().(*tensor.Dense)
	}
	data, ok := d.Data().([]T)
	if !ok || len(data) < want.TotalSize() {
		return nil, fmt.Errorf("input %s holds %v values, want %d of type %T", name, d.Dtype(), want.TotalSize(), T(0))
	}
	return data[:want.TotalSize()], nil
}

// decoupledScalar returns the value of a scalar or one-value tensor.
func decoupledScalar(v G.Value) (float64, error) {
	switch s := v.(type) {
	case *G.F32:
		return float64(*s), nil
	case *G.F64:
		return float64(*s), nil
	case *tensor.Dense:
		if s.Shape().TotalSize() == 1 || s.Shape().IsScalar() {
			switch e := s.Get(0).(type) {
			case float32:
				return float64(e), nil
			case float64:
				return e, nil
			}
		}
	}
	return 0, fmt.Errorf("input %s is %v, want one float", dcnet.InputRhoScale, v)
}

// decoupledDoForward runs the kernel's forward on the input values.
func decoupledDoForward[T im2colFloat](sh *decoupledShared, k *decoupledKernel[T], in []G.Value, y *tensor.Dense) (float64, error) {
	a, err := decoupledReadArgs[T](sh, in)
	if err != nil {
		return 0, err
	}
	out, ok := y.Data().([]T)
	if !ok {
		return 0, fmt.Errorf("decoupled convolution: output holds %v, want %T", y.Dtype(), T(0))
	}
	return k.forward(a.x, a.w, a.b, a.alpha, a.rhoV, a.rhoScale, out), nil
}

// ReturnsPtr reports false: the output is a new value.
func (op *decoupledOp) ReturnsPtr() bool { return false }

// CallsExtern reports false: the work is done in Go.
func (op *decoupledOp) CallsExtern() bool { return false }

// OverwritesInput returns -1: no input is overwritten.
func (op *decoupledOp) OverwritesInput() int { return -1 }

// WriteHash writes the operation's identity; every decoupled convolution
// is distinct.
func (op *decoupledOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "DecoupledConv#%d", op.sh.id) }

// Hashcode returns the FNV-1a hash of WriteHash.
func (op *decoupledOp) Hashcode() uint32 { return decoupledHash(op) }

// String describes the operation.
func (op *decoupledOp) String() string {
	return fmt.Sprintf("DecoupledConv#%d(%s)", op.sh.id, op.sh.cfg.Summary())
}

// DiffWRT reports that the operation is differentiable with respect to
// every input.
func (op *decoupledOp) DiffWRT(n int) []bool {
	d := make([]bool, n)
	for i := range d {
		d[i] = true
	}
	return d
}

// SymDiff adds the gradient of every input: one operation computes all of
// them into one vector (reusing the forward's columns, P and N), and one
// operation per input copies its part out.
func (op *decoupledOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	sh := op.sh
	if len(inputs) != len(sh.nodes) {
		return nil, fmt.Errorf("decoupled convolution gradient: %d inputs, want %d", len(inputs), len(sh.nodes))
	}
	args := append(append(G.Nodes(nil), inputs...), grad)
	all, err := G.ApplyOp(&decoupledGradOp{sh: sh}, args...)
	if err != nil {
		return nil, fmt.Errorf("decoupled convolution gradient: %w", err)
	}
	sizes, _ := sh.gradSizes()
	grads := make(G.Nodes, len(inputs))
	off := 0
	for i := range inputs {
		part := &decoupledGradPartOp{sh: sh, input: i, off: off, size: sizes[i]}
		if grads[i], err = G.ApplyOp(part, all); err != nil {
			return nil, fmt.Errorf("decoupled convolution gradient: %w", err)
		}
		off += sizes[i]
	}
	return grads, nil
}

// decoupledHash returns the FNV-1a hash of what op.WriteHash writes.
func decoupledHash(op interface{ WriteHash(hash.Hash) }) uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}

// decoupledGradOp computes the gradients of every input of a decoupled
// convolution, concatenated in the order of the inputs into one vector.
// Its inputs are those of the forward operation followed by dL/dy.
type decoupledGradOp struct{ sh *decoupledShared }

// Arity returns the forward's arity plus one.
func (op *decoupledGradOp) Arity() int { return len(op.sh.types) + 1 }

// Type returns the function type from the inputs and dL/dy to a vector.
func (op *decoupledGradOp) Type() hm.Type {
	ts := append(append([]hm.Type(nil), op.sh.types...), op.sh.outType(), G.TensorType{Dims: 1, Of: op.sh.dt})
	return hm.NewFnType(ts...)
}

// InferShape returns the length of the concatenated gradients.
func (op *decoupledGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if err := op.sh.checkShapes(in, 1); err != nil {
		return nil, err
	}
	if s, ok := in[len(in)-1].(tensor.Shape); !ok || !s.Eq(op.sh.outShape()) {
		return nil, fmt.Errorf("decoupled convolution gradient: dL/dy has shape %v, want %v", in[len(in)-1], op.sh.outShape())
	}
	_, total := op.sh.gradSizes()
	return tensor.Shape{total}, nil
}

// Do computes the gradients into a new vector.
func (op *decoupledGradOp) Do(in ...G.Value) (G.Value, error) {
	_, total := op.sh.gradSizes()
	return op.UsePreallocDo(tensor.New(tensor.Of(op.sh.dt), tensor.WithShape(total)), in...)
}

// UsePreallocDo computes the gradients into prealloc, a dense vector of
// the right length and element type.
func (op *decoupledGradOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	sh := op.sh
	_, total := sh.gradSizes()
	out, ok := prealloc.(*tensor.Dense)
	if !ok || out.Dtype() != sh.dt || !out.Shape().Eq(tensor.Shape{total}) || out.RequiresIterator() || out.IsView() {
		return nil, fmt.Errorf("decoupled convolution gradient: output buffer %v does not fit shape [%d]", prealloc.Shape(), total)
	}
	if len(in) != len(sh.types)+1 {
		return nil, fmt.Errorf("decoupled convolution gradient: %d input values, want %d", len(in), len(sh.types)+1)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var err error
	if sh.dt == tensor.Float32 {
		err = decoupledDoBackward(sh, sh.k32, in, out)
	} else {
		err = decoupledDoBackward(sh, sh.k64, in, out)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decoupledDoBackward runs the kernel's backward on the input values and
// dL/dy (the last value) and writes the gradients into out.
func decoupledDoBackward[T im2colFloat](sh *decoupledShared, k *decoupledKernel[T], in []G.Value, out *tensor.Dense) error {
	n := len(sh.types)
	a, err := decoupledReadArgs[T](sh, in[:n])
	if err != nil {
		return err
	}
	dy, err := decoupledData[T](in[n], sh.outShape(), "dL/dy")
	if err != nil {
		return fmt.Errorf("decoupled convolution gradient: %w", err)
	}
	buf, ok := out.Data().([]T)
	if !ok {
		return fmt.Errorf("decoupled convolution gradient: output holds %v, want %T", out.Dtype(), T(0))
	}
	sizes, _ := sh.gradSizes()
	part := func(which int) []T {
		i := sh.index[which]
		if i < 0 {
			return nil
		}
		off := 0
		for _, s := range sizes[:i] {
			off += s
		}
		return buf[off : off+sizes[i]]
	}
	g := decoupledGradients[T]{
		dx:     part(decoupledInX),
		dw:     part(decoupledInW),
		db:     part(decoupledInB),
		dalpha: part(decoupledInAlpha),
		drhoV:  part(decoupledInRhoV),
	}
	k.backward(a.x, a.w, a.alpha, a.rhoV, a.rhoScale, dy, &g)
	if d := part(decoupledInRhoScale); d != nil {
		d[0] = T(g.drhoScale)
	}
	return nil
}

// ReturnsPtr reports false: the output is a new value.
func (op *decoupledGradOp) ReturnsPtr() bool { return false }

// CallsExtern reports false: the work is done in Go.
func (op *decoupledGradOp) CallsExtern() bool { return false }

// OverwritesInput returns -1: no input is overwritten.
func (op *decoupledGradOp) OverwritesInput() int { return -1 }

// WriteHash writes the operation's identity.
func (op *decoupledGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "DecoupledConvGrad#%d", op.sh.id)
}

// Hashcode returns the FNV-1a hash of WriteHash.
func (op *decoupledGradOp) Hashcode() uint32 { return decoupledHash(op) }

// String describes the operation.
func (op *decoupledGradOp) String() string { return fmt.Sprintf("DecoupledConvGrad#%d", op.sh.id) }

// DiffWRT reports that the gradients are not differentiated again.
func (op *decoupledGradOp) DiffWRT(n int) []bool { return make([]bool, n) }

// SymDiff returns an error: second derivatives are not supported.
func (op *decoupledGradOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, errors.New("decoupled convolution: second derivatives are not supported")
}

// decoupledGradPartOp copies one input's gradient out of the vector
// decoupledGradOp computes, in the input's shape and type.
type decoupledGradPartOp struct {
	sh        *decoupledShared
	input     int // position among the forward's inputs
	off, size int // range in the vector
}

// Arity returns 1.
func (op *decoupledGradPartOp) Arity() int { return 1 }

// Type returns the function type from the vector to the input's type.
func (op *decoupledGradPartOp) Type() hm.Type {
	return hm.NewFnType(G.TensorType{Dims: 1, Of: op.sh.dt}, op.sh.types[op.input])
}

// InferShape returns the input's shape.
func (op *decoupledGradPartOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	if len(in) != 1 {
		return nil, fmt.Errorf("decoupled convolution gradient part: %d inputs, want 1", len(in))
	}
	return op.sh.shapes[op.input].Clone(), nil
}

// Do copies the part into a new value.
func (op *decoupledGradPartOp) Do(in ...G.Value) (G.Value, error) {
	s := op.sh.shapes[op.input]
	if s.IsScalar() {
		return op.UsePreallocDo(nil, in...)
	}
	return op.UsePreallocDo(tensor.New(tensor.Of(op.sh.dt), tensor.WithShape(s.Clone()...)), in...)
}

// UsePreallocDo copies the part into prealloc when it fits (a scalar
// input's gradient is always a new scalar).
func (op *decoupledGradPartOp) UsePreallocDo(prealloc G.Value, in ...G.Value) (G.Value, error) {
	if len(in) != 1 {
		return nil, fmt.Errorf("decoupled convolution gradient part: %d inputs, want 1", len(in))
	}
	all, ok := in[0].(*tensor.Dense)
	if !ok || all.Dtype() != op.sh.dt || all.Shape().TotalSize() < op.off+op.size || all.RequiresIterator() {
		return nil, fmt.Errorf("decoupled convolution gradient part: gradient vector %v does not fit", in[0].Shape())
	}
	s := op.sh.shapes[op.input]
	if s.IsScalar() {
		switch data := all.Data().(type) {
		case []float32:
			return G.NewF32(data[op.off]), nil
		case []float64:
			return G.NewF64(data[op.off]), nil
		}
		return nil, fmt.Errorf("decoupled convolution gradient part: vector of %v", all.Dtype())
	}
	dst, ok := prealloc.(*tensor.Dense)
	if !ok || dst.Dtype() != op.sh.dt || !dst.Shape().Eq(s) || dst.RequiresIterator() || dst.IsView() {
		return nil, fmt.Errorf("decoupled convolution gradient part: output buffer %v does not fit shape %v", prealloc.Shape(), s)
	}
	switch data := all.Data().(type) {
	case []float32:
		copy(dst.Data().([]float32), data[op.off:op.off+op.size])
	case []float64:
		copy(dst.Data().([]float64), data[op.off:op.off+op.size])
	}
	return dst, nil
}

// ReturnsPtr reports false: the output is a copy.
func (op *decoupledGradPartOp) ReturnsPtr() bool { return false }

// CallsExtern reports false.
func (op *decoupledGradPartOp) CallsExtern() bool { return false }

// OverwritesInput returns -1: no input is overwritten.
func (op *decoupledGradPartOp) OverwritesInput() int { return -1 }

// WriteHash writes the operation's identity.
func (op *decoupledGradPartOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "DecoupledConvGradPart#%d:%d", op.sh.id, op.input)
}

// Hashcode returns the FNV-1a hash of WriteHash.
func (op *decoupledGradPartOp) Hashcode() uint32 { return decoupledHash(op) }

// String describes the operation.
func (op *decoupledGradPartOp) String() string {
	return fmt.Sprintf("DecoupledConvGradPart#%d(%s)", op.sh.id, decoupledInputNames[op.sh.inputKind(op.input)])
}

// DiffWRT reports that the part is not differentiated again.
func (op *decoupledGradPartOp) DiffWRT(n int) []bool { return make([]bool, n) }

// SymDiff returns an error: second derivatives are not supported.
func (op *decoupledGradPartOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, errors.New("decoupled convolution: second derivatives are not supported")
}

// inputKind returns the decoupledIn* constant of the input at position i.
func (sh *decoupledShared) inputKind(i int) int {
	for kind, at := range sh.index {
		if at == i {
			return kind
		}
	}
	return decoupledInX
}

// Interfaces the operations implement.
var (
	_ G.SDOp            = (*decoupledOp)(nil)
	_ G.UsePreallocDoer = (*decoupledOp)(nil)
	_ G.SDOp            = (*decoupledGradOp)(nil)
	_ G.UsePreallocDoer = (*decoupledGradOp)(nil)
	_ G.SDOp            = (*decoupledGradPartOp)(nil)
	_ G.UsePreallocDoer = (*decoupledGradPartOp)(nil)
)
