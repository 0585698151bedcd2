package engine

import (
	"fmt"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// bnStat receives, after each training forward pass of a
// BatchNormalization, the batch mean and the population (biased)
// variance of each channel, for the running-statistics update the engine
// does with the node's momentum (ONNX: running = momentum*running +
// (1-momentum)*batch). Valid is false until the first forward pass.
type bnStat struct {
	Mean, Var []float64
	Valid     bool
}

// batchNorm adds an ONNX BatchNormalization over x [N,C,...] with
// per-channel scale, bias, mean and variance [C].
//
// For inference (train false) it normalises with the stored statistics
// mean and variance: y = scale*(x-mean)/sqrt(variance+eps)+bias, with
// gradients for x, scale and bias. For training it normalises with the
// batch statistics over N and the spatial axes, the variance being the
// population (biased) one, and gradients flow through the batch
// statistics; mean and variance are not read (they may be nil) and the
// returned bnStat receives the batch statistics of each forward pass.
//
// It is an operation of this package: Gorgonia's BatchNorm resets its
// running statistics when switched to training and follows other
// conventions.
func batchNorm(x, scale, bias, mean, variance *G.Node, eps float64, train bool) (*G.Node, *bnStat, error) {
	xs, err := checkOpInput("batchNorm: input", x, -2)
	if err != nil {
		return nil, nil, err
	}
	c := xs[1]
	params := []struct {
		what string
		n    *G.Node
	}{{"scale", scale}, {"bias", bias}, {"mean", mean}, {"variance", variance}}
	for _, p := range params {
		if train && p.n == nil && (p.what == "mean" || p.what == "variance") {
			continue
		}
		s, err := checkOpInput("batchNorm: "+p.what, p.n, 1)
		if err != nil {
			return nil, nil, err
		}
		if s[0] != c {
			return nil, nil, fmt.Errorf("batchNorm: %s has shape %v, want [%d] for input %v", p.what, s, c, xs)
		}
		if err := checkSameDtype(x, p.n); err != nil {
			return nil, nil, fmt.Errorf("batchNorm: %w", err)
		}
	}
	if math.IsNaN(eps) || math.IsInf(eps, 0) || eps < 0 {
		return nil, nil, fmt.Errorf("batchNorm: epsilon %g is not a finite non-negative number", eps)
	}
	geo := bnGeom{rank: len(xs), n: xs[0], c: c, inner: xs[2:].TotalSize(), eps: eps}
	if !train {
		y, err := applyKernel(bnInfer{geo}, x, scale, bias, mean, variance)
		return y, nil, err
	}
	stat := &bnStat{}
	y, err := applyKernel(bnTrain{bnGeom: geo, stat: stat}, x, scale, bias)
	if err != nil {
		return nil, nil, err
	}
	return y, stat, nil
}

// bnGeom is the geometry of a batch normalization over x [N, C, inner]
// of the given rank.
type bnGeom struct {
	rank, n, c, inner int
	eps               float64
}

// String formats the normalization's parameters.
func (g bnGeom) String() string {
	return fmt.Sprintf("rank %d N %d C %d inner %d eps %g", g.rank, g.n, g.c, g.inner, g.eps)
}

// checkX checks the shape of x.
func (g bnGeom) checkX(k opKernel, s tensor.Shape) error {
	if len(s) != g.rank || s[0] != g.n || s[1] != g.c || s[2:].TotalSize() != g.inner {
		return fmt.Errorf("%v: input has shape %v", k, s)
	}
	return nil
}

// checkParams checks that the shapes in s are all [C].
func (g bnGeom) checkParams(k opKernel, s ...tensor.Shape) error {
	for _, p := range s {
		if err := checkKernelShape(k, "parameter", p, tensor.Shape{g.c}); err != nil {
			return err
		}
	}
	return nil
}

// bnInfer is BatchNormalization with stored statistics: inputs x, scale,
// bias, mean, variance.
type bnInfer struct{ bnGeom }

// String names the kernel.
func (k bnInfer) String() string { return "BatchNorm{" + k.bnGeom.String() + "}" }

// arity is the number of inputs.
func (k bnInfer) arity() int { return 5 }

// typ is the type of the operation.
func (k bnInfer) typ() hm.Type { return kernelType(k.rank, k.rank, 1, 1, 1, 1) }

// shapeOf checks the input shapes and returns the output shape.
func (k bnInfer) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := k.checkX(k, in[0]); err != nil {
		return nil, err
	}
	return in[0].Clone(), k.checkParams(k, in[1:]...)
}

