package export

import (
	"fmt"
	"math"
	"slices"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// value is a constant tensor while folding: float32 values, or int64
// values (axes).
type value struct {
	dims []int64
	f    []float32
	i    []int64
}

// size returns the number of elements dims describe.
func size(dims []int64) int {
	n := 1
	for _, d := range dims {
		n *= int(d)
	}
	return n
}

// strides returns the row-major strides of dims.
func strides(dims []int64) []int {
	s := make([]int, len(dims))
	step := 1
	for k := len(dims) - 1; k >= 0; k-- {
		s[k] = step
		step *= int(dims[k])
	}
	return s
}

// foldable reports whether evaluate computes op.
func foldable(op string) bool {
	switch op {
	case onnximport.OpAdd, onnximport.OpSub, onnximport.OpMul, onnximport.OpDiv,
		onnximport.OpSqrt, onnximport.OpLog, onnximport.OpAbs, onnximport.OpNeg, onnximport.OpRelu,
		onnximport.OpReciprocal, onnximport.OpIdentity,
		onnximport.OpReduceSumSquare, onnximport.OpReduceSum, onnximport.OpReduceMean,
		onnximport.OpTranspose, onnximport.OpUnsqueeze:
		return true
	}
	return false
}

// evaluate computes a default-domain node of a foldable op on float
// constants, as ONNX defines it, with float64 arithmetic rounded to
// float32 once per element.
func evaluate(n *onnxpb.NodeProto, in []*value) (*value, error) {
	op := n.GetOpType()
	for k, v := range in {
		if v.f == nil && !(k == 1 && (op == onnximport.OpUnsqueeze || op == onnximport.OpReduceSum)) {
			return nil, fmt.Errorf("%s input %d is not a float tensor", op, k)
		}
	}
	switch op {
	case onnximport.OpAdd, onnximport.OpSub, onnximport.OpMul, onnximport.OpDiv:
		if len(in) != 2 {
			return nil, fmt.Errorf("%s has %d inputs, want 2", op, len(in))
		}
		return arithmetic(op, in[0], in[1])
	case onnximport.OpSqrt, onnximport.OpLog, onnximport.OpAbs, onnximport.OpNeg, onnximport.OpRelu,
		onnximport.OpReciprocal, onnximport.OpIdentity:
		return unary(op, in[0]), nil
	case onnximport.OpReduceSumSquare, onnximport.OpReduceSum, onnximport.OpReduceMean:
		axes := onnximport.AttrInts(n, "axes")
		if len(in) > 1 {
			axes = in[1].i
		}
		return reduce(op, in[0], axes, onnximport.AttrInt(n, "keepdims", 1) != 0)
	case onnximport.OpTranspose:
		return transpose(in[0], onnximport.AttrInts(n, "perm"))
	case onnximport.OpUnsqueeze:
		axes := onnximport.AttrInts(n, "axes")
		if len(in) > 1 {
			axes = in[1].i
		}
		return unsqueeze(in[0], axes)
	}
	return nil, fmt.Errorf("operator %s is not folded", op)
}

// unary applies an elementwise function.
func unary(op string, x *value) *value {
	f := map[string]func(float64) float64{
		onnximport.OpSqrt:       math.Sqrt,
		onnximport.OpLog:        math.Log,
		onnximport.OpAbs:        math.Abs,
		onnximport.OpNeg:        func(v float64) float64 { return -v },
		onnximport.OpRelu:       func(v float64) float64 { return math.Max(v, 0) },
		onnximport.OpReciprocal: func(v float64) float64 { return 1 / v },
		onnximport.OpIdentity:   func(v float64) float64 { return v },
	}[op]
	out := &value{dims: slices.Clone(x.dims), f: make([]float32, len(x.f))}
	for k, v := range x.f {
		out.f[k] = float32(f(float64(v)))
	}
	return out
}

// arithmetic applies an arithmetic operator with multidirectional
// (NumPy) broadcasting.
func arithmetic(op string, a, b *value) (*value, error) {
	rank := max(len(a.dims), len(b.dims))
	dims := make([]int64, rank)
	pad := func(d []int64) []int64 {
		out := slices.Repeat([]int64{1}, rank)
		copy(out[rank-len(d):], d)
		return out
	}
	ad, bd := pad(a.dims), pad(b.dims)
	for k := range rank {
		switch {
		case ad[k] == bd[k] || bd[k] == 1:
			dims[k] = ad[k]
		case ad[k] == 1:
			dims[k] = bd[k]
		default:
			return nil, fmt.Errorf("%s: shapes %v and %v do not broadcast", op, a.dims, b.dims)
		}
	}
	as, bs := strides(ad), strides(bd)
	for k := range rank {
		if ad[k] == 1 {
			as[k] = 0
		}
		if bd[k] == 1 {
			bs[k] = 0
		}
	}
	out := &value{dims: dims, f: make([]float32, size(dims))}
	idx := make([]int64, rank)
	for o := range out.f {
		ai, bi := 0, 0
		for k := range rank {
			ai += int(idx[k]) * as[k]
			bi += int(idx[k]) * bs[k]
		}
		x, y := float64(a.f[ai]), float64(b.f[bi])
		var r float64
		switch op {
		case onnximport.OpAdd:
			r = x + y
		case onnximport.OpSub:
			r = x - y
		case onnximport.OpMul:
			r = x * y
		default:
			r = x / y
		}
		out.f[o] = float32(r)
		for k := rank - 1; k >= 0; k-- {
			if idx[k]++; idx[k] < dims[k] {
				break
			}
			idx[k] = 0
		}
	}
	return out, nil
}

// normAxes resolves negative axes against rank and checks them.
func normAxes(axes []int64, rank int) ([]int64, error) {
	out := make([]int64, len(axes))
	for k, a := range axes {
		if a < 0 {
			a += int64(rank)
		}
		if a < 0 || a >= int64(rank) || slices.Contains(out[:k], a) {
			return nil, fmt.Errorf("axes %v are not distinct axes of rank %d", axes, rank)
		}
		out[k] = a
	}
	return out, nil
}

// reduce sums (of squares) or averages over axes, all of them when axes
// is empty.
func reduce(op string, x *value, axes []int64, keep bool) (*value, error) {
	rank := len(x.dims)
	if len(axes) == 0 {
		for k := range rank {
			axes = append(axes, int64(k))
		}
	}
	axes, err := normAxes(axes, rank)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	kept := make([]int64, rank) // the output's dims with keepdims
	for k, d := range x.dims {
		kept[k] = d
		if slices.Contains(axes, int64(k)) {
			kept[k] = 1
		}
	}
	ks := strides(kept)
	sums := make([]float64, size(kept))
	idx := make([]int64, rank)
	for _, v := range x.f {
		o := 0
		for k := range rank {
			if kept[k] != 1 {
				o += int(idx[k]) * ks[k]
			}
		}
		if op == onnximport.OpReduceSumSquare {
			sums[o] += float64(v) * float64(v)
		} else {
			sums[o] += float64(v)
		}
		for k := rank - 1; k >= 0; k-- {
			if idx[k]++; idx[k] < x.dims[k] {
				break
			}
			idx[k] = 0
		}
	}
	count := 1.0
	if size(kept) > 0 {
		count = float64(size(x.dims) / size(kept))
	}
	out := &value{dims: kept, f: make([]float32, len(sums))}
	for k, s := range sums {
		if op == onnximport.OpReduceMean {
			s /= count
		}
		out.f[k] = float32(s)
	}
	if !keep {
		out.dims = nil
		for k, d := range kept {
			if !slices.Contains(axes, int64(k)) {
				out.dims = append(out.dims, d)
			}
		}
	}
	return out, nil
}

// transpose permutes the axes; no perm reverses them.
func transpose(x *value, perm []int64) (*value, error) {
	rank := len(x.dims)
	if perm == nil {
		for k := rank - 1; k >= 0; k-- {
			perm = append(perm, int64(k))
		}
	}
	if p, err := normAxes(perm, rank); err != nil || len(p) != rank {
		return nil, fmt.Errorf("Transpose: perm %v does not permute rank %d", perm, rank)
	}
	dims := make([]int64, rank)
	for k, p := range perm {
		dims[k] = x.dims[p]
	}
	xs := strides(x.dims)
	out := &value{dims: dims, f: make([]float32, len(x.f))}
	idx := make([]int64, rank)
	for o := range out.f {
		src := 0
		for k, p := range perm {
			src += int(idx[k]) * xs[p]
		}
		out.f[o] = x.f[src]
		for k := rank - 1; k >= 0; k-- {
			if idx[k]++; idx[k] < dims[k] {
				break
			}
			idx[k] = 0
		}
	}
	return out, nil
}

// unsqueeze inserts axes of size 1.
func unsqueeze(x *value, axes []int64) (*value, error) {
	rank := len(x.dims) + len(axes)
	axes, err := normAxes(axes, rank)
	if err != nil {
		return nil, fmt.Errorf("Unsqueeze: %w", err)
	}
	dims := make([]int64, 0, rank)
	src := 0
	for k := range rank {
		if slices.Contains(axes, int64(k)) {
			dims = append(dims, 1)
		} else {
			dims = append(dims, x.dims[src])
			src++
		}
	}
	return &value{dims: dims, f: x.f}, nil
}
