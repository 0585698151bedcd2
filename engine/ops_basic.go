package engine

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"
	"slices"

	"github.com/chewxy/hm"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// This file holds the elementwise, broadcasting, matrix-product and
// softmax building blocks of the builder. Gorgonia's own broadcasting is
// limited to four axes and its Mul treats a [1, K] matrix as a vector, so
// numpy broadcasting and matrix products are written here as operations
// with their own symbolic derivatives.

// binaryKind is an elementwise binary operator.
type binaryKind int

// The elementwise binary operators of ONNX that the builder maps.
const (
	binAdd binaryKind = iota
	binSub
	binMul
	binDiv
)

// String returns the ONNX name of the operator.
func (k binaryKind) String() string {
	return [...]string{"Add", "Sub", "Mul", "Div"}[k]
}

// broadcastBinary applies an elementwise operator to a and b with numpy
// (multidirectional) broadcasting. A rank-0 operand is a Gorgonia scalar
// and uses Gorgonia's own scalar-tensor operators; other operands are
// expanded to the common shape with broadcastTo first.
func broadcastBinary(k binaryKind, a, b *G.Node) (*G.Node, error) {
	if !a.IsScalar() && !b.IsScalar() {
		out, err := broadcastShape(a.Shape(), b.Shape())
		if err != nil {
			return nil, err
		}
		if a, err = broadcastTo(a, out); err != nil {
			return nil, err
		}
		if b, err = broadcastTo(b, out); err != nil {
			return nil, err
		}
	}
	switch k {
	case binAdd:
		return G.Add(a, b)
	case binSub:
		return G.Sub(a, b)
	case binMul:
		return G.HadamardProd(a, b)
	default:
		return G.HadamardDiv(a, b)
	}
}

// broadcastShape returns the numpy broadcast of two shapes.
func broadcastShape(a, b []int) ([]int, error) {
	r := max(len(a), len(b))
	out := make([]int, r)
	for i := range r {
		da, db := 1, 1
		if j := len(a) - r + i; j >= 0 {
			da = a[j]
		}
		if j := len(b) - r + i; j >= 0 {
			db = b[j]
		}
		switch {
		case da == db || db == 1:
			out[i] = da
		case da == 1:
			out[i] = db
		default:
			return nil, fmt.Errorf("shapes %v and %v do not broadcast", a, b)
		}
	}
	return out, nil
}

// broadcastTo expands x to shape to by numpy rules (x's shape, padded with
// leading ones, must have 1 or the target size on every axis). It returns x
// itself when the shapes already agree.
func broadcastTo(x *G.Node, to []int) (*G.Node, error) {
	from := []int(x.Shape())
	if slices.Equal(from, to) {
		return x, nil
	}
	if _, err := alignShapes(from, to); err != nil {
		return nil, err
	}
	return G.ApplyOp(&expandOp{from: slices.Clone(from), to: slices.Clone(to)}, x)
}

// sumTo sums x (of shape from) over the axes a broadcast to from expanded,
// giving shape to: the adjoint of broadcastTo.
func sumTo(x *G.Node, to []int) (*G.Node, error) {
	from := []int(x.Shape())
	if slices.Equal(from, to) {
		return x, nil
	}
	if _, err := alignShapes(to, from); err != nil {
		return nil, err
	}
	return G.ApplyOp(&sumToOp{from: slices.Clone(from), to: slices.Clone(to)}, x)
}

// alignShapes pads small with leading ones to the rank of big and checks
// that it broadcasts to big.
func alignShapes(small, big []int) ([]int, error) {
	if len(small) > len(big) {
		return nil, fmt.Errorf("shape %v does not broadcast to %v", small, big)
	}
	out := make([]int, len(big))
	pad := len(big) - len(small)
	for i := range big {
		d := 1
		if i >= pad {
			d = small[i-pad]
		}
		if d != 1 && d != big[i] {
			return nil, fmt.Errorf("shape %v does not broadcast to %v", small, big)
		}
		out[i] = d
	}
	return out, nil
}

