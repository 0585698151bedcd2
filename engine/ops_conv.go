package engine

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/onnximport"
)

// conv adds an ONNX Conv over x [N,C,H,W] with weight w [M,C/group,kh,kw]
// and optional bias b [M]: 2-D, explicit begin/end pads (asymmetric
// allowed) or auto_pad resolved from x's static shape, strides,
// dilations and group >= 1 (grouped and depthwise convolutions).
//
// It is one operation of this package (convGemm): the columns of x are
// gathered with ONNX's geometry, multiplied by the filters with one BLAS
// product per group, and laid out as [N, M, OH, OW] with the bias added.
// Its gradients are operations of this package too, the filters' reusing
// the columns of the forward pass.
func conv(x, w, b *G.Node, win onnximport.Window, group int64) (*G.Node, error) {
	xs, err := checkOpInput("conv: input", x, 4)
	if err != nil {
		return nil, err
	}
	ws, err := checkOpInput("conv: weight", w, 4)
	if err != nil {
		return nil, err
	}
	n, c, h, wd := xs[0], xs[1], xs[2], xs[3]
	m, cg := ws[0], ws[1]
	if group < 1 || group > int64(c) {
		return nil, fmt.Errorf("conv: group %d is not between 1 and the %d input channels", group, c)
	}
	g := int(group)
	if c != cg*g || m%g != 0 {
		return nil, fmt.Errorf("conv: input %v and weight %v do not fit group %d (want %d input channels and output channels a multiple of %d)", xs, ws, group, cg*g, g)
	}
	if b != nil {
		bs, err := checkOpInput("conv: bias", b, 1)
		if err != nil {
			return nil, err
		}
		if bs[0] != m {
			return nil, fmt.Errorf("conv: bias has shape %v, want [%d]", bs, m)
		}
	}
	if err := checkSameDtype(x, w, b); err != nil {
		return nil, fmt.Errorf("conv: %w", err)
	}
	geo, err := resolveWindow2d("conv", win, h, wd)
	if err != nil {
		return nil, err
	}
	if int64(ws[2]) != win.Kernel[0] || int64(ws[3]) != win.Kernel[1] {
		return nil, fmt.Errorf("conv: kernel_shape %v differs from the weight's %v", win.Kernel, ws[2:])
	}
	cv := convGeom{window2d: geo, n: n, c: c, groups: g}
	k := convGemm{convGeom: cv, m: m, bias: b != nil, cache: &convGemmCache{id: convGemmSeq.Add(1)}}
	if b == nil {
		return applyKernel(k, x, w)
	}
	return applyKernel(k, x, w, b)
}

// window2d is a 2-D sliding window resolved for one input size: kernel,
// strides, dilations, pads (top, left, bottom, right) and output size.
type window2d struct {
	h, w           int // input height and width
	kh, kw         int
	sh, sw         int
	dh, dw         int
	pt, pl, pb, pr int
	oh, ow         int
}

// resolveWindow2d checks a 2-D ONNX window and resolves its pads and output
// size for an input of h x w.
func resolveWindow2d(op string, win onnximport.Window, h, w int) (window2d, error) {
	if len(win.Kernel) != 2 {
		return window2d{}, fmt.Errorf("%s: kernel %v: only 2-D windows are supported", op, win.Kernel)
	}
	if len(win.Strides) != 2 || len(win.Dilations) != 2 || len(win.Pads) != 4 {
		return window2d{}, fmt.Errorf("%s: strides %v, dilations %v and pads %v do not fit a 2-D kernel", op, win.Strides, win.Dilations, win.Pads)
	}
	for i := 0; i < 2; i++ {
		if win.Kernel[i] < 1 || win.Strides[i] < 1 || win.Dilations[i] < 1 {
			return window2d{}, fmt.Errorf("%s: kernel %v, strides %v and dilations %v must be positive", op, win.Kernel, win.Strides, win.Dilations)
		}
	}
	for _, p := range win.Pads {
		if p < 0 {
			return window2d{}, fmt.Errorf("%s: pads %v must not be negative", op, win.Pads)
		}
	}
	outs, pads, err := win.Output([]onnximport.Dim{{Size: int64(h)}, {Size: int64(w)}})
	if err != nil {
		return window2d{}, fmt.Errorf("%s: input %dx%d: %w", op, h, w, err)
	}
	r := window2d{
		h: h, w: w,
		kh: int(win.Kernel[0]), kw: int(win.Kernel[1]),
		sh: int(win.Strides[0]), sw: int(win.Strides[1]),
		dh: int(win.Dilations[0]), dw: int(win.Dilations[1]),
		pt: int(pads[0]), pl: int(pads[1]), pb: int(pads[2]), pr: int(pads[3]),
		oh: int(outs[0].Size), ow: int(outs[1].Size),
	}
	if r.oh < 1 || r.ow < 1 {
		return window2d{}, fmt.Errorf("%s: input %dx%d gives an empty output %dx%d", op, h, w, r.oh, r.ow)
	}
	return r, nil
}

