package engine

import (
	"fmt"

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
// Without groups, with symmetric pads and no dilation it is Gorgonia's
// Conv2d (im2col and one matrix product; convGorgonia). Otherwise the
// columns are gathered by an operation of this package that knows ONNX's
// geometry and groups, and multiplied by Gorgonia's matrix products, one
// per group (convColumns). The bias is added by an operation of this
// package either way.
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
	if g == 1 && geo.pt == geo.pb && geo.pl == geo.pr && geo.dh == 1 && geo.dw == 1 {
		return convGorgonia(x, w, b, cv, m)
	}
	return convColumns(x, w, b, cv, m)
}

// convGorgonia adds a convolution without groups, dilations or
// asymmetric pads with Gorgonia's Conv2d, and the bias with
// channelBiasAdd. (Its im2col leaves dilations out of its hash, so
// Gorgonia could merge two nodes differing only in dilations; they never
// come here.)
func convGorgonia(x, w, b *G.Node, cv convGeom, m int) (*G.Node, error) {
	y, err := G.Conv2d(x, w, tensor.Shape{cv.kh, cv.kw}, []int{cv.pt, cv.pl}, []int{cv.sh, cv.sw}, []int{1, 1})
	if err != nil {
		return nil, fmt.Errorf("conv: %w", err)
	}
	if want := (tensor.Shape{cv.n, m, cv.oh, cv.ow}); !y.Shape().Eq(want) {
		return nil, fmt.Errorf("conv: Gorgonia's Conv2d gives shape %v, want %v", y.Shape(), want)
	}
	if b == nil {
		return y, nil
	}
	return applyKernel(channelBiasAdd{rank: 4, c: m}, y, b)
}

// convColumns adds a convolution as convCols, one matrix product per
// group (Gorgonia's Mul or BatchedMatMul) and convOut, which lays the
// product out as [N, M, OH, OW] and adds the bias.
func convColumns(x, w, b *G.Node, cv convGeom, m int) (*G.Node, error) {
	cols, err := applyKernel(convCols{cv}, x)
	if err != nil {
		return nil, fmt.Errorf("conv: %w", err)
	}
	g := cv.groups
	k := cv.c / g * cv.kh * cv.kw
	var prod *G.Node
	if g == 1 {
		wm, err := G.Reshape(w, tensor.Shape{m, k})
		if err != nil {
			return nil, fmt.Errorf("conv: reshaping the weight: %w", err)
		}
		if prod, err = G.Mul(wm, cols); err != nil {
			return nil, fmt.Errorf("conv: %w", err)
		}
	} else {
		wm, err := G.Reshape(w, tensor.Shape{g, m / g, k})
		if err != nil {
			return nil, fmt.Errorf("conv: reshaping the weight: %w", err)
		}
		if prod, err = G.BatchedMatMul(wm, cols); err != nil {
			return nil, fmt.Errorf("conv: %w", err)
		}
	}
	out := convOut{convGeom: cv, m: m, bias: b != nil}
	if b == nil {
		return applyKernel(out, prod)
	}
	return applyKernel(out, prod, b)
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

// colShape is the shape of the columns: [groups, C/groups*kh*kw, N*OH*OW],
// without the first axis for one group.
func (g convGeom) colShape() tensor.Shape {
	k, np := g.c/g.groups*g.kh*g.kw, g.n*g.oh*g.ow
	if g.groups == 1 {
		return tensor.Shape{k, np}
	}
	return tensor.Shape{g.groups, k, np}
}

// inShape is the shape of x.
func (g convGeom) inShape() tensor.Shape { return tensor.Shape{g.n, g.c, g.h, g.w} }

// convCols gathers the input cells each output cell's window reads, with
// ONNX pads and dilations, grouped: row (c, ki, kj) of group g, column
// (n, oh, ow), zero for padding.
type convCols struct{ convGeom }

// String names the kernel.
func (k convCols) String() string { return "Im2Col{" + k.convGeom.String() + "}" }

// arity is the number of inputs of convCols.
func (k convCols) arity() int { return 1 }

// typ is the Gorgonia type of convCols.
func (k convCols) typ() hm.Type { return kernelType(len(k.colShape()), 4) }

// shapeOf checks the input shapes of convCols and returns its output shape.
func (k convCols) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return k.colShape(), checkKernelShape(k, "input", in[0], k.inShape())
}

// compute runs convCols over float32 or float64 slices.
func (k convCols) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		convColsOf(k.convGeom, kernelData[float32](out), kernelData[float32](in[0]), false)
	} else {
		convColsOf(k.convGeom, kernelData[float64](out), kernelData[float64](in[0]), false)
	}
	return nil
}

