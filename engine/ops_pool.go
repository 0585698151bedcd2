package engine

import (
	"fmt"
	"math"
	"sync"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/onnximport"
)

// maxPool adds an ONNX MaxPool over x [N,C,H,W]: 2-D, explicit pads in
// ONNX order (begin h, begin w, end h, end w) or auto_pad, strides,
// dilations and ceil_mode. Padding never wins the maximum. With ceil_mode
// a window that would start in the end padding is dropped, as ONNX
// Runtime and PyTorch do. Its gradient goes to the first maximum of each
// window in row-major order.
//
// It is an operation of this package: Gorgonia's MaxPool2D orders its
// pads differently and has no ceil_mode or dilations.
func maxPool(x *G.Node, win onnximport.Window) (*G.Node, error) {
	xs, err := checkOpInput("maxPool: input", x, 4)
	if err != nil {
		return nil, err
	}
	geo, err := resolveWindow2d("maxPool", win, xs[2], xs[3])
	if err != nil {
		return nil, err
	}
	if err := geo.checkCovered("maxPool"); err != nil {
		return nil, err
	}
	return applyKernel(maxPoolKernel{poolGeom: poolGeom{window2d: geo, n: xs[0], c: xs[1]}, argmax: &poolArgmax{}}, x)
}

// avgPool adds an ONNX AveragePool over x [N,C,H,W]: 2-D, pads or
// auto_pad, strides and ceil_mode. Without countIncludePad each window's
// sum is divided by the number of its cells inside the input; with it,
// by the number of its cells inside the input and its pads, never
// counting the cells past the end pads that ceil_mode adds (as PyTorch
// and ONNX Runtime do).
func avgPool(x *G.Node, win onnximport.Window, countIncludePad bool) (*G.Node, error) {
	xs, err := checkOpInput("avgPool: input", x, 4)
	if err != nil {
		return nil, err
	}
	for _, d := range win.Dilations {
		if d != 1 {
			return nil, fmt.Errorf("avgPool: dilations %v are not supported", win.Dilations)
		}
	}
	geo, err := resolveWindow2d("avgPool", win, xs[2], xs[3])
	if err != nil {
		return nil, err
	}
	if !countIncludePad {
		if err := geo.checkCovered("avgPool"); err != nil {
			return nil, err
		}
	}
	return applyKernel(avgPoolKernel{poolGeom: poolGeom{window2d: geo, n: xs[0], c: xs[1]}, includePad: countIncludePad}, x)
}

// globalAvgPool adds an ONNX GlobalAveragePool: the mean of each channel
// of x [N,C,H,W], as [N,C,1,1].
func globalAvgPool(x *G.Node) (*G.Node, error) {
	xs, err := checkOpInput("globalAvgPool: input", x, 4)
	if err != nil {
		return nil, err
	}
	return applyKernel(globalAvgKernel{n: xs[0], c: xs[1], h: xs[2], w: xs[3]}, x)
}

// checkCovered checks that every window reads at least one input cell,
// so that a maximum or an average over the input's cells exists.
func (w window2d) checkCovered(op string) error {
	covered := func(out, in, s, k, d, pad int) bool {
		for o := 0; o < out; o++ {
			ok := false
			for i := 0; i < k && !ok; i++ {
				p := o*s - pad + i*d
				ok = p >= 0 && p < in
			}
			if !ok {
				return false
			}
		}
		return true
	}
	if !covered(w.oh, w.h, w.sh, w.kh, w.dh, w.pt) || !covered(w.ow, w.w, w.sw, w.kw, w.dw, w.pl) {
		return fmt.Errorf("%s: pads [%d %d %d %d] leave a window of kernel %dx%d entirely in the padding", op, w.pt, w.pl, w.pb, w.pr, w.kh, w.kw)
	}
	return nil
}

// poolGeom is the geometry of a pooling over x [N,C,H,W].
type poolGeom struct {
	window2d
	n, c int
}