// String formats the window's parameters.
func (w window2d) String() string {
	return fmt.Sprintf("in %dx%d k %dx%d s %dx%d d %dx%d pads [%d %d %d %d] out %dx%d",
		w.h, w.w, w.kh, w.kw, w.sh, w.sw, w.dh, w.dw, w.pt, w.pl, w.pb, w.pr, w.oh, w.ow)
}

// windowSpan returns the output indices [lo, hi) whose window tap at kernel
// offset off reads inside an input axis of size in: lo*s - pad + off >= 0
// and hi is the first index reading at or past in.
func windowSpan(out, in, s, pad, off int) (lo, hi int) {
	first := pad - off // smallest o*s
	if first > 0 {
		lo = (first + s - 1) / s
	}
	last := in + pad - off // o*s < last
	if last <= 0 {
		return min(lo, out), min(lo, out)
	}
	hi = min((last+s-1)/s, out)
	return min(lo, hi), hi
}

// convGeom is the geometry of a convolution over x [N,C,H,W] in groups.
type convGeom struct {
	window2d
	n, c, groups int
}

// String formats the convolution's parameters.
func (g convGeom) String() string {
	return fmt.Sprintf("N %d C %d groups %d %v", g.n, g.c, g.groups, g.window2d)
}

// inShape is the shape of x.
func (g convGeom) inShape() tensor.Shape { return tensor.Shape{g.n, g.c, g.h, g.w} }

// outShape is the shape of the output for m filters.
func (g convGeom) outShape(m int) tensor.Shape { return tensor.Shape{g.n, m, g.oh, g.ow} }

// prodShape is the shape of the product of m filters and the columns:
// [M, N*OH*OW], or [groups, M/groups, N*OH*OW] with groups.
func (g convGeom) prodShape(m int) tensor.Shape {
	if g.groups == 1 {
		return tensor.Shape{m, g.n * g.oh * g.ow}
	}
	return tensor.Shape{g.groups, m / g.groups, g.n * g.oh * g.ow}
}

// groupDims returns, for m filters, the filters of one group, the rows
// of the columns of one group (C/groups*kh*kw) and the number of output
// locations N*OH*OW (the columns' length).
func (g convGeom) groupDims(m int) (mg, kg, np int) {
	return m / g.groups, g.c / g.groups * g.kh * g.kw, g.n * g.oh * g.ow
}

// colGeom returns the column gathering of the convolution. The rows of
// the columns are channel-major, so the rows of one group are a block.
func (g convGeom) colGeom() im2colGeom {
	return im2colGeom{
		batch: g.n, inC: g.c, inH: g.h, inW: g.w, kH: g.kh, kW: g.kw, outH: g.oh, outW: g.ow,
		strideH: g.sh, strideW: g.sw, dilH: g.dh, dilW: g.dw, padTop: g.pt, padLeft: g.pl,
	}
}

// convGemmSeq numbers convolutions, so that each has its own buffers and
// two of them never merge into one graph node.
var convGemmSeq atomic.Uint64

// convGemmCache holds the buffers of one convolution between calls: its
// filters transposed and the filter gradient's partial sums. The large
// matrices live in convScratch, shared by every convolution.
type convGemmCache struct {
	id  uint64
	mu  sync.Mutex
	f32 convGemmBuffers[float32]
	f64 convGemmBuffers[float64]
}