// forBroadcast calls f(i, j) for every element i of shape big, in
// row-major order, with j the index of the element of small (aligned by
// alignShapes) that broadcasts to it.
func forBroadcast(small, big []int, f func(i, j int)) {
	aligned, _ := alignShapes(small, big)
	strides := make([]int, len(big))
	s := 1
	for i := len(big) - 1; i >= 0; i-- {
		if aligned[i] != 1 {
			strides[i] = s
		}
		s *= aligned[i]
	}
	total := numElements(big)
	pos := make([]int, len(big))
	j := 0
	for i := 0; i < total; i++ {
		f(i, j)
		for ax := len(big) - 1; ax >= 0; ax-- {
			pos[ax]++
			j += strides[ax]
			if pos[ax] < big[ax] {
				break
			}
			j -= strides[ax] * pos[ax]
			pos[ax] = 0
		}
	}
}

// expandOp broadcasts its input from one shape to another.
type expandOp struct{ from, to []int }

func (op *expandOp) Arity() int { return 1 }
func (op *expandOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: len(op.from), Of: a}, G.TensorType{Dims: len(op.to), Of: a})
}
func (op *expandOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape(slices.Clone(op.to)), nil
}
func (op *expandOp) Do(vs ...G.Value) (G.Value, error) {
	return mapDense(vs[0], op.to, func(in, out []float64) {
		forBroadcast(op.from, op.to, func(i, j int) { out[i] = in[j] })
	}, func(in, out []float32) {
		forBroadcast(op.from, op.to, func(i, j int) { out[i] = in[j] })
	})
}
func (op *expandOp) ReturnsPtr() bool      { return false }
func (op *expandOp) CallsExtern() bool     { return false }
func (op *expandOp) OverwritesInput() int  { return -1 }
func (op *expandOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "expand%v->%v", op.from, op.to) }
func (op *expandOp) Hashcode() uint32      { return opHash(op) }
func (op *expandOp) String() string        { return fmt.Sprintf("Expand%v->%v", op.from, op.to) }
func (op *expandOp) DiffWRT(int) []bool    { return []bool{true} }
func (op *expandOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	g, err := sumTo(grad, op.from)
	return G.Nodes{g}, err
}

// sumToOp sums its input over broadcast axes, from a shape to a smaller
// one that broadcasts to it.
type sumToOp struct{ from, to []int }

func (op *sumToOp) Arity() int { return 1 }
func (op *sumToOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: len(op.from), Of: a}, G.TensorType{Dims: len(op.to), Of: a})
}
func (op *sumToOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape(slices.Clone(op.to)), nil
}
func (op *sumToOp) Do(vs ...G.Value) (G.Value, error) {
	return mapDense(vs[0], op.to, func(in, out []float64) {
		forBroadcast(op.to, op.from, func(i, j int) { out[j] += in[i] })
	}, func(in, out []float32) {
		forBroadcast(op.to, op.from, func(i, j int) { out[j] += in[i] })
	})
}
func (op *sumToOp) ReturnsPtr() bool      { return false }
func (op *sumToOp) CallsExtern() bool     { return false }
func (op *sumToOp) OverwritesInput() int  { return -1 }
func (op *sumToOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "sumto%v->%v", op.from, op.to) }
func (op *sumToOp) Hashcode() uint32      { return opHash(op) }
func (op *sumToOp) String() string        { return fmt.Sprintf("SumTo%v->%v", op.from, op.to) }
func (op *sumToOp) DiffWRT(int) []bool    { return []bool{true} }
func (op *sumToOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	g, err := broadcastTo(grad, op.from)
	return G.Nodes{g}, err
}