// String formats the pooling's parameters.
func (g poolGeom) String() string { return fmt.Sprintf("N %d C %d %v", g.n, g.c, g.window2d) }

// inShape is the shape of x.
func (g poolGeom) inShape() tensor.Shape { return tensor.Shape{g.n, g.c, g.h, g.w} }

// outShape is the shape of the output.
func (g poolGeom) outShape() tensor.Shape { return tensor.Shape{g.n, g.c, g.oh, g.ow} }

// maxPoolKernel is MaxPool with ONNX geometry. Its forward pass keeps in
// argmax where each window's maximum was, for maxPoolGrad.
type maxPoolKernel struct {
	poolGeom
	argmax *poolArgmax
}

// poolArgmax holds the positions of the window maxima of a max pooling's
// last forward pass.
type poolArgmax struct {
	mu sync.Mutex
	at []int32 // per output value, the index of its maximum in its input plane
	// key is the first element (a *float32 or *float64) of the x the
	// positions are of; nil once the gradient has used them.
	key any
}

// String names the kernel.
func (k maxPoolKernel) String() string { return "MaxPool{" + k.poolGeom.String() + "}" }

// arity is the number of inputs of maxPoolKernel.
func (k maxPoolKernel) arity() int { return 1 }

// typ is the Gorgonia type of maxPoolKernel.
func (k maxPoolKernel) typ() hm.Type { return kernelType(4, 4) }

// shapeOf checks the input shapes of maxPoolKernel and returns its output shape.
func (k maxPoolKernel) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return k.outShape(), checkKernelShape(k, "input", in[0], k.inShape())
}

// overwritesOutput marks maxPoolKernel as writing every output value.
func (k maxPoolKernel) overwritesOutput() {}

// compute runs maxPoolKernel over float32 or float64 slices.
func (k maxPoolKernel) compute(out *tensor.Dense, in []*tensor.Dense) error {
	k.argmax.mu.Lock()
	defer k.argmax.mu.Unlock()
	k.argmax.at = decoupledGrow(k.argmax.at, k.outShape().TotalSize())
	if out.Dtype() == tensor.Float32 {
		x := kernelData[float32](in[0])
		maxPoolOf(k.poolGeom, kernelData[float32](out), x, nil, k.argmax.at, false)
		k.argmax.key = &x[0]
	} else {
		x := kernelData[float64](in[0])
		maxPoolOf(k.poolGeom, kernelData[float64](out), x, nil, k.argmax.at, false)
		k.argmax.key = &x[0]
	}
	return nil
}

// diffWRT reports which inputs of maxPoolKernel have a gradient.
func (k maxPoolKernel) diffWRT() []bool { return []bool{true} }

// grads adds the gradients of the inputs of maxPoolKernel to the graph.
func (k maxPoolKernel) grads(in G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dx, err := applyKernel(maxPoolGrad(k), in[0], dy)
	return G.Nodes{dx}, err
}

// maxPoolGrad is the gradient of MaxPool: each output gradient goes to
// the input cell that was the window's maximum, as the forward pass of
// this x recorded it, or found again from x.
type maxPoolGrad maxPoolKernel

// String names the kernel.
func (k maxPoolGrad) String() string { return "GradMaxPool{" + k.poolGeom.String() + "}" }

// arity is the number of inputs of maxPoolGrad.
func (k maxPoolGrad) arity() int { return 2 }

// typ is the Gorgonia type of maxPoolGrad.
func (k maxPoolGrad) typ() hm.Type { return kernelType(4, 4, 4) }

// shapeOf checks the input shapes of maxPoolGrad and returns its output shape.
func (k maxPoolGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := checkKernelShape(k, "input", in[0], k.inShape()); err != nil {
		return nil, err
	}
	return k.inShape(), checkKernelShape(k, "gradient", in[1], k.outShape())
}

// overwritesOutput marks maxPoolGrad as writing every output value.
func (k maxPoolGrad) overwritesOutput() {}