// convGemmBuffers are a convolution's buffers of one element type.
type convGemmBuffers[T opFloat] struct {
	wT   []T // one group's filters transposed, [C/groups*kh*kw, M/groups]
	part []T // gemmReduce's partial sums
}

// convBuffers returns the cache's buffers of element type T.
func convBuffers[T opFloat](c *convGemmCache) *convGemmBuffers[T] {
	if b, ok := any(&c.f32).(*convGemmBuffers[T]); ok {
		return b
	}
	return any(&c.f64).(*convGemmBuffers[T])
}

// convScratch holds the matrices a convolution needs only while it runs,
// shared by every convolution of the process so that a deep network holds
// one set of them rather than one per layer (for VGG16 at 224x224 the
// columns of one layer alone take hundreds of megabytes). A graph runs its
// operations one at a time, so the lock is not contended within a graph.
//
// The columns of the last forward convolution stay valid until another
// convolution's forward pass, so the filter gradient of the last layer
// (the first one the backward pass reaches) reuses them, and every other
// layer gathers its columns again: one im2col per layer, cheap next to
// the matrix products.
type convScratch[T opFloat] struct {
	mu   sync.Mutex
	cols []T // [C*kh*kw, N*OH*OW]: the columns of an input (im2colCols)
	// owner and key say whose columns cols holds: the convolution's cache
	// and the first element of its input.
	owner *convGemmCache
	key   *T
	prod  []T // the forward's product, prodShape
	dcols []T // dL/dcols, like cols
}

// The scratch matrices of each element type.
var (
	convScratch32 convScratch[float32]
	convScratch64 convScratch[float64]
)

// scratchOf returns the scratch matrices of element type T.
func scratchOf[T opFloat]() *convScratch[T] {
	if s, ok := any(&convScratch32).(*convScratch[T]); ok {
		return s
	}
	return any(&convScratch64).(*convScratch[T])
}

// convGemm is ONNX Conv over x [N, C, H, W] with filters w [M, C/groups,
// kh, kw] and, when bias, b [M]: the columns of x (im2colCols) times the
// filters, one BLAS product per group, laid out as [N, M, OH, OW] with
// the bias added. The columns stay in convScratch for convGemmGradW.
type convGemm struct {
	convGeom
	m     int
	bias  bool
	cache *convGemmCache
}

// String names the kernel.
func (k convGemm) String() string {
	return fmt.Sprintf("ConvGemm#%d{M %d bias %t %v}", k.cache.id, k.m, k.bias, k.convGeom)
}

// arity is the number of inputs of convGemm.
func (k convGemm) arity() int {
	if k.bias {
		return 3
	}
	return 2
}

// typ is the Gorgonia type of convGemm.
func (k convGemm) typ() hm.Type {
	if k.bias {
		return kernelType(4, 4, 4, 1)
	}
	return kernelType(4, 4, 4)
}

// wShape is the shape of the filters.
func (k convGemm) wShape() tensor.Shape { return tensor.Shape{k.m, k.c / k.groups, k.kh, k.kw} }

// shapeOf checks the input shapes of convGemm and returns its output shape.
func (k convGemm) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := checkKernelShape(k, "input", in[0], k.inShape()); err != nil {
		return nil, err
	}
	if err := checkKernelShape(k, "weight", in[1], k.wShape()); err != nil {
		return nil, err
	}
	if k.bias {
		if err := checkKernelShape(k, "bias", in[2], tensor.Shape{k.m}); err != nil {
			return nil, err
		}
	}
	return k.outShape(k.m), nil
}

// overwritesOutput marks convGemm as writing every output value.
func (k convGemm) overwritesOutput() {}

// compute runs convGemm over float32 or float64 slices.
func (k convGemm) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		var b []float32
		if k.bias {
			b = kernelData[float32](in[2])
		}
		convGemmForward(k, kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]), b)
	} else {
		var b []float64
		if k.bias {
			b = kernelData[float64](in[2])
		}
		convGemmForward(k, kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]), b)
	}
	return nil
}