// compute normalises x with the stored statistics.
func (k bnInfer) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		bnInferOf(k.bnGeom, kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]),
			kernelData[float32](in[2]), kernelData[float32](in[3]), kernelData[float32](in[4]))
	} else {
		bnInferOf(k.bnGeom, kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]),
			kernelData[float64](in[2]), kernelData[float64](in[3]), kernelData[float64](in[4]))
	}
	return nil
}

// diffWRT reports gradients for x, scale and bias, not the statistics.
func (k bnInfer) diffWRT() []bool { return []bool{true, true, true, false, false} }

// grads adds the gradients of x, scale and bias.
func (k bnInfer) grads(in G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dx, err := applyKernel(bnInferGradX(k), in[1], in[4], dy)
	if err != nil {
		return nil, err
	}
	dscale, err := applyKernel(bnScaleGrad{bnGeom: k.bnGeom}, in[0], in[3], in[4], dy)
	if err != nil {
		return nil, err
	}
	dbias, err := applyKernel(channelSum{rank: k.rank, c: k.c}, dy)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dscale, dbias, nil, nil}, nil
}

// bnInferOf writes scale*(x-mean)/sqrt(variance+eps)+bias into y.
func bnInferOf[T opFloat](g bnGeom, y, x, scale, bias, mean, variance []T) {
	kernelParallel(g.c, g.n*g.inner, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			a := float64(scale[c]) / math.Sqrt(float64(variance[c])+g.eps)
			b := float64(bias[c]) - a*float64(mean[c])
			for n := 0; n < g.n; n++ {
				off := (n*g.c + c) * g.inner
				dst := y[off:][:g.inner]
				for i, v := range x[off:][:g.inner] {
					dst[i] = T(a*float64(v) + b)
				}
			}
		}
	})
}

// bnInferGradX is the gradient of bnInfer for x: dy*scale/sqrt(var+eps).
// Inputs scale, variance, dy.
type bnInferGradX bnInfer

// String names the kernel.
func (k bnInferGradX) String() string { return "GradXBatchNorm{" + k.bnGeom.String() + "}" }

// arity is the number of inputs.
func (k bnInferGradX) arity() int { return 3 }

// typ is the type of the operation.
func (k bnInferGradX) typ() hm.Type { return kernelType(k.rank, 1, 1, k.rank) }

// shapeOf checks the input shapes and returns the output shape.
func (k bnInferGradX) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := k.checkX(k, in[2]); err != nil {
		return nil, err
	}
	return in[2].Clone(), k.checkParams(k, in[:2]...)
}

// compute scales dy per channel.
func (k bnInferGradX) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		bnInferGradXOf(k.bnGeom, kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]), kernelData[float32](in[2]))
	} else {
		bnInferGradXOf(k.bnGeom, kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]), kernelData[float64](in[2]))
	}
	return nil
}

// bnInferGradXOf writes dy*scale/sqrt(variance+eps) into dx.
func bnInferGradXOf[T opFloat](g bnGeom, dx, scale, variance, dy []T) {
	kernelParallel(g.c, g.n*g.inner, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			a := float64(scale[c]) / math.Sqrt(float64(variance[c])+g.eps)
			for n := 0; n < g.n; n++ {
				off := (n*g.c + c) * g.inner
				dst := dx[off:][:g.inner]
				for i, v := range dy[off:][:g.inner] {
					dst[i] = T(a * float64(v))
				}
			}
		}
	})
}

// bnScaleGrad is the gradient of a batch normalization for scale:
// the sum over N and inner of dy*(x-mean)/sqrt(var+eps). With train it
// uses the batch statistics of x (inputs x, dy); without, the stored
// ones (inputs x, mean, variance, dy).
type bnScaleGrad struct {
	bnGeom
	train bool
}

// String names the kernel.
func (k bnScaleGrad) String() string {
	return fmt.Sprintf("GradScaleBatchNorm{train %t %v}", k.train, k.bnGeom)
}

// arity is the number of inputs.
func (k bnScaleGrad) arity() int {
	if k.train {
		return 2
	}
	return 4
}

// typ is the type of the operation.
func (k bnScaleGrad) typ() hm.Type {
	if k.train {
		return kernelType(1, k.rank, k.rank)
	}
	return kernelType(1, k.rank, 1, 1, k.rank)
}