// matProd returns op(a) x op(b) for matrices a and b, op transposing
// where tA or tB says. Unlike Gorgonia's Mul it never treats a matrix with
// a dimension of 1 as a vector.
func matProd(a, b *G.Node, tA, tB bool) (*G.Node, error) {
	as, bs := a.Shape(), b.Shape()
	if len(as) != 2 || len(bs) != 2 {
		return nil, fmt.Errorf("matrix product of shapes %v and %v: both must be matrices", as, bs)
	}
	m, k := as[0], as[1]
	if tA {
		m, k = k, m
	}
	k2, n := bs[0], bs[1]
	if tB {
		k2, n = n, k2
	}
	if k != k2 {
		return nil, fmt.Errorf("matrix product of shapes %v and %v: inner dimensions %d and %d differ", as, bs, k, k2)
	}
	return G.ApplyOp(&matProdOp{tA: tA, tB: tB, m: m, k: k, n: n}, a, b)
}

// matProdOp is the matrix product op(A) x op(B) of an [m, k] and a [k, n]
// matrix (before transposition as tA and tB say), computed with gonum's
// BLAS.
type matProdOp struct {
	tA, tB  bool
	m, k, n int
}

func (op *matProdOp) Arity() int { return 2 }
func (op *matProdOp) Type() hm.Type {
	t := G.TensorType{Dims: 2, Of: hm.TypeVariable('a')}
	return hm.NewFnType(t, t, t)
}
func (op *matProdOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.m, op.n}, nil
}
func (op *matProdOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != 2 {
		return nil, fmt.Errorf("matrix product: %d inputs, want 2", len(vs))
	}
	a, err := denseOf(vs[0])
	if err != nil {
		return nil, err
	}
	b, err := denseOf(vs[1])
	if err != nil {
		return nil, err
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	ar, ac, br, bc := op.m, op.k, op.k, op.n
	if op.tA {
		ta, ar, ac = blas.Trans, op.k, op.m
	}
	if op.tB {
		tb, br, bc = blas.Trans, op.n, op.k
	}
	switch ad := a.Data().(type) {
	case []float32:
		bd, ok := b.Data().([]float32)
		if !ok || len(ad) != ar*ac || len(bd) != br*bc {
			return nil, fmt.Errorf("matrix product: operands %v and %v do not fit %v", a.Shape(), b.Shape(), op)
		}
		out := make([]float32, op.m*op.n)
		blas32.Gemm(ta, tb, 1,
			blas32.General{Rows: ar, Cols: ac, Stride: ac, Data: ad},
			blas32.General{Rows: br, Cols: bc, Stride: bc, Data: bd},
			0, blas32.General{Rows: op.m, Cols: op.n, Stride: op.n, Data: out})
		return tensor.New(tensor.WithShape(op.m, op.n), tensor.WithBacking(out)), nil
	case []float64:
		bd, ok := b.Data().([]float64)
		if !ok || len(ad) != ar*ac || len(bd) != br*bc {
			return nil, fmt.Errorf("matrix product: operands %v and %v do not fit %v", a.Shape(), b.Shape(), op)
		}
		out := make([]float64, op.m*op.n)
		blas64.Gemm(ta, tb, 1,
			blas64.General{Rows: ar, Cols: ac, Stride: ac, Data: ad},
			blas64.General{Rows: br, Cols: bc, Stride: bc, Data: bd},
			0, blas64.General{Rows: op.m, Cols: op.n, Stride: op.n, Data: out})
		return tensor.New(tensor.WithShape(op.m, op.n), tensor.WithBacking(out)), nil
	}
	return nil, fmt.Errorf("matrix product: element type %v is not supported", a.Dtype())
}
func (op *matProdOp) ReturnsPtr() bool     { return false }
func (op *matProdOp) CallsExtern() bool    { return false }
func (op *matProdOp) OverwritesInput() int { return -1 }
func (op *matProdOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "matprod(%t,%t,%d,%d,%d)", op.tA, op.tB, op.m, op.k, op.n)
}
func (op *matProdOp) Hashcode() uint32   { return opHash(op) }
func (op *matProdOp) String() string     { return fmt.Sprintf("MatProd[%dx%dx%d]", op.m, op.k, op.n) }
func (op *matProdOp) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff expresses both gradients as matrix products: with Y = op(A)
// op(B) and dY its gradient, dA = dY op(B)^T (transposed back when A was)
// and dB = op(A)^T dY (likewise).
func (op *matProdOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	a, b := in[0], in[1]
	var da, db *G.Node
	var err error
	if op.tA {
		da, err = matProd(b, grad, op.tB, true)
	} else {
		da, err = matProd(grad, b, false, !op.tB)
	}
	if err != nil {
		return nil, err
	}
	if op.tB {
		db, err = matProd(grad, a, true, op.tA)
	} else {
		db, err = matProd(a, grad, !op.tA, false)
	}
	if err != nil {
		return nil, err
	}
	return G.Nodes{da, db}, nil
}