// compute runs maxPoolGrad over float32 or float64 slices.
func (k maxPoolGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	k.argmax.mu.Lock()
	defer k.argmax.mu.Unlock()
	if out.Dtype() == tensor.Float32 {
		maxPoolGradOf(k, kernelData[float32](in[1]), kernelData[float32](in[0]), kernelData[float32](out))
	} else {
		maxPoolGradOf(k, kernelData[float64](in[1]), kernelData[float64](in[0]), kernelData[float64](out))
	}
	return nil
}

// maxPoolGradOf computes dx from dy, with the positions of the maxima
// the forward pass recorded when they are of x.
func maxPoolGradOf[T opFloat](k maxPoolGrad, dy, x, dx []T) {
	var at []int32
	if key, ok := k.argmax.key.(*T); ok && key == &x[0] {
		at = k.argmax.at
	}
	k.argmax.key = nil
	maxPoolOf(k.poolGeom, dy, x, dx, at, true)
}

// maxPoolOf writes each window's maximum of x into y (back false), or
// zeroes dx and adds y, the output's gradient, to the input cell of each
// window's maximum (back true). A NaN is the maximum of any window it is
// in. When at is not nil, the forward pass stores there the index in its
// plane of each window's maximum, and the backward pass takes them from
// there instead of searching x. Planes (n, c) are independent, so the
// work is split by plane.
func maxPoolOf[T opFloat](g poolGeom, y, x, dx []T, at []int32, back bool) {
	plane, oplane := g.h*g.w, g.oh*g.ow
	kernelParallel(g.n*g.c, oplane*g.kh*g.kw, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			src := x[p*plane:][:plane]
			dst := y[p*oplane:][:oplane]
			var pat []int32
			if at != nil {
				pat = at[p*oplane:][:oplane]
			}
			if back {
				grad := dx[p*plane:][:plane]
				clear(grad)
				if pat != nil {
					for o, q := range pat {
						grad[q] += dst[o]
					}
					continue
				}
			}
			for oh := 0; oh < g.oh; oh++ {
				hLo, hHi := g.taps(oh, g.sh, g.pt, g.dh, g.kh, g.h)
				for ow := 0; ow < g.ow; ow++ {
					wLo, wHi := g.taps(ow, g.sw, g.pl, g.dw, g.kw, g.w)
					best, at := T(math.Inf(-1)), -1
					for i := hLo; i < hHi; i++ {
						row := (oh*g.sh - g.pt + i*g.dh) * g.w
						for j := wLo; j < wHi; j++ {
							q := row + ow*g.sw - g.pl + j*g.dw
							if at < 0 {
								best, at = src[q], q
								continue
							}
							// at moves to q when v > best or v is NaN,
							// without a branch on the data (whose
							// outcome would be unpredictable).
							v, take := src[q], 0
							if v > best {
								take = 1
							}
							if v != v {
								take = 1
							}
							at += (q - at) * take
							best = src[at]
						}
					}
					switch {
					case back:
						dx[p*plane+at] += dst[oh*g.ow+ow]
					case pat != nil:
						dst[oh*g.ow+ow] = best
						pat[oh*g.ow+ow] = int32(at)
					default:
						dst[oh*g.ow+ow] = best
					}
				}
			}
		}
	})
}

// taps returns the kernel taps [lo, hi) of output index o along an axis
// (stride s, begin pad pad, dilation d, kernel k, input size in) that
// read inside the input.
func (w window2d) taps(o, s, pad, d, k, in int) (lo, hi int) {
	start := o*s - pad
	if start < 0 {
		lo = (-start + d - 1) / d
	}
	hi = k
	if last := start + (k-1)*d; last >= in {
		hi = k - (last-in)/d - 1
	}
	return lo, max(lo, hi)
}

// avgPoolKernel is AveragePool with ONNX geometry, pads counted in the
// divisor when includePad is set.
type avgPoolKernel struct {
	poolGeom
	includePad bool
}

// String names the kernel.
func (k avgPoolKernel) String() string {
	return fmt.Sprintf("AvgPool{includePad %t %v}", k.includePad, k.poolGeom)
}