// convGemmForward computes y = conv(x, w) + b (b nil: no bias), keeping
// the columns of x.
func convGemmForward[T opFloat](k convGemm, y, x, w, b []T) {
	buf := scratchOf[T]()
	buf.mu.Lock()
	defer buf.mu.Unlock()
	mg, kg, np := k.groupDims(k.m)
	buf.cols = decoupledGrow(buf.cols, k.groups*kg*np)
	im2colCols(k.colGeom(), x, buf.cols)
	buf.owner, buf.key = k.cache, &x[0]
	buf.prod = decoupledGrow(buf.prod, k.m*np)
	for g := range k.groups {
		gemm(false, false, mg, np, kg, w[g*mg*kg:], kg, buf.cols[g*kg*np:], np, 0, buf.prod[g*mg*np:], np)
	}
	swapLeadingAxes(y, buf.prod, k.m, k.n, k.oh*k.ow, b)
}

// diffWRT reports which inputs of convGemm have a gradient.
func (k convGemm) diffWRT() []bool {
	if k.bias {
		return []bool{true, true, true}
	}
	return []bool{true, true}
}

// grads adds the gradients of the inputs of convGemm to the graph: the
// output's gradient laid out as the product (convProdGrad), from which
// convGemmGradX and convGemmGradW compute those of x and w, and the
// bias's channel sums.
func (k convGemm) grads(in G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dprod, err := applyKernel(convProdGrad{convGeom: k.convGeom, m: k.m}, dy)
	if err != nil {
		return nil, err
	}
	dx, err := applyKernel(convGemmGradX{k}, in[1], dprod)
	if err != nil {
		return nil, err
	}
	dw, err := applyKernel(convGemmGradW{k}, in[0], dprod)
	if err != nil || !k.bias {
		return G.Nodes{dx, dw}, err
	}
	db, err := applyKernel(channelSum{rank: 4, c: k.m}, dy)
	return G.Nodes{dx, dw, db}, err
}

// swapLeadingAxes sets out[j, i, :] = in[i, j, :] + b[i] for in [a, c, p]
// (b nil: no bias).
func swapLeadingAxes[T opFloat](out, in []T, a, c, p int, b []T) {
	kernelParallel(a, c*p, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			for j := 0; j < c; j++ {
				src := in[(i*c+j)*p:][:p]
				dst := out[(j*a+i)*p:][:p]
				if b == nil {
					copy(dst, src)
					continue
				}
				bi := b[i]
				for q, v := range src {
					dst[q] = v + bi
				}
			}
		}
	})
}

// convProdGrad lays the gradient of a convolution's output [N, M, OH, OW]
// out as its product (prodShape).
type convProdGrad struct {
	convGeom
	m int
}

// String names the kernel.
func (k convProdGrad) String() string { return fmt.Sprintf("ConvProdGrad{M %d %v}", k.m, k.convGeom) }

// arity is the number of inputs of convProdGrad.
func (k convProdGrad) arity() int { return 1 }

// typ is the Gorgonia type of convProdGrad.
func (k convProdGrad) typ() hm.Type { return kernelType(len(k.prodShape(k.m)), 4) }

// shapeOf checks the input shapes of convProdGrad and returns its output shape.
func (k convProdGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return k.prodShape(k.m), checkKernelShape(k, "gradient", in[0], k.outShape(k.m))
}

// overwritesOutput marks convProdGrad as writing every output value.
func (k convProdGrad) overwritesOutput() {}

// compute runs convProdGrad over float32 or float64 slices.
func (k convProdGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		swapLeadingAxes(kernelData[float32](out), kernelData[float32](in[0]), k.n, k.m, k.oh*k.ow, nil)
	} else {
		swapLeadingAxes(kernelData[float64](out), kernelData[float64](in[0]), k.n, k.m, k.oh*k.ow, nil)
	}
	return nil
}

// convGemmGradX is the gradient of a convGemm with respect to x, from the
// filters and the output's gradient laid out as the product: the
// filters' transpose times it, per group, added back onto the input
// cells (col2imCols).
type convGemmGradX struct{ conv convGemm }

// String names the kernel.
func (k convGemmGradX) String() string { return "GradX" + k.conv.String() }

