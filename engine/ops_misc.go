package engine

// This file holds the plumbing shared by the operations written here for
// what Gorgonia lacks (ops_conv.go, ops_pool.go, ops_norm.go), and the
// element-wise operations Clip, Relu and LeakyRelu.
//
// Each operation is a kernel: a small comparable struct whose String
// names it with every parameter, which checks input shapes and computes
// its output over plain []float32 or []float64 slices. kernelOp adapts a
// kernel to Gorgonia's Op interface, and to SDOp when the kernel has a
// gradient, written as further kernels applied to the graph.

import (
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"math"
	"runtime"
	"sync"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// opKernel is an operation on float32 or float64 tensors, all inputs and
// the output of one element type.
type opKernel interface {
	// String names the kernel with every parameter that changes its
	// result; Gorgonia merges nodes whose op and inputs hash alike.
	String() string
	// arity is the number of inputs.
	arity() int
	// typ is the Gorgonia type of the operation.
	typ() hm.Type
	// shapeOf checks the input shapes and returns the output shape.
	shapeOf(in []tensor.Shape) (tensor.Shape, error)
	// compute writes the output into out, a new zeroed tensor, from
	// contiguous inputs.
	compute(out *tensor.Dense, in []*tensor.Dense) error
}

// opDiffKernel is a kernel with a hand-written gradient.
type opDiffKernel interface {
	opKernel
	// diffWRT reports for each input whether the output depends on it
	// differentiably.
	diffWRT() []bool
	// grads adds to the graph the gradient of each input given the
	// output's gradient dy; nil for inputs diffWRT excludes.
	grads(in G.Nodes, out, dy *G.Node) (G.Nodes, error)
}

// kernelOp adapts a kernel to Gorgonia's Op and SDOp interfaces. It
// differentiates symbolically (Grad, then a tape machine); it is no
// ADOp, so Gorgonia's LispMachine cannot differentiate it. Each node has
// its own kernelOp, whose out keeps the node's output tensor from one run
// to the next.
type kernelOp struct {
	k   opKernel
	out *kernelOut
}

// kernelOut is the output tensor of one node, which every run of the
// node computes into again: a machine run reads a node's value only
// between the node's computation and the end of the run (Read and the
// gradients bound to dual values copy or keep it until the next run), so
// reusing it saves allocating and zeroing a tensor per node and run.
type kernelOut struct{ t *tensor.Dense }

// opOverwriter is a kernel whose compute writes every value of its
// output, so that a reused output need not be zeroed first.
type opOverwriter interface {
	opKernel
	overwritesOutput()
}

// kernelOp is a Gorgonia operation with a symbolic gradient.
var (
	_ G.Op   = kernelOp{}
	_ G.SDOp = kernelOp{}
)

// applyKernel adds a node computing k from the children.
func applyKernel(k opKernel, children ...*G.Node) (*G.Node, error) {
	n, err := G.ApplyOp(kernelOp{k: k, out: &kernelOut{}}, children...)
	if err != nil {
		return nil, fmt.Errorf("adding %v: %w", k, err)
	}
	return n, nil
}

// Arity returns the number of inputs.
func (o kernelOp) Arity() int { return o.k.arity() }

// Type returns the Gorgonia type of the operation.
func (o kernelOp) Type() hm.Type { return o.k.typ() }

// InferShape returns the output shape for the input shapes.
func (o kernelOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	shapes := make([]tensor.Shape, len(ds))
	for i, d := range ds {
		s, ok := d.(tensor.Shape)
		if !ok {
			return nil, fmt.Errorf("%v: input %d has no static shape (%T)", o.k, i, d)
		}
		shapes[i] = s
	}
	if len(shapes) != o.k.arity() {
		return nil, fmt.Errorf("%v: %d inputs, want %d", o.k, len(shapes), o.k.arity())
	}
	return o.k.shapeOf(shapes)
}

// Do computes the output into the node's output tensor (see kernelOut),
// made on the first run. kernelOp has no UsePreallocDo on purpose: the
// tape machine offers as preallocated output whatever tensor a register
// last held, which may share memory with a live value (Gorgonia's
// Reshape returns a view of its input, a parameter for instance).
func (o kernelOp) Do(in ...G.Value) (G.Value, error) { return runKernel(o.k, in, o.out) }

// ReturnsPtr reports false: the output never aliases an input.
func (o kernelOp) ReturnsPtr() bool { return false }

// CallsExtern reports false: kernels are plain Go.
func (o kernelOp) CallsExtern() bool { return false }

// OverwritesInput reports -1: no input is overwritten.
func (o kernelOp) OverwritesInput() int { return -1 }

// WriteHash writes the kernel's name and parameters.
func (o kernelOp) WriteHash(h hash.Hash) { _, _ = io.WriteString(h, o.k.String()) }

// Hashcode returns the FNV-1a hash of the kernel's name and parameters.
func (o kernelOp) Hashcode() uint32 {
	h := fnv.New32a()
	o.WriteHash(h)
	return h.Sum32()
}

// String names the kernel and its parameters.
func (o kernelOp) String() string { return o.k.String() }

// DiffWRT reports which inputs the output is differentiable with respect
// to; none for kernels without a gradient.
func (o kernelOp) DiffWRT(n int) []bool {
	if d, ok := o.k.(opDiffKernel); ok {
		return d.diffWRT()
	}
	return make([]bool, n)
}

// SymDiff adds the gradients of the inputs to the graph.
func (o kernelOp) SymDiff(in G.Nodes, out, dy *G.Node) (G.Nodes, error) {
	d, ok := o.k.(opDiffKernel)
	if !ok {
		return nil, fmt.Errorf("%v has no gradient", o.k)
	}
	return d.grads(in, out, dy)
}

// runKernel checks the input values and computes k into the tensor out
// holds, or into a new one (kept in out when out is not nil) when out
// holds none of the output's element type and size.
func runKernel(k opKernel, values []G.Value, out *kernelOut) (G.Value, error) {
	if len(values) != k.arity() {
		return nil, fmt.Errorf("%v: %d inputs, want %d", k, len(values), k.arity())
	}
	in := make([]*tensor.Dense, len(values))
	shapes := make([]tensor.Shape, len(values))
	for i, v := range values {
		d, ok := v.(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("%v: input %d is a %T, not a dense tensor", k, i, v)
		}
		if d.RequiresIterator() {
			d = d.Materialize().(*tensor.Dense)
		}
		if dt := d.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
			return nil, fmt.Errorf("%v: input %d has element type %v, want float32 or float64", k, i, dt)
		}
		if i > 0 && d.Dtype() != in[0].Dtype() {
			return nil, fmt.Errorf("%v: input %d has element type %v, input 0 %v", k, i, d.Dtype(), in[0].Dtype())
		}
		in[i], shapes[i] = d, d.Shape()
	}
	s, err := k.shapeOf(shapes)
	if err != nil {
		return nil, err
	}
	t := reuseOutput(k, out, in[0].Dtype(), s)
	if t == nil {
		t = tensor.New(tensor.Of(in[0].Dtype()), tensor.WithShape(s...))
		if out != nil {
			out.t = t
		}
	}
	if err := k.compute(t, in); err != nil {
		return nil, fmt.Errorf("%v: %w", k, err)
	}
	return t, nil
}