// diffWRT reports which inputs of convCols have a gradient.
func (k convCols) diffWRT() []bool { return []bool{true} }

// grads adds the gradients of the inputs of convCols to the graph.
func (k convCols) grads(_ G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dx, err := applyKernel(convColsGrad(k), dy)
	return G.Nodes{dx}, err
}

// convColsGrad is the gradient of convCols: it adds each column cell back onto the
// input cell it was gathered from.
type convColsGrad convCols

// String names the kernel.
func (k convColsGrad) String() string { return "Col2Im{" + k.convGeom.String() + "}" }

// arity is the number of inputs of convColsGrad.
func (k convColsGrad) arity() int { return 1 }

// typ is the Gorgonia type of convColsGrad.
func (k convColsGrad) typ() hm.Type { return kernelType(4, len(k.colShape())) }

// shapeOf checks the input shapes of convColsGrad and returns its output shape.
func (k convColsGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return k.inShape(), checkKernelShape(k, "gradient", in[0], k.colShape())
}

// compute runs convColsGrad over float32 or float64 slices.
func (k convColsGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		convColsOf(k.convGeom, kernelData[float32](in[0]), kernelData[float32](out), true)
	} else {
		convColsOf(k.convGeom, kernelData[float64](in[0]), kernelData[float64](out), true)
	}
	return nil
}

// convColsOf copies x into cols (back false), or adds cols back into x,
// which it first zeroes (back true). Each (channel, image) pair reads and
// writes its own cells, so the work is split by pair.
func convColsOf[T opFloat](g convGeom, cols, x []T, back bool) {
	kk := g.kh * g.kw
	p := g.oh * g.ow
	np := g.n * p
	plane := g.h * g.w
	kernelParallel(g.c*g.n, p*kk, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			ch, b := u/g.n, u%g.n
			src := x[(b*g.c+ch)*plane:][:plane]
			if back {
				clear(src)
			}
			for ki := 0; ki < g.kh; ki++ {
				hLo, hHi := windowSpan(g.oh, g.h, g.sh, g.pt, ki*g.dh)
				for kj := 0; kj < g.kw; kj++ {
					wLo, wHi := windowSpan(g.ow, g.w, g.sw, g.pl, kj*g.dw)
					// Row (ch, ki, kj): group-major rows are channel-major.
					dst := cols[(ch*kk+ki*g.kw+kj)*np+b*p:][:p]
					for oh := 0; oh < g.oh; oh++ {
						d := dst[oh*g.ow:][:g.ow]
						if oh < hLo || oh >= hHi {
							if !back {
								clear(d)
							}
							continue
						}
						r := src[(oh*g.sh-g.pt+ki*g.dh)*g.w:][:g.w]
						iw := wLo*g.sw - g.pl + kj*g.dw
						if back {
							for ow := wLo; ow < wHi; ow++ {
								r[iw] += d[ow]
								iw += g.sw
							}
							continue
						}
						clear(d[:wLo])
						if g.sw == 1 {
							copy(d[wLo:wHi], r[iw:])
						} else {
							for ow := wLo; ow < wHi; ow++ {
								d[ow] = r[iw]
								iw += g.sw
							}
						}
						clear(d[wHi:])
					}
				}
			}
		}
	})
}

// convOut turns the product of the weights and the columns, laid out
// [M, N, OH*OW], into the output [N, M, OH, OW], adding the bias [M]
// when it has one (a second input).
type convOut struct {
	convGeom
	m    int
	bias bool
}

// String names the kernel.
func (k convOut) String() string {
	return fmt.Sprintf("ConvOut{M %d bias %t %v}", k.m, k.bias, k.convGeom)
}

// arity is the number of inputs of convOut.
func (k convOut) arity() int {
	if k.bias {
		return 2
	}
	return 1
}

// prodShape is the shape of the product input.
func (k convOut) prodShape() tensor.Shape {
	if k.groups == 1 {
		return tensor.Shape{k.m, k.n * k.oh * k.ow}
	}
	return tensor.Shape{k.groups, k.m / k.groups, k.n * k.oh * k.ow}
}

// outShape is the shape of the output.
func (k convOut) outShape() tensor.Shape { return tensor.Shape{k.n, k.m, k.oh, k.ow} }

// typ is the Gorgonia type of convOut.
func (k convOut) typ() hm.Type {
	if k.bias {
		return kernelType(4, len(k.prodShape()), 1)
	}
	return kernelType(4, len(k.prodShape()))
}