// softmax applies softmax (or log-softmax) to x viewed as [outer, n,
// inner], normalising over the middle axis.
func softmax(x *G.Node, log bool, outer, n, inner int) (*G.Node, error) {
	shape := []int(x.Shape())
	if outer*n*inner != x.Shape().TotalSize() {
		return nil, fmt.Errorf("softmax over [%d,%d,%d] does not fit shape %v", outer, n, inner, shape)
	}
	return G.ApplyOp(&softmaxOp{log: log, outer: outer, n: n, inner: inner, shape: shape}, x)
}

// softmaxOp computes softmax or log-softmax over the middle axis of its
// input viewed as [outer, n, inner], subtracting the maximum first so that
// it never overflows.
type softmaxOp struct {
	log             bool
	outer, n, inner int
	shape           []int
}

func (op *softmaxOp) Arity() int { return 1 }
func (op *softmaxOp) Type() hm.Type {
	t := G.TensorType{Dims: len(op.shape), Of: hm.TypeVariable('a')}
	return hm.NewFnType(t, t)
}
func (op *softmaxOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape(slices.Clone(op.shape)), nil
}
func (op *softmaxOp) Do(vs ...G.Value) (G.Value, error) {
	return mapDense(vs[0], op.shape, func(in, out []float64) {
		softmaxKernel(in, out, op.log, op.outer, op.n, op.inner)
	}, func(in, out []float32) {
		softmaxKernel(in, out, op.log, op.outer, op.n, op.inner)
	})
}
func (op *softmaxOp) ReturnsPtr() bool     { return false }
func (op *softmaxOp) CallsExtern() bool    { return false }
func (op *softmaxOp) OverwritesInput() int { return -1 }
func (op *softmaxOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "softmax(%t,%d,%d,%d)%v", op.log, op.outer, op.n, op.inner, op.shape)
}
func (op *softmaxOp) Hashcode() uint32 { return opHash(op) }
func (op *softmaxOp) String() string {
	if op.log {
		return "LogSoftmax"
	}
	return "Softmax"
}
func (op *softmaxOp) DiffWRT(int) []bool { return []bool{true} }
func (op *softmaxOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	back := &softmaxGradOp{log: op.log, outer: op.outer, n: op.n, inner: op.inner, shape: op.shape}
	g, err := G.ApplyOp(back, out, grad)
	return G.Nodes{g}, err
}

// softmaxKernel computes softmax or log-softmax of in into out.
func softmaxKernel[T float32 | float64](in, out []T, log bool, outer, n, inner int) {
	for o := range outer {
		for i := range inner {
			base := o*n*inner + i
			m := math.Inf(-1)
			for k := range n {
				m = max(m, float64(in[base+k*inner]))
			}
			sum := 0.0
			for k := range n {
				sum += math.Exp(float64(in[base+k*inner]) - m)
			}
			ls := math.Log(sum)
			for k := range n {
				v := float64(in[base+k*inner]) - m
				if log {
					out[base+k*inner] = T(v - ls)
				} else {
					out[base+k*inner] = T(math.Exp(v) / sum)
				}
			}
		}
	}
}

// softmaxGradOp is the backward pass of softmaxOp: from its output y and
// the output gradient dy it computes dx = y (dy - sum(dy y)) for softmax
// and dx = dy - exp(y) sum(dy) for log-softmax.
type softmaxGradOp struct {
	log             bool
	outer, n, inner int
	shape           []int
}