// arity is the number of inputs of avgPoolKernel.
func (k avgPoolKernel) arity() int { return 1 }

// typ is the Gorgonia type of avgPoolKernel.
func (k avgPoolKernel) typ() hm.Type { return kernelType(4, 4) }

// shapeOf checks the input shapes of avgPoolKernel and returns its output shape.
func (k avgPoolKernel) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return k.outShape(), checkKernelShape(k, "input", in[0], k.inShape())
}

// compute runs avgPoolKernel over float32 or float64 slices.
func (k avgPoolKernel) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		avgPoolOf(k, kernelData[float32](out), kernelData[float32](in[0]), false)
	} else {
		avgPoolOf(k, kernelData[float64](out), kernelData[float64](in[0]), false)
	}
	return nil
}

// diffWRT reports which inputs of avgPoolKernel have a gradient.
func (k avgPoolKernel) diffWRT() []bool { return []bool{true} }

// grads adds the gradients of the inputs of avgPoolKernel to the graph.
func (k avgPoolKernel) grads(_ G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dx, err := applyKernel(avgPoolGrad(k), dy)
	return G.Nodes{dx}, err
}

// avgPoolGrad is the gradient of AveragePool: each output gradient,
// divided by its window's divisor, goes to the window's input cells.
type avgPoolGrad avgPoolKernel

// String names the kernel.
func (k avgPoolGrad) String() string { return "Grad" + avgPoolKernel(k).String() }

// arity is the number of inputs of avgPoolGrad.
func (k avgPoolGrad) arity() int { return 1 }

// typ is the Gorgonia type of avgPoolGrad.
func (k avgPoolGrad) typ() hm.Type { return kernelType(4, 4) }

// shapeOf checks the input shapes of avgPoolGrad and returns its output shape.
func (k avgPoolGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return k.inShape(), checkKernelShape(k, "gradient", in[0], k.outShape())
}

// compute runs avgPoolGrad over float32 or float64 slices.
func (k avgPoolGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		avgPoolOf(avgPoolKernel(k), kernelData[float32](in[0]), kernelData[float32](out), true)
	} else {
		avgPoolOf(avgPoolKernel(k), kernelData[float64](in[0]), kernelData[float64](out), true)
	}
	return nil
}

// divisor returns the number of cells an average over the window of
// output (oh, ow) divides by, given its input taps.
func (k avgPoolKernel) divisor(oh, ow, hTaps, wTaps int) int {
	if !k.includePad {
		return hTaps * wTaps
	}
	// Cells inside the input and its pads: the window is cut at the end
	// pad, never at the begin pad (windows start at or after it).
	hs, ws := oh*k.sh-k.pt, ow*k.sw-k.pl
	he, we := min(hs+k.kh, k.h+k.pb), min(ws+k.kw, k.w+k.pr)
	return (he - hs) * (we - ws)
}

// avgPoolOf writes each window's average of x into y (back false), or
// zeroes x and spreads y, the output's gradient, over each window's input
// cells (back true).
func avgPoolOf[T opFloat](k avgPoolKernel, y, x []T, back bool) {
	plane, oplane := k.h*k.w, k.oh*k.ow
	kernelParallel(k.n*k.c, oplane*k.kh*k.kw, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			src := x[p*plane:][:plane]
			dst := y[p*oplane:][:oplane]
			if back {
				clear(src)
			}
			for oh := 0; oh < k.oh; oh++ {
				hLo, hHi := k.taps(oh, k.sh, k.pt, 1, k.kh, k.h)
				for ow := 0; ow < k.ow; ow++ {
					wLo, wHi := k.taps(ow, k.sw, k.pl, 1, k.kw, k.w)
					div := k.divisor(oh, ow, hHi-hLo, wHi-wLo)
					// Cell (i, j) of the window is src[base+i*w+j].
					base := (oh*k.sh-k.pt)*k.w + ow*k.sw - k.pl
					if back {
						g := dst[oh*k.ow+ow] / T(div)
						for i := hLo; i < hHi; i++ {
							row := src[base+i*k.w+wLo : base+i*k.w+wHi]
							for j := range row {
								row[j] += g
							}
						}
						continue
					}
					var s float64
					for i := hLo; i < hHi; i++ {
						for _, v := range src[base+i*k.w+wLo : base+i*k.w+wHi] {
							s += float64(v)
						}
					}
					dst[oh*k.ow+ow] = T(s / float64(div))
				}
			}
		}
	})
}