// shapeOf checks the input shapes and returns the output shape.
func (k bnScaleGrad) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := k.checkX(k, in[0]); err != nil {
		return nil, err
	}
	last := len(in) - 1
	if err := checkKernelShape(k, "gradient", in[last], in[0]); err != nil {
		return nil, err
	}
	return tensor.Shape{k.c}, k.checkParams(k, in[1:last]...)
}

// compute sums dy times the normalised x per channel.
func (k bnScaleGrad) compute(out *tensor.Dense, in []*tensor.Dense) error {
	last := len(in) - 1
	if out.Dtype() == tensor.Float32 {
		var mean, variance []float32
		if !k.train {
			mean, variance = kernelData[float32](in[1]), kernelData[float32](in[2])
		}
		bnScaleGradOf(k.bnGeom, kernelData[float32](out), kernelData[float32](in[0]), mean, variance, kernelData[float32](in[last]))
	} else {
		var mean, variance []float64
		if !k.train {
			mean, variance = kernelData[float64](in[1]), kernelData[float64](in[2])
		}
		bnScaleGradOf(k.bnGeom, kernelData[float64](out), kernelData[float64](in[0]), mean, variance, kernelData[float64](in[last]))
	}
	return nil
}

// bnScaleGradOf writes the sum of dy*(x-mean)/sqrt(variance+eps) over N
// and inner into dscale, with the batch statistics when mean is nil.
func bnScaleGradOf[T opFloat](g bnGeom, dscale, x, mean, variance, dy []T) {
	kernelParallel(g.c, 3*g.n*g.inner, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			var mu, invStd float64
			if mean == nil {
				var v float64
				mu, v = channelMeanVar(x, g.n, g.c, g.inner, c)
				invStd = 1 / math.Sqrt(v+g.eps)
			} else {
				mu, invStd = float64(mean[c]), 1/math.Sqrt(float64(variance[c])+g.eps)
			}
			var s float64
			for n := 0; n < g.n; n++ {
				off := (n*g.c + c) * g.inner
				xs := x[off:][:g.inner]
				for i, d := range dy[off:][:g.inner] {
					s += float64(d) * (float64(xs[i]) - mu)
				}
			}
			dscale[c] = T(s * invStd)
		}
	})
}

// channelMeanVar returns the mean and population variance of channel c
// of x [n, channels, inner], in two passes in float64.
func channelMeanVar[T opFloat](x []T, n, channels, inner, c int) (mean, variance float64) {
	var s float64
	for b := 0; b < n; b++ {
		for _, v := range x[(b*channels+c)*inner:][:inner] {
			s += float64(v)
		}
	}
	count := float64(n * inner)
	mean = s / count
	s = 0
	for b := 0; b < n; b++ {
		for _, v := range x[(b*channels+c)*inner:][:inner] {
			d := float64(v) - mean
			s += d * d
		}
	}
	return mean, s / count
}

// bnTrain is BatchNormalization with batch statistics: inputs x, scale,
// bias. Each forward pass stores the statistics in stat; the pointer
// also keeps two such nodes from being merged into one.
type bnTrain struct {
	bnGeom
	stat *bnStat
}

// String names the kernel.
func (k bnTrain) String() string { return fmt.Sprintf("BatchNormTrain{%v stat %p}", k.bnGeom, k.stat) }

// arity is the number of inputs.
func (k bnTrain) arity() int { return 3 }

// typ is the type of the operation.
func (k bnTrain) typ() hm.Type { return kernelType(k.rank, k.rank, 1, 1) }

// shapeOf checks the input shapes and returns the output shape.
func (k bnTrain) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := k.checkX(k, in[0]); err != nil {
		return nil, err
	}
	return in[0].Clone(), k.checkParams(k, in[1:]...)
}

// compute normalises x with its batch statistics and records them.
func (k bnTrain) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if len(k.stat.Mean) != k.c || len(k.stat.Var) != k.c {
		k.stat.Mean, k.stat.Var = make([]float64, k.c), make([]float64, k.c)
	}
	if out.Dtype() == tensor.Float32 {
		bnTrainOf(k, kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]), kernelData[float32](in[2]))
	} else {
		bnTrainOf(k, kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]), kernelData[float64](in[2]))
	}
	k.stat.Valid = true
	return nil
}