func (op *softmaxGradOp) Arity() int { return 2 }
func (op *softmaxGradOp) Type() hm.Type {
	t := G.TensorType{Dims: len(op.shape), Of: hm.TypeVariable('a')}
	return hm.NewFnType(t, t, t)
}
func (op *softmaxGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape(slices.Clone(op.shape)), nil
}
func (op *softmaxGradOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != 2 {
		return nil, fmt.Errorf("softmax gradient: %d inputs, want 2", len(vs))
	}
	dy, err := denseOf(vs[1])
	if err != nil {
		return nil, err
	}
	return mapDense(vs[0], op.shape, func(y, dx []float64) {
		softmaxGradKernel(y, dy.Data().([]float64), dx, op.log, op.outer, op.n, op.inner)
	}, func(y, dx []float32) {
		softmaxGradKernel(y, dy.Data().([]float32), dx, op.log, op.outer, op.n, op.inner)
	})
}
func (op *softmaxGradOp) ReturnsPtr() bool     { return false }
func (op *softmaxGradOp) CallsExtern() bool    { return false }
func (op *softmaxGradOp) OverwritesInput() int { return -1 }
func (op *softmaxGradOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "softmaxgrad(%t,%d,%d,%d)%v", op.log, op.outer, op.n, op.inner, op.shape)
}
func (op *softmaxGradOp) Hashcode() uint32 { return opHash(op) }
func (op *softmaxGradOp) String() string   { return "SoftmaxGrad" }

// softmaxGradKernel computes the input gradient of softmax or log-softmax.
func softmaxGradKernel[T float32 | float64](y, dy, dx []T, log bool, outer, n, inner int) {
	for o := range outer {
		for i := range inner {
			base := o*n*inner + i
			s := 0.0
			for k := range n {
				j := base + k*inner
				if log {
					s += float64(dy[j])
				} else {
					s += float64(dy[j]) * float64(y[j])
				}
			}
			for k := range n {
				j := base + k*inner
				if log {
					dx[j] = T(float64(dy[j]) - math.Exp(float64(y[j]))*s)
				} else {
					dx[j] = T(float64(y[j]) * (float64(dy[j]) - s))
				}
			}
		}
	}
}

// denseOf returns a value as a contiguous dense tensor, materialising
// views.
func denseOf(v G.Value) (*tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("value of type %T is not a dense tensor", v)
	}
	if d.IsMaterializable() {
		m, ok := d.Materialize().(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("materialising a view of shape %v", d.Shape())
		}
		return m, nil
	}
	return d, nil
}

// mapDense allocates a tensor of shape out with in's element type and
// fills it with f64 or f32 from in's data.
func mapDense(in G.Value, out []int, f64 func(in, out []float64), f32 func(in, out []float32)) (G.Value, error) {
	d, err := denseOf(in)
	if err != nil {
		return nil, err
	}
	n := 1
	for _, s := range out {
		n *= s
	}
	switch data := d.Data().(type) {
	case []float64:
		res := make([]float64, n)
		f64(data, res)
		return tensor.New(tensor.WithShape(out...), tensor.WithBacking(res)), nil
	case []float32:
		res := make([]float32, n)
		f32(data, res)
		return tensor.New(tensor.WithShape(out...), tensor.WithBacking(res)), nil
	}
	return nil, fmt.Errorf("element type %v is not supported", d.Dtype())
}

// scalarConst returns a scalar constant node of the given element type.
func scalarConst(dt Float, v float64) *G.Node {
	if dt == Float64 {
		return G.NewConstant(v)
	}
	return G.NewConstant(float32(v))
}

// opHash is the Hashcode of an operation: FNV-1a over its WriteHash.
func opHash(op interface{ WriteHash(hash.Hash) }) uint32 {
	h := fnv.New32a()
	op.WriteHash(h)
	return h.Sum32()
}
