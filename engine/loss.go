package engine

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The training loss is the batch mean of the cross-entropy between a
// target distribution q and softmax(logits):
//
//	loss = -(1/B) sum_b sum_k q_bk log softmax(z_b)_k
//
// With label smoothing s over K classes, q_bk = (1-s) [k = label_b] + s/K;
// with s = 0 it is the negative log-likelihood of the labels (DCNET.md
// section 4). The targets are an input of the graph that Step fills; the
// loss and its gradient (softmax(z) - q) / B are computed in one operation
// each, stably, without forming softmax(z) as a separate node.

// crossEntropy returns the scalar loss node of logits [B, K] against
// targets [B, K].
func crossEntropy(logits, targets *G.Node) (*G.Node, error) {
	ls, ts := logits.Shape(), targets.Shape()
	if len(ls) != 2 || !ls.Eq(ts) {
		return nil, fmt.Errorf("loss: logits %v and targets %v must be equal matrices", ls, ts)
	}
	return G.ApplyOp(&xentOp{b: ls[0], k: ls[1]}, logits, targets)
}

// smoothedTargets fills t (B x K, row-major) with the label-smoothed
// one-hot rows of labels.
func smoothedTargets[T float32 | float64](t []T, labels []int, k int, smoothing float64) {
	off := smoothing / float64(k)
	on := 1 - smoothing + off
	for b, l := range labels {
		row := t[b*k : (b+1)*k]
		for i := range row {
			row[i] = T(off)
		}
		row[l] = T(on)
	}
}

// xentOp is the mean cross-entropy of logits [b, k] against target
// distributions [b, k]; its value is a scalar.
type xentOp struct{ b, k int }

func (op *xentOp) Arity() int { return 2 }
func (op *xentOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	t := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(t, t, a)
}
func (op *xentOp) InferShape(...G.DimSizer) (tensor.Shape, error) { return tensor.ScalarShape(), nil }
func (op *xentOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != 2 {
		return nil, fmt.Errorf("loss: %d inputs, want 2", len(vs))
	}
	z, err := denseOf(vs[0])
	if err != nil {
		return nil, err
	}
	q, err := denseOf(vs[1])
	if err != nil {
		return nil, err
	}
	switch zd := z.Data().(type) {
	case []float32:
		qd, ok := q.Data().([]float32)
		if !ok {
			return nil, fmt.Errorf("loss: targets are %v, logits float32", q.Dtype())
		}
		return G.NewF32(float32(xent(zd, qd, op.b, op.k))), nil
	case []float64:
		qd, ok := q.Data().([]float64)
		if !ok {
			return nil, fmt.Errorf("loss: targets are %v, logits float64", q.Dtype())
		}
		return G.NewF64(xent(zd, qd, op.b, op.k)), nil
	}
	return nil, fmt.Errorf("loss: element type %v is not supported", z.Dtype())
}
func (op *xentOp) ReturnsPtr() bool      { return false }
func (op *xentOp) CallsExtern() bool     { return false }
func (op *xentOp) OverwritesInput() int  { return -1 }
func (op *xentOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "xent(%d,%d)", op.b, op.k) }
func (op *xentOp) Hashcode() uint32      { return opHash(op) }
func (op *xentOp) String() string        { return "CrossEntropy" }

// DiffWRT says the loss is differentiated with respect to the logits only.
func (op *xentOp) DiffWRT(int) []bool { return []bool{true, false} }
func (op *xentOp) SymDiff(in G.Nodes, out, grad *G.Node) (G.Nodes, error) {
	g, err := G.ApplyOp(&xentGradOp{b: op.b, k: op.k}, in[0], in[1], grad)
	return G.Nodes{g, nil}, err
}

// xent computes the loss in float64.
func xent[T float32 | float64](z, q []T, b, k int) float64 {
	total := 0.0
	for i := range b {
		row, qr := z[i*k:(i+1)*k], q[i*k:(i+1)*k]
		m := math.Inf(-1)
		for _, v := range row {
			m = max(m, float64(v))
		}
		s := 0.0
		for _, v := range row {
			s += math.Exp(float64(v) - m)
		}
		lse := m + math.Log(s)
		for j, v := range row {
			if qr[j] != 0 {
				total -= float64(qr[j]) * (float64(v) - lse)
			}
		}
	}
	return total / float64(b)
}

// xentGradOp is the gradient of xentOp with respect to the logits:
// g (softmax(z) sum_k q - q) / b, where g is the incoming scalar gradient.
type xentGradOp struct{ b, k int }

func (op *xentGradOp) Arity() int { return 3 }
func (op *xentGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	t := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(t, t, a, t)
}
func (op *xentGradOp) InferShape(...G.DimSizer) (tensor.Shape, error) {
	return tensor.Shape{op.b, op.k}, nil
}
func (op *xentGradOp) Do(vs ...G.Value) (G.Value, error) {
	if len(vs) != 3 {
		return nil, fmt.Errorf("loss gradient: %d inputs, want 3", len(vs))
	}
	q, err := denseOf(vs[1])
	if err != nil {
		return nil, err
	}
	g, err := scalarOf(vs[2])
	if err != nil {
		return nil, err
	}
	return mapDense(vs[0], []int{op.b, op.k}, func(z, dz []float64) {
		xentGrad(z, q.Data().([]float64), dz, op.b, op.k, g)
	}, func(z, dz []float32) {
		xentGrad(z, q.Data().([]float32), dz, op.b, op.k, g)
	})
}
func (op *xentGradOp) ReturnsPtr() bool      { return false }
func (op *xentGradOp) CallsExtern() bool     { return false }
func (op *xentGradOp) OverwritesInput() int  { return -1 }
func (op *xentGradOp) WriteHash(h hash.Hash) { fmt.Fprintf(h, "xentgrad(%d,%d)", op.b, op.k) }
func (op *xentGradOp) Hashcode() uint32      { return opHash(op) }
func (op *xentGradOp) String() string        { return "CrossEntropyGrad" }

// xentGrad computes the logits gradient in float64.
func xentGrad[T float32 | float64](z, q, dz []T, b, k int, g float64) {
	for i := range b {
		row, qr, dr := z[i*k:(i+1)*k], q[i*k:(i+1)*k], dz[i*k:(i+1)*k]
		m := math.Inf(-1)
		for _, v := range row {
			m = max(m, float64(v))
		}
		s, qs := 0.0, 0.0
		for j, v := range row {
			s += math.Exp(float64(v) - m)
			qs += float64(qr[j])
		}
		for j, v := range row {
			p := math.Exp(float64(v)-m) / s
			dr[j] = T(g * (p*qs - float64(qr[j])) / float64(b))
		}
	}
}

// scalarOf returns the number a scalar value (or one-element tensor)
// holds.
func scalarOf(v G.Value) (float64, error) {
	switch s := v.(type) {
	case *G.F32:
		return float64(*s), nil
	case *G.F64:
		return float64(*s), nil
	case *tensor.Dense:
		if s.Shape().TotalSize() == 1 {
			switch d := s.Data().(type) {
			case []float32:
				return float64(d[0]), nil
			case []float64:
				return d[0], nil
			case float32:
				return float64(d), nil
			case float64:
				return d, nil
			}
		}
	}
	return 0, fmt.Errorf("value of type %T is not a scalar", v)
}