// reuseOutput returns out's tensor ready for k to compute into: of
// element type dt, shape s (Gorgonia's in-place Reshape may have
// reshaped it) and zeroed unless k overwrites every value; nil when out
// holds no tensor of that type and size.
func reuseOutput(k opKernel, out *kernelOut, dt tensor.Dtype, s tensor.Shape) *tensor.Dense {
	if out == nil || out.t == nil || out.t.Dtype() != dt || out.t.DataSize() != s.TotalSize() || out.t.IsView() {
		return nil
	}
	t := out.t
	if !t.Shape().Eq(s) {
		if err := t.Reshape(s...); err != nil {
			return nil
		}
	}
	if _, ok := k.(opOverwriter); !ok {
		t.Zero()
	}
	return t
}

// opFloat is the element type of the slices kernels compute on.
type opFloat interface{ float32 | float64 }

// kernelData returns the elements of a contiguous float32 or float64 tensor
// as a []T, T being its element type.
func kernelData[T opFloat](d *tensor.Dense) []T {
	n := d.Shape().TotalSize()
	var z T
	switch any(z).(type) {
	case float32:
		return any(d.Float32s()[:n]).([]T)
	default:
		return any(d.Float64s()[:n]).([]T)
	}
}

// kernelType returns the type of an operation taking tensors of ranks in and
// returning one of rank out, all of one element type.
func kernelType(out int, in ...int) hm.Type {
	a := hm.TypeVariable('a')
	ts := make([]hm.Type, 0, len(in)+1)
	for _, d := range in {
		ts = append(ts, G.TensorType{Dims: d, Of: a})
	}
	return hm.NewFnType(append(ts, G.TensorType{Dims: out, Of: a})...)
}