// arity is the number of inputs of convGemmGradX.
func (k convGemmGradX) arity() int { return 2 }

// typ is the Gorgonia type of convGemmGradX.
func (k convGemmGradX) typ() hm.Type { return kernelType(4, 4, len(k.conv.prodShape(k.conv.m))) }

// shapeOf checks the input shapes of convGemmGradX and returns its output shape.
func (k convGemmGradX) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := checkKernelShape(k, "weight", in[0], k.conv.wShape()); err != nil {
		return nil, err
	}
	return k.conv.inShape(), checkKernelShape(k, "gradient", in[1], k.conv.prodShape(k.conv.m))
}

// overwritesOutput marks convGemmGradX as writing every output value.
func (k convGemmGradX) overwritesOutput() {}

// compute runs convGemmGradX over float32 or float64 slices.
func (k convGemmGradX) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		convGemmBackX(k.conv, kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]))
	} else {
		convGemmBackX(k.conv, kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]))
	}
	return nil
}

// convGemmBackX computes dx from the filters w and dprod, the output's
// gradient laid out as the product.
func convGemmBackX[T opFloat](k convGemm, dx, w, dprod []T) {
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	buf := convBuffers[T](k.cache)
	sc := scratchOf[T]()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	mg, kg, np := k.groupDims(k.m)
	sc.dcols = decoupledGrow(sc.dcols, k.groups*kg*np)
	buf.wT = decoupledGrow(buf.wT, kg*mg)
	for g := range k.groups {
		wg := w[g*mg*kg : (g+1)*mg*kg]
		for i := range mg {
			for j, v := range wg[i*kg : (i+1)*kg] {
				buf.wT[j*mg+i] = v
			}
		}
		gemm(false, false, kg, np, mg, buf.wT, mg, dprod[g*mg*np:], np, 0, sc.dcols[g*kg*np:], np)
	}
	col2imCols(k.colGeom(), sc.dcols, dx)
}

// convGemmGradW is the gradient of a convGemm with respect to its
// filters, from x and the output's gradient laid out as the product: that
// times the columns' transpose, per group. It uses the columns the
// forward pass kept when they are of this x, and gathers them again
// otherwise.
type convGemmGradW struct{ conv convGemm }

// String names the kernel.
func (k convGemmGradW) String() string { return "GradW" + k.conv.String() }

// arity is the number of inputs of convGemmGradW.
func (k convGemmGradW) arity() int { return 2 }

// typ is the Gorgonia type of convGemmGradW.
func (k convGemmGradW) typ() hm.Type { return kernelType(4, 4, len(k.conv.prodShape(k.conv.m))) }

// shapeOf checks the input shapes of convGemmGradW and returns its output shape.
func (k convGemmGradW) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := checkKernelShape(k, "input", in[0], k.conv.inShape()); err != nil {
		return nil, err
	}
	return k.conv.wShape(), checkKernelShape(k, "gradient", in[1], k.conv.prodShape(k.conv.m))
}

// overwritesOutput marks convGemmGradW as writing every output value.
func (k convGemmGradW) overwritesOutput() {}

// compute runs convGemmGradW over float32 or float64 slices.
func (k convGemmGradW) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		convGemmBackW(k.conv, kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]))
	} else {
		convGemmBackW(k.conv, kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]))
	}
	return nil
}

// convGemmBackW computes dw from x and dprod, the output's gradient laid
// out as the product.
func convGemmBackW[T opFloat](k convGemm, dw, x, dprod []T) {
	k.cache.mu.Lock()
	defer k.cache.mu.Unlock()
	buf := convBuffers[T](k.cache)
	sc := scratchOf[T]()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	mg, kg, np := k.groupDims(k.m)
	if sc.owner != k.cache || sc.key != &x[0] {
		sc.cols = decoupledGrow(sc.cols, k.groups*kg*np)
		im2colCols(k.colGeom(), x, sc.cols)
		sc.owner, sc.key = k.cache, &x[0]
	}
	for g := range k.groups {
		buf.part = gemmReduce(mg, kg, np, dprod[g*mg*np:], np, sc.cols[g*kg*np:], np, dw[g*mg*kg:], kg, buf.part)
	}
}