// bnTrainOf normalises each channel of x with its batch statistics into
// y and stores them in k.stat.
func bnTrainOf[T opFloat](k bnTrain, y, x, scale, bias []T) {
	g := k.bnGeom
	kernelParallel(g.c, 3*g.n*g.inner, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			mean, variance := channelMeanVar(x, g.n, g.c, g.inner, c)
			k.stat.Mean[c], k.stat.Var[c] = mean, variance
			a := float64(scale[c]) / math.Sqrt(variance+g.eps)
			b := float64(bias[c]) - a*mean
			for n := 0; n < g.n; n++ {
				off := (n*g.c + c) * g.inner
				dst := y[off:][:g.inner]
				for i, v := range x[off:][:g.inner] {
					dst[i] = T(a*float64(v) + b)
				}
			}
		}
	})
}

// diffWRT reports gradients for x, scale and bias.
func (k bnTrain) diffWRT() []bool { return []bool{true, true, true} }

// grads adds the gradients of x (through the batch statistics), scale and
// bias.
func (k bnTrain) grads(in G.Nodes, _, dy *G.Node) (G.Nodes, error) {
	dx, err := applyKernel(bnTrainGradX{k.bnGeom}, in[0], in[1], dy)
	if err != nil {
		return nil, err
	}
	dscale, err := applyKernel(bnScaleGrad{bnGeom: k.bnGeom, train: true}, in[0], dy)
	if err != nil {
		return nil, err
	}
	dbias, err := applyKernel(channelSum{rank: k.rank, c: k.c}, dy)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dscale, dbias}, nil
}

// bnTrainGradX is the gradient of bnTrain for x, through the batch
// statistics: scale/sigma * (dy - mean(dy) - xhat*mean(dy*xhat)) per
// channel. Inputs x, scale, dy; the statistics are computed again from x.
type bnTrainGradX struct{ bnGeom }

// String names the kernel.
func (k bnTrainGradX) String() string { return "GradXBatchNormTrain{" + k.bnGeom.String() + "}" }

// arity is the number of inputs.
func (k bnTrainGradX) arity() int { return 3 }

// typ is the type of the operation.
func (k bnTrainGradX) typ() hm.Type { return kernelType(k.rank, k.rank, 1, k.rank) }

// shapeOf checks the input shapes and returns the output shape.
func (k bnTrainGradX) shapeOf(in []tensor.Shape) (tensor.Shape, error) {
	if err := k.checkX(k, in[0]); err != nil {
		return nil, err
	}
	if err := checkKernelShape(k, "gradient", in[2], in[0]); err != nil {
		return nil, err
	}
	return in[0].Clone(), k.checkParams(k, in[1])
}

// compute writes the gradient of x.
func (k bnTrainGradX) compute(out *tensor.Dense, in []*tensor.Dense) error {
	if out.Dtype() == tensor.Float32 {
		bnTrainGradXOf(k.bnGeom, kernelData[float32](out), kernelData[float32](in[0]), kernelData[float32](in[1]), kernelData[float32](in[2]))
	} else {
		bnTrainGradXOf(k.bnGeom, kernelData[float64](out), kernelData[float64](in[0]), kernelData[float64](in[1]), kernelData[float64](in[2]))
	}
	return nil
}

// bnTrainGradXOf writes the gradient of batch-statistics normalization
// for x into dx.
func bnTrainGradXOf[T opFloat](g bnGeom, dx, x, scale, dy []T) {
	count := float64(g.n * g.inner)
	kernelParallel(g.c, 5*g.n*g.inner, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			mean, variance := channelMeanVar(x, g.n, g.c, g.inner, c)
			invStd := 1 / math.Sqrt(variance+g.eps)
			var sdy, sdyx float64
			for n := 0; n < g.n; n++ {
				off := (n*g.c + c) * g.inner
				xs := x[off:][:g.inner]
				for i, d := range dy[off:][:g.inner] {
					sdy += float64(d)
					sdyx += float64(d) * (float64(xs[i]) - mean)
				}
			}
			// xhat*mean(dy*xhat) = (x-mean)*invStd * sdyx*invStd/count.
			a := float64(scale[c]) * invStd
			mdy, k := sdy/count, sdyx*invStd*invStd/count
			for n := 0; n < g.n; n++ {
				off := (n*g.c + c) * g.inner
				xs := x[off:][:g.inner]
				dst := dx[off:][:g.inner]
				for i, d := range dy[off:][:g.inner] {
					dst[i] = T(a * (float64(d) - mdy - (float64(xs[i])-mean)*k))
				}
			}
		}
	})
}