// kernelParallelMin is the work (inner-loop steps) below which
// kernelParallel stays on one goroutine.
var kernelParallelMin = 1 << 15

// kernelParallel calls fn over [0, n) in contiguous chunks, spread over the
// CPUs when n times cost (inner-loop steps per index) is worth it.
func kernelParallel(n, cost int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	if workers <= 1 || n*cost < kernelParallelMin {
		fn(0, n)
		return
	}
	chunk := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += chunk {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, min(lo+chunk, n))
	}
	wg.Wait()
}

// checkOpInput checks that a node given to one of the graph-building
// functions is a float32 or float64 tensor of the given rank (any rank
// from -rank when rank is negative) with a static shape, and returns its
// shape.
func checkOpInput(what string, n *G.Node, rank int) (tensor.Shape, error) {
	if n == nil {
		return nil, fmt.Errorf("%s is missing", what)
	}
	tt, ok := n.Type().(G.TensorType)
	if !ok {
		return nil, fmt.Errorf("%s %q is a %v, not a tensor", what, n.Name(), n.Type())
	}
	if dt, ok := tt.Of.(tensor.Dtype); !ok || (dt != tensor.Float32 && dt != tensor.Float64) {
		return nil, fmt.Errorf("%s %q has element type %v, want float32 or float64", what, n.Name(), tt.Of)
	}
	s := n.Shape()
	switch {
	case rank >= 0 && len(s) != rank:
		return nil, fmt.Errorf("%s %q has shape %v, want %d dimensions", what, n.Name(), s, rank)
	case rank < 0 && len(s) < -rank:
		return nil, fmt.Errorf("%s %q has shape %v, want at least %d dimensions", what, n.Name(), s, -rank)
	}
	for _, d := range s {
		if d < 1 {
			return nil, fmt.Errorf("%s %q has shape %v, want every dimension positive", what, n.Name(), s)
		}
	}
	return s, nil
}

// checkSameDtype checks that nodes checked by checkOpInput share x's element type.
func checkSameDtype(x *G.Node, others ...*G.Node) error {
	for _, o := range others {
		if o != nil && o.Dtype() != x.Dtype() {
			return fmt.Errorf("%q has element type %v, %q %v", o.Name(), o.Dtype(), x.Name(), x.Dtype())
		}
	}
	return nil
}

// checkKernelShape checks that an input of k has the shape want.
func checkKernelShape(k opKernel, what string, got, want tensor.Shape) error {
	if !got.Eq(want) {
		return fmt.Errorf("%v: %s has shape %v, want %v", k, what, got, want)
	}
	return nil
}

// channelSum sums a tensor [N,C,...] over every axis but the channel
// axis 1: the gradient of a per-channel bias.
type channelSum struct {
	rank, c int // input rank and channel count
}

// String names the kernel.
func (k channelSum) String() string { return fmt.Sprintf("ChannelSum{rank %d, C %d}", k.rank, k.c) }

// arity is the number of inputs of channelSum.
func (k channelSum) arity() int { return 1 }

// typ is the Gorgonia type of channelSum.
func (k channelSum) typ() hm.Type { return kernelType(1, k.rank) }

// shapeOf checks the input shapes of channelSum and returns its output shape.
func (k channelSum) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if len(in[0]) != k.rank || in[0][1] != k.c {
		return nil, fmt.Errorf("%v: input has shape %v", k, in[0])
	}
	return tensor.Shape{k.c}, nil
}

// overwritesOutput marks channelSum as writing every output value.
func (k channelSum) overwritesOutput() {}

// compute runs channelSum over float32 or float64 slices.
func (k channelSum) compute(out *tensor.Dense, in []*tensor.Dense) error {
	s := in[0].Shape()
	n, inner := s[0], s[1:].TotalSize()/k.c
	if out.Dtype() == tensor.Float32 {
		channelSumOf(kernelData[float32](out), kernelData[float32](in[0]), n, k.c, inner)
	} else {
		channelSumOf(kernelData[float64](out), kernelData[float64](in[0]), n, k.c, inner)
	}
	return nil
}

// channelSumOf sets out[c] to the sum of x[n, c, i] over n and i, adding
// in float64.
func channelSumOf[T opFloat](out, x []T, n, c, inner int) {
	kernelParallel(c, n*inner, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			var s float64
			for b := 0; b < n; b++ {
				for _, v := range x[(b*c+ch)*inner:][:inner] {
					s += float64(v)
				}
			}
			out[ch] = T(s)
		}
	})
}

// clipKernel is ONNX Clip: min(max(x, lo), hi), NaN kept.
type clipKernel struct {
	rank   int
	lo, hi float64
}

