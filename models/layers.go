package models

import (
	"fmt"
	"math"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// fmap is a feature map flowing through a network: the value's name and its
// shape without the batch dimension.
type fmap struct {
	name    string
	c, h, w int64
}

// spatialOut is the output size of a convolution or pooling window along one
// axis (floor mode, as torch's default ceil_mode=False); 0 when the window no
// longer fits.
func spatialOut(in, k, stride, pad int64) int64 {
	if in+2*pad < k {
		return 0
	}
	return (in+2*pad-k)/stride + 1
}

// checkShrink records the first module whose output has lost all its rows or
// columns; the builder turns it into an error once the graph is laid out.
func (g *graph) checkShrink(path, op string, x fmap) {
	if g.shrunk == "" && (x.h < 1 || x.w < 1) {
		g.shrunk = fmt.Sprintf("the feature map shrinks to %dx%d at %s (%s)", x.h, x.w, path, op)
	}
}

// conv adds a square convolution with torchvision's initialisation: Kaiming
// normal with mode fan_out and gain sqrt(2), so std = sqrt(2/(cout*k*k)), and
// a zero bias when the layer has one.
func (g *graph) conv(path string, x fmap, cout, k, stride, pad int64, bias bool) fmap {
	std := math.Sqrt(2 / float64(cout*k*k))
	inputs := []string{x.name, g.param(path+".weight", fillNormal, std, cout, x.c, k, k)}
	if bias {
		inputs = append(inputs, g.param(path+".bias", fillZeros, 0, cout))
	}
	out := fmap{
		name: g.node(path, opConv, inputs,
			attrInts("dilations", 1, 1),
			attrInt("group", 1),
			attrInts("kernel_shape", k, k),
			attrInts("pads", pad, pad, pad, pad),
			attrInts("strides", stride, stride),
		),
		c: cout,
		h: spatialOut(x.h, k, stride, pad),
		w: spatialOut(x.w, k, stride, pad),
	}
	g.checkShrink(path, opConv, out)
	return out
}

// batchNorm adds an inference-form BatchNormalization with scale 1, bias 0,
// running mean 0 and running variance 1. Opsets 7 and 8 define a spatial
// attribute whose default (1) is the per-channel form wanted here, so it is
// not written; no opset in 7..17 needs more than epsilon and momentum.
func (g *graph) batchNorm(path string, x fmap) fmap {
	inputs := []string{
		x.name,
		g.param(path+".weight", fillOnes, 0, x.c),
		g.param(path+".bias", fillZeros, 0, x.c),
		g.param(path+".running_mean", fillZeros, 0, x.c),
		g.param(path+".running_var", fillOnes, 0, x.c),
	}
	x.name = g.node(path, opBatchNormalization, inputs,
		attrFloat("epsilon", bnEpsilon),
		attrFloat("momentum", bnMomentum),
	)
	return x
}

func (g *graph) relu(path string, x fmap) fmap {
	x.name = g.node(path, opRelu, []string{x.name})
	return x
}

// maxPool adds a square max pool. ceil_mode exists from opset 10 on and is
// written (as 0) only there, as torch does.
func (g *graph) maxPool(path string, x fmap, k, stride, pad int64) fmap {
	var attrs []*onnxpb.AttributeProto
	if g.opset >= 10 {
		attrs = append(attrs, attrInt("ceil_mode", 0))
	}
	attrs = append(attrs,
		attrInts("kernel_shape", k, k),
		attrInts("pads", pad, pad, pad, pad),
		attrInts("strides", stride, stride),
	)
	out := fmap{
		name: g.node(path, opMaxPool, []string{x.name}, attrs...),
		c:    x.c,
		h:    spatialOut(x.h, k, stride, pad),
		w:    spatialOut(x.w, k, stride, pad),
	}
	g.checkShrink(path, opMaxPool, out)
	return out
}

// avgPool adds an average pool with kernel = stride and no padding, the form
// torch exports AdaptiveAvgPool2d in when the input is a multiple of its
// output size.
func (g *graph) avgPool(path string, x fmap, kh, kw int64) fmap {
	return fmap{
		name: g.node(path, opAveragePool, []string{x.name},
			attrInts("kernel_shape", kh, kw),
			attrInts("strides", kh, kw),
		),
		c: x.c,
		h: x.h / kh,
		w: x.w / kw,
	}
}

func (g *graph) globalAvgPool(path string, x fmap) fmap {
	return fmap{name: g.node(path, opGlobalAveragePool, []string{x.name}), c: x.c, h: 1, w: 1}
}

func (g *graph) add(path string, a, b fmap) fmap {
	a.name = g.node(path, opAdd, []string{a.name, b.name})
	return a
}

// flatten adds a Flatten with axis 1 and returns the flat value and its width.
func (g *graph) flatten(path string, x fmap) (string, int64) {
	return g.node(path, opFlatten, []string{x.name}, attrInt("axis", 1)), x.c * x.h * x.w
}

// linear adds a torch Linear as Gemm(x, W, b) with transB=1 and W of shape
// [out, in]; W is normal(0, 0.01) and b zero. C is always given, as Gemm
// requires before opset 11.
func (g *graph) linear(path, x string, in, out int64) string {
	return g.node(path, opGemm, []string{
		x,
		g.param(path+".weight", fillNormal, 0.01, out, in),
		g.param(path+".bias", fillZeros, 0, out),
	},
		attrFloat("alpha", 1),
		attrFloat("beta", 1),
		attrInt("transB", 1),
	)
}

// dropout adds a Dropout with the default ratio 0.5 (an attribute before
// opset 12, an optional input from 12 on; neither is written) and only its
// data output. At inference it is the identity.
func (g *graph) dropout(path, x string) string {
	return g.node(path, opDropout, []string{x})
}