// globalAvgKernel is GlobalAveragePool over x [N,C,H,W].
type globalAvgKernel struct {
	n, c, h, w int
}

// String names the kernel.
func (k globalAvgKernel) String() string {
	return fmt.Sprintf("GlobalAvgPool{N %d C %d in %dx%d}", k.n, k.c, k.h, k.w)
}

// inShape is the shape of x.
func (k globalAvgKernel) inShape() tensor.Shape { return tensor.Shape{k.n, k.c, k.h, k.w} }

// outShape is the shape of the output.
func (k globalAvgKernel) outShape() tensor.Shape { return tensor.Shape{k.n, k.c, 1, 1} }

// arity is the number of inputs of globalAvgKernel.
func (k globalAvgKernel) arity() int { return 1 }

// typ is the Gorgonia type of globalAvgKernel.
func (k globalAvgKernel) typ() hm.Type { return kernelType(4, 4) }

// shapeOf checks the input shapes of globalAvgKernel and returns its output shape.
func (k globalAvgKernel) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return k.outShape(), checkKernelShape(k, "input", in[0], k.inShape())
}

// compute runs globalAvgKernel over float32 or float64 slices.
func (k globalAvgKernel) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		globalAvgOf(kernelData[float32](out), kernelData[float32](in[0]), k.h*k.w, false)
	} else {
		globalAvgOf(kernelData[float64](out), kernelData[float64](in[0]), k.h*k.w, false)
	}
	return nil
}

// diffWRT reports which inputs of globalAvgKernel have a gradient.
func (k globalAvgKernel) diffWRT() []bool { return []bool{true} }

// grads adds the gradients of the inputs of globalAvgKernel to the graph.
func (k globalAvgKernel) grads(_ G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dx, err := applyKernel(globalAvgGrad(k), dy)
	return G.Nodes{dx}, err
}

// globalAvgOf writes the mean of each run of inner values of x into y
// (back false), or sets each run of x to its y divided by inner (back
// true).
func globalAvgOf[T opFloat](y, x []T, inner int, back bool) {
	kernelParallel(len(y), inner, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			run := x[p*inner:][:inner]
			if back {
				g := y[p] / T(inner)
				for i := range run {
					run[i] = g
				}
				continue
			}
			var s float64
			for _, v := range run {
				s += float64(v)
			}
			y[p] = T(s / float64(inner))
		}
	})
}

// globalAvgGrad is the gradient of GlobalAveragePool.
type globalAvgGrad globalAvgKernel

// String names the kernel.
func (k globalAvgGrad) String() string { return "Grad" + globalAvgKernel(k).String() }

// arity is the number of inputs of globalAvgGrad.
func (k globalAvgGrad) arity() int { return 1 }

// typ is the Gorgonia type of globalAvgGrad.
func (k globalAvgGrad) typ() hm.Type { return kernelType(4, 4) }

// shapeOf checks the input shapes of globalAvgGrad and returns its output shape.
func (k globalAvgGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return globalAvgKernel(k).inShape(), checkKernelShape(k, "gradient", in[0], globalAvgKernel(k).outShape())
}

// compute runs globalAvgGrad over float32 or float64 slices.
func (k globalAvgGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		globalAvgOf(kernelData[float32](in[0]), kernelData[float32](out), k.h*k.w, true)
	} else {
		globalAvgOf(kernelData[float64](in[0]), kernelData[float64](out), k.h*k.w, true)
	}
	return nil
}