// String names the kernel.
func (k clipKernel) String() string {
	return fmt.Sprintf("Clip{rank %d, [%g, %g]}", k.rank, k.lo, k.hi)
}

// arity is the number of inputs of clipKernel.
func (k clipKernel) arity() int { return 1 }

// typ is the Gorgonia type of clipKernel.
func (k clipKernel) typ() hm.Type { return kernelType(k.rank, k.rank) }

// shapeOf checks the input shapes of clipKernel and returns its output shape.
func (k clipKernel) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return in[0].Clone(), nil
}

// compute runs clipKernel over float32 or float64 slices.
func (k clipKernel) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		clipOf(kernelData[float32](out), kernelData[float32](in[0]), float32(k.lo), float32(k.hi))
	} else {
		clipOf(kernelData[float64](out), kernelData[float64](in[0]), k.lo, k.hi)
	}
	return nil
}

// diffWRT reports which inputs of clipKernel have a gradient.
func (k clipKernel) diffWRT() []bool { return []bool{true} }

// grads adds the gradients of the inputs of clipKernel to the graph.
func (k clipKernel) grads(in G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dx, err := applyKernel(clipGrad{k}, in[0], dy)
	return G.Nodes{dx}, err
}

// clipOf writes min(max(x, lo), hi) into out; NaN stays NaN.
func clipOf[T opFloat](out, x []T, lo, hi T) {
	for i, v := range x {
		if v < lo {
			v = lo
		}
		if v > hi {
			v = hi
		}
		out[i] = v
	}
}

// clipGrad is the gradient of Clip: dy where lo <= x <= hi, else 0.
type clipGrad struct{ clipKernel }

// String names the kernel.
func (k clipGrad) String() string { return "Grad" + k.clipKernel.String() }

// arity is the number of inputs of clipGrad.
func (k clipGrad) arity() int { return 2 }

// typ is the Gorgonia type of clipGrad.
func (k clipGrad) typ() hm.Type { return kernelType(k.rank, k.rank, k.rank) }

// shapeOf checks the input shapes of clipGrad and returns its output shape.
func (k clipGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return in[0].Clone(), checkKernelShape(k, "gradient", in[1], in[0])
}

// compute runs clipGrad over float32 or float64 slices.
func (k clipGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		clipGradOf(kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]), float32(k.lo), float32(k.hi))
	} else {
		clipGradOf(kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]), k.lo, k.hi)
	}
	return nil
}

// clipGradOf passes dy where lo <= x <= hi and zero elsewhere.
func clipGradOf[T opFloat](dx, x, dy []T, lo, hi T) {
	for i, v := range x {
		if v >= lo && v <= hi {
			dx[i] = dy[i]
		} else {
			dx[i] = 0
		}
	}
}

// clip adds an ONNX Clip: min(max(x, lo), hi), with gradient 1 inside
// [lo, hi] and 0 outside. Infinite bounds are allowed (an absent bound);
// lo > hi gives hi, as ONNX Runtime does.
func clip(x *G.Node, lo, hi float64) (*G.Node, error) {
	s, err := checkOpInput("clip: input", x, -1)
	if err != nil {
		return nil, err
	}
	if math.IsNaN(lo) || math.IsNaN(hi) {
		return nil, fmt.Errorf("clip: bounds [%g, %g] must not be NaN", lo, hi)
	}
	return applyKernel(clipKernel{rank: len(s), lo: lo, hi: hi}, x)
}

// leakyReluKernel is ONNX LeakyRelu: x for x >= 0, alpha*x below.
type leakyReluKernel struct {
	rank  int
	alpha float64
}

// String names the kernel.
func (k leakyReluKernel) String() string {
	return fmt.Sprintf("LeakyRelu{rank %d, alpha %g}", k.rank, k.alpha)
}

// arity is the number of inputs of leakyReluKernel.
func (k leakyReluKernel) arity() int { return 1 }

// typ is the Gorgonia type of leakyReluKernel.
func (k leakyReluKernel) typ() hm.Type { return kernelType(k.rank, k.rank) }

// shapeOf checks the input shapes of leakyReluKernel and returns its output shape.
func (k leakyReluKernel) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return in[0].Clone(), nil
}

// overwritesOutput marks leakyReluKernel as writing every output value.
func (k leakyReluKernel) overwritesOutput() {}

// compute runs leakyReluKernel over float32 or float64 slices.
func (k leakyReluKernel) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		leakyReluOf(kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[0]), float32(k.alpha))
	} else {
		leakyReluOf(kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[0]), k.alpha)
	}
	return nil
}