// shapeOf checks the input shapes of convOut and returns its output shape.
func (k convOut) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := checkKernelShape(k, "product", in[0], k.prodShape()); err != nil {
		return nil, err
	}
	if k.bias {
		if err := checkKernelShape(k, "bias", in[1], tensor.Shape{k.m}); err != nil {
			return nil, err
		}
	}
	return k.outShape(), nil
}

// compute runs convOut over float32 or float64 slices.
func (k convOut) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		var b []float32
		if k.bias {
			b = kernelData[float32](in[1])
		}
		swapLeadingAxes(kernelData[float32](out), kernelData[float32](in[0]), k.m, k.n, k.oh*k.ow, b)
	} else {
		var b []float64
		if k.bias {
			b = kernelData[float64](in[1])
		}
		swapLeadingAxes(kernelData[float64](out), kernelData[float64](in[0]), k.m, k.n, k.oh*k.ow, b)
	}
	return nil
}

// diffWRT reports which inputs of convOut have a gradient.
func (k convOut) diffWRT() []bool {
	if k.bias {
		return []bool{true, true}
	}
	return []bool{true}
}

// grads adds the gradients of the inputs of convOut to the graph.
func (k convOut) grads(_ G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dp, err := applyKernel(convOutGrad(k), dy)
	if err != nil || !k.bias {
		return G.Nodes{dp}, err
	}
	db, err := applyKernel(channelSum{rank: 4, c: k.m}, dy)
	return G.Nodes{dp, db}, err
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

// convOutGrad is the gradient of convOut with respect to the product:
// the output's gradient [N, M, OH, OW] laid out [M, N, OH*OW] again.
type convOutGrad convOut

// String names the kernel.
func (k convOutGrad) String() string { return "Grad" + convOut(k).String() }

// arity is the number of inputs of convOutGrad.
func (k convOutGrad) arity() int { return 1 }

// typ is the Gorgonia type of convOutGrad.
func (k convOutGrad) typ() hm.Type { return kernelType(len(convOut(k).prodShape()), 4) }

// shapeOf checks the input shapes of convOutGrad and returns its output shape.
func (k convOutGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	return convOut(k).prodShape(), checkKernelShape(k, "gradient", in[0], convOut(k).outShape())
}

// compute runs convOutGrad over float32 or float64 slices.
func (k convOutGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		swapLeadingAxes(kernelData[float32](out), kernelData[float32](in[0]), k.n, k.m, k.oh*k.ow, nil)
	} else {
		swapLeadingAxes(kernelData[float64](out), kernelData[float64](in[0]), k.n, k.m, k.oh*k.ow, nil)
	}
	return nil
}

// channelBiasAdd adds a per-channel bias b [C] to x [N, C, ...].
type channelBiasAdd struct {
	rank, c int
}

// String names the kernel.
func (k channelBiasAdd) String() string { return fmt.Sprintf("BiasAdd{rank %d, C %d}", k.rank, k.c) }

// arity is the number of inputs of channelBiasAdd.
func (k channelBiasAdd) arity() int { return 2 }

// typ is the Gorgonia type of channelBiasAdd.
func (k channelBiasAdd) typ() hm.Type { return kernelType(k.rank, k.rank, 1) }

// shapeOf checks the input shapes of channelBiasAdd and returns its output shape.
func (k channelBiasAdd) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if len(in[0]) != k.rank || in[0][1] != k.c {
		return nil, fmt.Errorf("%v: input has shape %v", k, in[0])
	}
	return in[0].Clone(), checkKernelShape(k, "bias", in[1], tensor.Shape{k.c})
}

// compute runs channelBiasAdd over float32 or float64 slices.
func (k channelBiasAdd) compute(out *tensor.Dense, in []*tensor.Dense) error {
	s := in[0].Shape()
	if out.Dtype() == tensor.Float32 {
		addChannelBias(kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]), s[0], k.c, s[2:].TotalSize())
	} else {
		addChannelBias(kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]), s[0], k.c, s[2:].TotalSize())
	}
	return nil
}

// addChannelBias sets out[n, c, :] = x[n, c, :] + b[c] for x [N, C, inner].
func addChannelBias[T opFloat](out, x, b []T, n, c, inner int) {
	for i := 0; i < n*c; i++ {
		bi := b[i%c]
		dst := out[i*inner:][:inner]
		for j, v := range x[i*inner:][:inner] {
			dst[j] = v + bi
		}
	}
}

// diffWRT reports which inputs of channelBiasAdd have a gradient.
func (k channelBiasAdd) diffWRT() []bool { return []bool{true, true} }

// grads adds the gradients of the inputs of channelBiasAdd to the graph.
func (k channelBiasAdd) grads(_ G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	db, err := applyKernel(channelSum(k), dy)
	return G.Nodes{dy, db}, err
}