// diffWRT reports which inputs of leakyReluKernel have a gradient.
func (k leakyReluKernel) diffWRT() []bool { return []bool{true} }

// grads adds the gradients of the inputs of leakyReluKernel to the graph.
func (k leakyReluKernel) grads(in G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dx, err := applyKernel(leakyReluGrad{k}, in[0], dy)
	return G.Nodes{dx}, err
}

// leakyReluOf writes v where x > 0 (or x is NaN) and alpha*v where
// x <= 0 (0 when alpha is 0): the activation when v is x, its gradient
// when v is dy, which at x = 0 is PyTorch's alpha*dy.
func leakyReluOf[T opFloat](out, x, v []T, alpha T) {
	kernelParallel(len(x), 1, func(lo, hi int) {
		switch xs := any(x[lo:hi]).(type) {
		case []float32:
			leakyRelu32(any(out[lo:hi]).([]float32), xs, any(v[lo:hi]).([]float32), float32(alpha))
		case []float64:
			leakyRelu64(any(out[lo:hi]).([]float64), xs, any(v[lo:hi]).([]float64), float64(alpha))
		}
	})
}

// leakyRelu32 is leakyReluOf on float32 values. It selects with a bit
// mask rather than a branch, which the signs of activations would make
// unpredictable.
func leakyRelu32(out, x, v []float32, alpha float32) {
	v, out = v[:len(x)], out[:len(x)]
	for i, xi := range x {
		var neg uint32
		if xi <= 0 {
			neg = ^uint32(0)
		}
		var a uint32
		if alpha != 0 {
			a = math.Float32bits(alpha * v[i])
		}
		out[i] = math.Float32frombits(math.Float32bits(v[i])&^neg | a&neg)
	}
}

// leakyRelu64 is leakyReluOf on float64 values (see leakyRelu32).
func leakyRelu64(out, x, v []float64, alpha float64) {
	v, out = v[:len(x)], out[:len(x)]
	for i, xi := range x {
		var neg uint64
		if xi <= 0 {
			neg = ^uint64(0)
		}
		var a uint64
		if alpha != 0 {
			a = math.Float64bits(alpha * v[i])
		}
		out[i] = math.Float64frombits(math.Float64bits(v[i])&^neg | a&neg)
	}
}

// leakyReluGrad is the gradient of LeakyRelu: dy for x > 0, alpha*dy
// for x <= 0.
type leakyReluGrad struct{ leakyReluKernel }

// String names the kernel.
func (k leakyReluGrad) String() string { return "Grad" + k.leakyReluKernel.String() }

// arity is the number of inputs of leakyReluGrad.
func (k leakyReluGrad) arity() int { return 2 }

// typ is the Gorgonia type of leakyReluGrad.
func (k leakyReluGrad) typ() hm.Type { return kernelType(k.rank, k.rank, k.rank) }

// shapeOf checks the input shapes of leakyReluGrad and returns its output shape.
func (k leakyReluGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return in[0].Clone(), checkKernelShape(k, "gradient", in[1], in[0])
}

// overwritesOutput marks leakyReluGrad as writing every output value.
func (k leakyReluGrad) overwritesOutput() {}

// compute runs leakyReluGrad over float32 or float64 slices.
func (k leakyReluGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		leakyReluOf(kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]), float32(k.alpha))
	} else {
		leakyReluOf(kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]), k.alpha)
	}
	return nil
}

// relu adds an ONNX Relu: x for x > 0 (NaN kept), 0 elsewhere. It is
// LeakyRelu with alpha 0, whose gradient passes dy where x > 0 only, as
// PyTorch's does: at x = 0, which zero inputs and zero biases make common,
// the gradient is 0.
func relu(x *G.Node) (*G.Node, error) {
	s, err := checkOpInput("relu: input", x, -1)
	if err != nil {
		return nil, err
	}
	return applyKernel(leakyReluKernel{rank: len(s)}, x)
}

// leakyRelu adds an ONNX LeakyRelu: x for x >= 0, alpha*x below.
func leakyRelu(x *G.Node, alpha float64) (*G.Node, error) {
	s, err := checkOpInput("leakyRelu: input", x, -1)
	if err != nil {
		return nil, err
	}
	if math.IsNaN(alpha) || math.IsInf(alpha, 0) {
		return nil, fmt.Errorf("leakyRelu: alpha %g is not a finite number", alpha)
	}
	return applyKernel(leakyReluKernel{rank: len(s), alpha: alpha}, x)
}
