package peer

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// This file checks the training mode of the PyTorch reference
// ([TorchRunner.Train]) against float64 computations written here from the
// formulas (forward passes, and a hand-written backward pass for a plain
// CNN), against central finite differences of the training loss, and
// against hand-computed BatchNormalization statistics.

// Tolerances of the training reference's tests.
var (
	// trainExactTol compares float64 computations that differ only in
	// rounding, after the reference's are rounded to float32 for
	// transport.
	trainExactTol = tolerance{abs: 1e-12, rel: 2.5e-7}
	// trainLossTol bounds the relative difference of float64 losses that
	// differ only in the order of their sums.
	trainLossTol = 1e-12
	// fdStep is the step of the central finite differences, in float64.
	fdStep = 1e-6
	// fdTol bounds |gradient - finite difference| by fdTol.rel times the
	// largest |gradient| entry of the parameter, plus fdTol.abs. The
	// measured differences are about 1e-8: the float32 transport of
	// gradients up to 0.2 (6e-8 relative) and the difference quotient's
	// rounding (about 1e-16 / fdStep times the loss).
	fdTol = tolerance{abs: 5e-8, rel: 1e-5}
)

// trainJob is a training job of one request.
func trainJob(model string, inputs map[string]Tensor, labels []int, smoothing float64, probes ...fdProbe) torchJob {
	tr := &torchTrain{labels: labels, smoothing: smoothing, probes: probes}
	if len(probes) > 0 {
		tr.fdStep = fdStep
	}
	return torchJob{model: model, inputs: inputs, train: tr}
}

// crossEntropy returns the loss of DCNET.md section 4 with label smoothing
// eps, the batch mean of (1 - eps) * -log p[label] + eps * mean_k -log p_k,
// and its gradient with respect to the logits [B, K].
func crossEntropy(logits []float64, batch, classes int, labels []int, eps float64) (float64, []float64) {
	var loss float64
	grad := make([]float64, len(logits))
	for b := range batch {
		row := logits[b*classes : (b+1)*classes]
		top := slices.Max(row)
		var sum float64
		for _, v := range row {
			sum += math.Exp(v - top)
		}
		lse := top + math.Log(sum)
		var spread float64
		for k, v := range row {
			spread += lse - v
			target := eps / float64(classes)
			if k == labels[b] {
				target += 1 - eps
			}
			grad[b*classes+k] = (math.Exp(v-lse) - target) / float64(batch)
		}
		loss += (1-eps)*(lse-row[labels[b]]) + eps*spread/float64(classes)
	}
	return loss / float64(batch), grad
}

// softmaxRows returns the softmax of each row of a [B, K] matrix.
func softmaxRows(logits []float64, classes int) []float64 {
	out := make([]float64, len(logits))
	for b := 0; b < len(logits); b += classes {
		row := logits[b : b+classes]
		top := slices.Max(row)
		var sum float64
		for _, v := range row {
			sum += math.Exp(v - top)
		}
		for k, v := range row {
			out[b+k] = math.Exp(v-top) / sum
		}
	}
	return out
}

// plainConv is a 2-d convolution's forward and backward pass in float64,
// written from the ONNX definition with direct loops.
type plainConv struct {
	b, cin, h, w       int // input [b, cin, h, w]
	cout, kh, kw       int // weight [cout, cin, kh, kw]
	oh, ow             int // output [b, cout, oh, ow]
	pads               [4]int
	strides, dilations [2]int
}

// newPlainConv resolves the geometry of a convolution of x by w.
func newPlainConv(xDims, wDims []int64, g convGeom) plainConv {
	c := plainConv{b: int(xDims[0]), cin: int(xDims[1]), h: int(xDims[2]), w: int(xDims[3]),
		cout: int(wDims[0]), kh: int(wDims[2]), kw: int(wDims[3])}
	c.pads, c.strides, c.dilations = g.resolved(c.h, c.w, c.kh, c.kw)
	c.oh = (c.h+c.pads[0]+c.pads[2]-(c.kh-1)*c.dilations[0]-1)/c.strides[0] + 1
	c.ow = (c.w+c.pads[1]+c.pads[3]-(c.kw-1)*c.dilations[1]-1)/c.strides[1] + 1
	return c
}

// each calls f for every (output entry, weight entry, input entry) triple
// that the convolution multiplies; the input index is -1 in the padding.
func (c plainConv) each(f func(out, wt, in int)) {
	for b := range c.b {
		for co := range c.cout {
			for i := range c.oh {
				for j := range c.ow {
					out := ((b*c.cout+co)*c.oh+i)*c.ow + j
					for ci := range c.cin {
						for ki := range c.kh {
							for kj := range c.kw {
								r := i*c.strides[0] - c.pads[0] + ki*c.dilations[0]
								s := j*c.strides[1] - c.pads[1] + kj*c.dilations[1]
								in := -1
								if r >= 0 && r < c.h && s >= 0 && s < c.w {
									in = ((b*c.cin+ci)*c.h+r)*c.w + s
								}
								f(out, ((co*c.cin+ci)*c.kh+ki)*c.kw+kj, in)
							}
						}
					}
				}
			}
		}
	}
}

// forward returns conv(x, w) + bias.
func (c plainConv) forward(x, w, bias []float64) []float64 {
	y := make([]float64, c.b*c.cout*c.oh*c.ow)
	c.each(func(out, wt, in int) {
		if in >= 0 {
			y[out] += w[wt] * x[in]
		}
	})
	per := c.oh * c.ow
	for i := range y {
		y[i] += bias[(i/per)%c.cout]
	}
	return y
}

// backward returns the gradients of the weight and bias from the output's.
func (c plainConv) backward(x, dy []float64) (dw, db []float64) {
	dw = make([]float64, c.cout*c.cin*c.kh*c.kw)
	db = make([]float64, c.cout)
	c.each(func(out, wt, in int) {
		if in >= 0 {
			dw[wt] += dy[out] * x[in]
		}
	})
	per := c.oh * c.ow
	for i, v := range dy {
		db[(i/per)%c.cout] += v
	}
	return dw, db
}

// gemmTransB returns a [B, D] times w [K, D] transposed, plus bias [K].
func gemmTransB(a []float64, batch, depth int, w, bias []float64) []float64 {
	classes := len(bias)
	out := make([]float64, batch*classes)
	for b := range batch {
		for k := range classes {
			s := bias[k]
			for d := range depth {
				s += a[b*depth+d] * w[k*depth+d]
			}
			out[b*classes+k] = s
		}
	}
	return out
}

// checkGrad compares a reference gradient with a float64 one, records the
// largest difference relative to the gradient's largest entry, and fails
// the test on an entry outside trainExactTol.
func checkGrad(t *testing.T, res *TorchTrainResult, name string, want []float64, dims []int64, worst *worstTracker, where string) {
	t.Helper()
	got, ok := res.Grads[name]
	if !ok {
		t.Errorf("no gradient for %s", name)
		return
	}
	d, err := compareTensor(got, Tensor{Dims: dims, Data: toFloat32(want)}, trainExactTol)
	if err != nil {
		t.Errorf("gradient of %s: %v", name, err)
	}
	worst.add(d/maxAbs(want), where+"/"+name)
}

// largestAbs returns the largest |v|.
func largestAbs(v []float64) float64 {
	var m float64
	for _, x := range v {
		m = max(m, math.Abs(x))
	}
	return m
}

// maxAbs returns the largest |v|, or 1 when every value is 0: a scale to
// divide differences by.
func maxAbs(v []float64) float64 {
	if m := largestAbs(v); m > 0 {
		return m
	}
	return 1
}

// relErr returns |got - want| / |want|, or |got| when want is 0.
func relErr(got, want float64) float64 {
	if want == 0 {
		return math.Abs(got)
	}
	return math.Abs(got-want) / math.Abs(want)
}

// TestTorchTrainPlainByHand checks the loss and every gradient of
// Conv -> Relu -> Flatten -> Gemm (or MatMul + Add, whose initializer
// operand is a bias), with and without a final Softmax and label
// smoothing, against a forward and backward pass written here in
// float64 from the formulas:
//
//	dL/dlogits[b,k] = (softmax(logits)[b,k] - (1-eps)[k = label_b] - eps/K) / B
//	dL/dW_fc = dlogits^T flat,  dL/db_fc = sum_b dlogits,  dflat = dlogits W_fc
//	dL/dz = dflat * [z > 0],    dL/dW_conv = sum dz x_patch,  dL/db_conv = sum dz
func TestTorchTrainPlainByHand(t *testing.T) {
	tr := Torch(t)
	rng := rand.New(rand.NewPCG(71, 72))
	x := randTensor(rng, 1, 3, 2, 6, 5)
	convW := randTensor(rng, 0.5, 4, 2, 3, 3)
	convB := randTensor(rng, 0.2, 4)
	geom := convGeom{pads: []int64{1, 0, 0, 2}, strides: []int64{2, 1}}
	pc := newPlainConv(x.Dims, convW.Dims, geom)
	depth := 4 * pc.oh * pc.ow
	const classes = 5
	fcW := randTensor(rng, 0.3, classes, int64(depth))
	fcB := randTensor(rng, 0.2, classes)
	labels := []int{3, 0, 4}

	// The float64 forward pass.
	x64, cw, cb := toFloat64(x.Data), toFloat64(convW.Data), toFloat64(convB.Data)
	fw, fb := toFloat64(fcW.Data), toFloat64(fcB.Data)
	z := pc.forward(x64, cw, cb)
	flat := make([]float64, len(z))
	for i, v := range z {
		flat[i] = max(v, 0)
	}
	logits := gemmTransB(flat, pc.b, depth, fw, fb)

	// fc.w transposed, for the MatMul form of the classifier.
	fcWT := Tensor{Dims: []int64{int64(depth), classes}, Data: make([]float32, len(fcW.Data))}
	for k := range classes {
		for d := range depth {
			fcWT.Data[d*classes+k] = fcW.Data[k*depth+d]
		}
	}

	type variant struct {
		softmax   bool
		matmul    bool // MatMul + Add in place of Gemm
		smoothing float64
	}
	build := func(v variant) *onnxpb.ModelProto {
		out := "logits"
		nodes := []*onnxpb.NodeProto{
			node(opConv, "conv", []string{"x", "conv.w", "conv.b"}, []string{"z"}, geom.attrs(3, 3)...),
			node(opRelu, "relu", []string{"z"}, []string{"a"}),
			node("Flatten", "flatten", []string{"a"}, []string{"flat"}),
		}
		fc := tensorInit("fc.w", fcW)
		if v.matmul {
			fc = tensorInit("fc.w", fcWT)
			nodes = append(nodes, node("MatMul", "fc", []string{"flat", "fc.w"}, []string{"mm"}),
				node(opAdd, "fc_bias", []string{"mm", "fc.b"}, []string{"logits"}))
		} else {
			nodes = append(nodes, node("Gemm", "fc", []string{"flat", "fc.w", "fc.b"}, []string{"logits"}, intAttr("transB", 1)))
		}
		if v.softmax {
			out = "probs"
			nodes = append(nodes, node("Softmax", "softmax", []string{"logits"}, []string{"probs"}, intAttr("axis", 1)))
		}
		return graphModel(&onnxpb.GraphProto{
			Node: nodes,
			Initializer: []*onnxpb.TensorProto{tensorInit("conv.w", convW), tensorInit("conv.b", convB),
				fc, tensorInit("fc.b", fcB)},
			Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(x.Dims...))},
			Output: floatOutputs(out),
		})
	}
	dir := t.TempDir()
	variants := []variant{{smoothing: 0}, {smoothing: 0.15}, {softmax: true}, {softmax: true, smoothing: 0.3},
		{matmul: true, smoothing: 0.1}}
	var jobs []torchJob
	for i, v := range variants {
		path := writeModel(t, dir, fmt.Sprintf("plain%d.onnx", i), build(v))
		jobs = append(jobs, trainJob(path, map[string]Tensor{"x": x}, labels, v.smoothing))
	}
	res := runAll(t, tr, jobs)
	var worstLoss, worstGrad worstTracker
	for i, v := range variants {
		name := fmt.Sprintf("softmax=%v matmul=%v eps=%g", v.softmax, v.matmul, v.smoothing)
		t.Run(name, func(t *testing.T) {
			if res[i].err != nil {
				t.Fatal(res[i].err)
			}
			got := res[i].train
			loss, dLogits := crossEntropy(logits, pc.b, classes, labels, v.smoothing)
			if d := relErr(got.Loss, loss); d > trainLossTol {
				t.Errorf("loss %.17g, want %.17g (relative difference %.3g)", got.Loss, loss, d)
			}
			worstLoss.add(relErr(got.Loss, loss), name)

			// The backward pass.
			dfw := make([]float64, len(fw))
			dfb := make([]float64, classes)
			dflat := make([]float64, len(flat))
			for b := range pc.b {
				for k := range classes {
					g := dLogits[b*classes+k]
					dfb[k] += g
					for d := range depth {
						dfw[k*depth+d] += g * flat[b*depth+d]
						dflat[b*depth+d] += g * fw[k*depth+d]
					}
				}
			}
			dz := make([]float64, len(z))
			for i, v := range z {
				if v > 0 {
					dz[i] = dflat[i]
				}
			}
			dcw, dcb := pc.backward(x64, dz)
			wantNames := []string{"conv.b", "conv.w", "fc.b", "fc.w"}
			if names := slices.Sorted(maps.Keys(got.Grads)); !slices.Equal(names, wantNames) {
				t.Errorf("gradients for %v, want %v", names, wantNames)
			}
			checkGrad(t, got, "conv.w", dcw, convW.Dims, &worstGrad, name)
			checkGrad(t, got, "conv.b", dcb, convB.Dims, &worstGrad, name)
			if v.matmul {
				dfwT := make([]float64, len(dfw))
				for k := range classes {
					for d := range depth {
						dfwT[d*classes+k] = dfw[k*depth+d]
					}
				}
				checkGrad(t, got, "fc.w", dfwT, fcWT.Dims, &worstGrad, name)
			} else {
				checkGrad(t, got, "fc.w", dfw, fcW.Dims, &worstGrad, name)
			}
			checkGrad(t, got, "fc.b", dfb, fcB.Dims, &worstGrad, name)

			out, want := "logits", logits
			if v.softmax {
				out, want = "probs", softmaxRows(logits, classes)
			}
			if _, err := compareTensor(got.Outputs[out], Tensor{Dims: []int64{int64(pc.b), classes}, Data: toFloat32(want)}, trainExactTol); err != nil {
				t.Errorf("output %s: %v", out, err)
			}
			if len(got.Running) != 0 || len(got.RhoBatch) != 0 {
				t.Errorf("running statistics %v and radius scales %v for a model with neither",
					slices.Sorted(maps.Keys(got.Running)), got.RhoBatch)
			}
		})
	}
	t.Logf("checked the loss and 4 gradients (%d values) of %d variants against a hand-written float64 backward pass; "+
		"worst loss difference %v, worst gradient difference relative to its largest entry %v (0: equal after rounding to float32)",
		len(cw)+len(cb)+len(fw)+len(fb), len(variants), worstLoss, worstGrad)
}

// bnTrain is BatchNormalization in training mode, in float64: the batch
// mean and population variance per channel, the normalised output and the
// updated running statistics.
func bnTrain(x []float64, xDims []int64, scale, bias, mean, variance []float32, eps, momentum float64) (y, newMean, newVar []float64) {
	b, c := int(xDims[0]), int(xDims[1])
	per := len(x) / (b * c)
	count := float64(b * per)
	y = make([]float64, len(x))
	newMean, newVar = make([]float64, c), make([]float64, c)
	for ch := range c {
		var sum float64
		for n := range b {
			for _, v := range x[(n*c+ch)*per : (n*c+ch+1)*per] {
				sum += v
			}
		}
		mu := sum / count
		var sq float64
		for n := range b {
			for _, v := range x[(n*c+ch)*per : (n*c+ch+1)*per] {
				sq += (v - mu) * (v - mu)
			}
		}
		sigma2 := sq / count
		inv := float64(scale[ch]) / math.Sqrt(sigma2+eps)
		for n := range b {
			for i := (n*c + ch) * per; i < (n*c+ch+1)*per; i++ {
				y[i] = (x[i]-mu)*inv + float64(bias[ch])
			}
		}
		newMean[ch] = momentum*float64(mean[ch]) + (1-momentum)*mu
		newVar[ch] = momentum*float64(variance[ch]) + (1-momentum)*sigma2
	}
	return y, newMean, newVar
}

// relu returns max(v, 0) elementwise.
func relu(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = max(x, 0)
	}
	return out
}

// minAbs returns the smallest |v|.
func minAbs(v []float64) float64 {
	m := math.Inf(1)
	for _, x := range v {
		m = min(m, math.Abs(x))
	}
	return m
}

// meanOf returns the mean of v.
func meanOf(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// dcLayer is one decoupled convolution of the finite-difference model.
type dcLayer struct {
	name   string
	cfg    dcConfig
	geom   convGeom
	w      Tensor
	in     dcInputs
	learn  bool // RhoV and RhoScale given: the batch mean m in training
	inputs []string
}

// forward evaluates the layer on x in training mode, returning the output
// and the batch mean m of N (0 without a learnable radius).
func (l dcLayer) forward(x []float64, xDims []int64) (dcRef, float64) {
	in := l.in
	var m float64
	if l.learn {
		probe := naiveDecoupled64(x, xDims, l.w, dcInputs{}, dcConfig{magnitude: "sphere", angular: "cos", weighted: "none", alpha: 1, eps: l.cfg.eps}, l.geom)
		m = meanOf(probe.n)
		in.rhoM = m
	}
	return naiveDecoupled64(x, xDims, l.w, in, l.cfg, l.geom), m
}

// TestTorchTrainFiniteDifferences checks a model of three decoupled
// convolutions (ball x cos and tanh x sigmoid with learnable radius, seg x
// linear with a fixed one), two training-mode BatchNormalizations, global
// average pooling and a Gemm: the loss, logits, updated running statistics
// and batch radius scales against a float64 forward pass written here, and
// the gradients against central finite differences of the training loss.
func TestTorchTrainFiniteDifferences(t *testing.T) {
	tr := Torch(t)
	rng := rand.New(rand.NewPCG(81, 82))
	x := randTensor(rng, 1, 4, 3, 8, 8)
	labels := []int{0, 2, 1, 2}
	const classes = 3
	pads1 := convGeom{pads: []int64{1, 1, 1, 1}}
	layerA := dcLayer{name: "dcA", learn: true, geom: pads1,
		cfg: dcConfig{magnitude: "ball", angular: "cos", weighted: "none", alpha: 1, beta: 0.5, k: 0.3, rho: 1, eps: 1e-4},
		w:   randTensor(rng, 0.5, 4, 3, 3, 3),
		in: dcInputs{bias: randTensor(rng, 0.3, 4).Data, scale: positive(rng, 4),
			rhoV: []float32{0.8, 0.95, 1.05, 1.2}, rhoScale: proto.Float32(9)},
		inputs: []string{"x", "dcA.w", "dcA.b", "dcA.alpha", "dcA.rho_v", "dcA.rho_scale"}}
	layerB := dcLayer{name: "dcB", learn: true, geom: convGeom{pads: []int64{0, 1, 1, 0}, strides: []int64{2, 2}},
		cfg: dcConfig{magnitude: "tanh", angular: "sigmoid", weighted: "linear", alpha: 1.3, beta: 0.5, k: 0.3, rho: 1, eps: 1e-4},
		w:   randTensor(rng, 0.5, 5, 4, 3, 3),
		in: dcInputs{bias: randTensor(rng, 0.3, 5).Data, scale: positive(rng, 5),
			rhoV: []float32{0.9, 1, 1.1, 0.7, 1.3}, rhoScale: proto.Float32(0.01)},
		inputs: []string{"reluA", "dcB.w", "dcB.b", "dcB.alpha", "dcB.rho_v", "dcB.rho_scale"}}
	layerC := dcLayer{name: "dcC", geom: pads1,
		cfg:    dcConfig{magnitude: "seg", angular: "linear", weighted: "log", alpha: 1, beta: 0.4, k: 0.3, eps: 1e-3},
		w:      randTensor(rng, 0.5, 4, 5, 3, 3),
		in:     dcInputs{bias: randTensor(rng, 0.3, 4).Data},
		inputs: []string{"dcB", "dcC.w", "dcC.b"}}
	type bnLayer struct {
		name                        string
		scale, bias, mean, variance []float32
		eps, momentum               float64
		attrs                       []*onnxpb.AttributeProto
		input                       string
		newMean, newVar, y          []float64
	}
	bnA := bnLayer{name: "bnA", scale: positive(rng, 4), bias: randTensor(rng, 0.3, 4).Data,
		mean: randTensor(rng, 0.3, 4).Data, variance: positive(rng, 4), eps: 1e-5, momentum: 0.9, input: "dcA"}
	bnC := bnLayer{name: "bnC", scale: positive(rng, 4), bias: randTensor(rng, 0.3, 4).Data,
		mean: randTensor(rng, 0.3, 4).Data, variance: positive(rng, 4),
		eps: float64(float32(1e-3)), momentum: float64(float32(0.7)), input: "dcC",
		attrs: []*onnxpb.AttributeProto{floatAttr("epsilon", 1e-3), floatAttr("momentum", 0.7)}}
	fcW := randTensor(rng, 0.5, classes, 4)
	fcB := randTensor(rng, 0.2, classes)

	// The float64 forward pass; it also places seg's fixed rho in the
	// middle of N's values, so both branches are reached, but away from
	// every N, so the finite differences do not cross the kink.
	forward := func(eps float64) (loss float64, logits []float64, mA, mB float64, refs map[string]dcRef) {
		refs = map[string]dcRef{}
		a, mA := layerA.forward(toFloat64(x.Data), x.Dims)
		refs["dcA"] = a
		bnA.y, bnA.newMean, bnA.newVar = bnTrain(a.y, a.dims, bnA.scale, bnA.bias, bnA.mean, bnA.variance, bnA.eps, bnA.momentum)
		reluA := relu(bnA.y)
		b, mB := layerB.forward(reluA, a.dims)
		refs["dcB"] = b
		if layerC.cfg.rho == 0 {
			probe := naiveDecoupled64(b.y, b.dims, layerC.w, dcInputs{}, dcConfig{magnitude: "sphere", angular: "cos", weighted: "none", alpha: 1, eps: layerC.cfg.eps}, layerC.geom)
			layerC.cfg.rho = float64(float32(splitPoint(probe.n)))
		}
		c, _ := layerC.forward(b.y, b.dims)
		refs["dcC"] = c
		bnC.y, bnC.newMean, bnC.newVar = bnTrain(c.y, c.dims, bnC.scale, bnC.bias, bnC.mean, bnC.variance, bnC.eps, bnC.momentum)
		reluC := relu(bnC.y)
		batch, ch, per := int(c.dims[0]), int(c.dims[1]), int(c.dims[2]*c.dims[3])
		pooled := make([]float64, batch*ch)
		for i := range pooled {
			pooled[i] = meanOf(reluC[i*per : (i+1)*per])
		}
		logits = gemmTransB(pooled, batch, ch, toFloat64(fcW.Data), toFloat64(fcB.Data))
		loss, _ = crossEntropy(logits, batch, classes, labels, eps)
		return loss, logits, mA, mB, refs
	}
	forward(0) // sets seg's rho

	g := &onnxpb.GraphProto{
		Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(x.Dims...))},
		Output: floatOutputs("logits"),
	}
	for _, l := range []dcLayer{layerA, layerB, layerC} {
		cout := l.w.Dims[0]
		g.Initializer = append(g.Initializer, tensorInit(l.name+".w", l.w), floatInit(l.name+".b", []int64{cout}, l.in.bias...))
		if l.in.scale != nil {
			g.Initializer = append(g.Initializer, floatInit(l.name+".alpha", []int64{cout}, l.in.scale...))
		}
		if l.learn {
			g.Initializer = append(g.Initializer, floatInit(l.name+".rho_v", []int64{cout}, l.in.rhoV...),
				floatInit(l.name+".rho_scale", nil, *l.in.rhoScale))
		}
	}
	for _, bn := range []bnLayer{bnA, bnC} {
		n := int64(len(bn.scale))
		g.Initializer = append(g.Initializer, floatInit(bn.name+".scale", []int64{n}, bn.scale...),
			floatInit(bn.name+".bias", []int64{n}, bn.bias...), floatInit(bn.name+".mean", []int64{n}, bn.mean...),
			floatInit(bn.name+".var", []int64{n}, bn.variance...))
	}
	g.Initializer = append(g.Initializer, tensorInit("fc.w", fcW), tensorInit("fc.b", fcB))
	dc := func(l dcLayer) *onnxpb.NodeProto {
		return dcNode(opDecoupled, l.name, l.inputs, l.name, append(l.geom.attrs(3, 3), l.cfg.attrs()...)...)
	}
	bn := func(l bnLayer) *onnxpb.NodeProto {
		return node("BatchNormalization", l.name, []string{l.input, l.name + ".scale", l.name + ".bias", l.name + ".mean", l.name + ".var"},
			[]string{l.name}, l.attrs...)
	}
	g.Node = []*onnxpb.NodeProto{
		dc(layerA), bn(bnA), node(opRelu, "reluA", []string{"bnA"}, []string{"reluA"}),
		dc(layerB), dc(layerC), bn(bnC), node(opRelu, "reluC", []string{"bnC"}, []string{"reluC"}),
		node("GlobalAveragePool", "pool", []string{"reluC"}, []string{"pool"}),
		node("Flatten", "flatten", []string{"pool"}, []string{"flat"}),
		node("Gemm", "fc", []string{"flat", "fc.w", "fc.b"}, []string{"logits"}, intAttr("transB", 1)),
	}
	path := writeModel(t, t.TempDir(), "fd.onnx", dcModel(g))

	// Probes: every entry of the small parameters, four of each weight,
	// and entries of what training must not use (running statistics,
	// RhoScale), whose finite differences must be 0.
	sizes := map[string]int{}
	for _, init := range g.Initializer {
		n, err := numElements(init.GetDims())
		if err != nil {
			t.Fatal(err)
		}
		sizes[init.GetName()] = n
	}
	params := []string{"dcA.w", "dcA.b", "dcA.alpha", "dcA.rho_v", "bnA.scale", "bnA.bias",
		"dcB.w", "dcB.b", "dcB.alpha", "dcB.rho_v", "dcC.w", "dcC.b", "bnC.scale", "bnC.bias", "fc.w", "fc.b"}
	unused := []string{"dcA.rho_scale", "dcB.rho_scale", "bnA.mean", "bnA.var", "bnC.mean", "bnC.var"}
	var probes []fdProbe
	for _, name := range append(slices.Clone(params), unused...) {
		n := sizes[name]
		idx := []int{0, n / 3, 2 * n / 3, n - 1}
		if n <= 6 {
			idx = idx[:0]
			for i := range n {
				idx = append(idx, i)
			}
		}
		for _, i := range slices.Compact(idx) {
			probes = append(probes, fdProbe{Init: name, Index: i})
		}
	}
	inputs := map[string]Tensor{"x": x}
	res := runAll(t, tr, []torchJob{trainJob(path, inputs, labels, 0), trainJob(path, inputs, labels, 0.1, probes...)})

	for i, eps := range []float64{0, 0.1} {
		t.Run(fmt.Sprintf("forward eps=%g", eps), func(t *testing.T) {
			if res[i].err != nil {
				t.Fatal(res[i].err)
			}
			got := res[i].train
			loss, logits, mA, mB, refs := forward(eps)
			if d := relErr(got.Loss, loss); d > 1e-10 {
				t.Errorf("loss %.17g, want %.17g (relative difference %.3g)", got.Loss, loss, d)
			}
			if _, err := compareTensor(got.Outputs["logits"], Tensor{Dims: []int64{4, classes}, Data: toFloat32(logits)}, trainExactTol); err != nil {
				t.Errorf("logits: %v", err)
			}
			for node, m := range map[string]float64{"dcA": mA, "dcB": mB} {
				if d := relErr(got.RhoBatch[node], m); d > 1e-12 {
					t.Errorf("batch radius scale of %s: %.17g, want %.17g", node, got.RhoBatch[node], m)
				}
			}
			if len(got.RhoBatch) != 2 {
				t.Errorf("batch radius scales for %v, want dcA and dcB", slices.Sorted(maps.Keys(got.RhoBatch)))
			}
			for _, l := range []bnLayer{bnA, bnC} {
				n := int64(len(l.scale))
				for name, want := range map[string][]float64{l.name + ".mean": l.newMean, l.name + ".var": l.newVar} {
					if _, err := compareTensor(got.Running[name], Tensor{Dims: []int64{n}, Data: toFloat32(want)}, trainExactTol); err != nil {
						t.Errorf("running statistic %s: %v", name, err)
					}
				}
			}
			if len(got.Running) != 4 {
				t.Errorf("running statistics %v, want 4", slices.Sorted(maps.Keys(got.Running)))
			}
			wantNames := slices.Sorted(slices.Values(params))
			if names := slices.Sorted(maps.Keys(got.Grads)); !slices.Equal(names, wantNames) {
				t.Errorf("gradients for %v, want %v", names, wantNames)
			}
			for _, name := range []string{"dcA", "dcC"} {
				st := got.Stats[name]
				if st.BelowRho < 0.1 || st.BelowRho > 0.9 {
					t.Errorf("%s: %.3f of the entries below rho, want 10-90 %%", name, st.BelowRho)
				}
				want := naiveStats(refs[name])
				if d := statsDiff(st, want); d > 1e-9 {
					t.Errorf("%s: statistics %+v, want %+v", name, st, want)
				}
			}
			// Finite differences of step 1e-6 must not cross a kink.
			for _, name := range []string{"dcA", "dcC"} {
				if d := kinkDistance(refs[name]); d < 1e-4 {
					t.Errorf("%s: an entry lies %.3g (relative) from rho: finite differences would cross the kink", name, d)
				}
			}
			for _, l := range []bnLayer{bnA, bnC} {
				if d := minAbs(l.y); d < 1e-4 {
					t.Errorf("%s: a Relu input lies %.3g from 0: finite differences would cross the kink", l.name, d)
				}
			}
			// A bias before a training-mode BatchNormalization cancels
			// out: its gradient vanishes only if gradients flow through
			// the batch mean.
			if m := largestAbs(toFloat64(got.Grads["dcA.b"].Data)); m > 1e-12 {
				t.Errorf("gradient of dcA.b (before bnA) reaches %.3g, want 0", m)
			}
			t.Logf("loss %.10g; m: dcA %.6g, dcB %.6g; entries below rho: dcA %.3f, dcB %.3f, dcC %.3f",
				got.Loss, mA, mB, got.Stats["dcA"].BelowRho, got.Stats["dcB"].BelowRho, got.Stats["dcC"].BelowRho)
		})
	}

	t.Run("finite differences", func(t *testing.T) {
		if res[1].err != nil {
			t.Fatal(res[1].err)
		}
		got := res[1].train
		var worst worstTracker
		var worstAbs float64
		for i, p := range probes {
			fd := res[1].fd[i]
			if slices.Contains(unused, p.Init) {
				if fd != 0 {
					t.Errorf("%s[%d] is not used in training, but the loss moves with it: %.3g", p.Init, p.Index, fd)
				}
				continue
			}
			grad := got.Grads[p.Init]
			scale := maxAbs(toFloat64(grad.Data))
			g := float64(grad.Data[p.Index])
			d := math.Abs(g - fd)
			if d > fdTol.abs+fdTol.rel*scale {
				t.Errorf("%s[%d]: gradient %.9g, finite difference %.9g (difference %.3g, largest |gradient| entry %.3g)",
					p.Init, p.Index, g, fd, d, scale)
			}
			worstAbs = max(worstAbs, d)
			if scale > 1e-9 {
				worst.add(d/scale, fmt.Sprintf("%s[%d]", p.Init, p.Index))
			}
		}
		t.Logf("checked %d gradient entries of %d parameters (and %d entries of unused inputs) against central finite "+
			"differences (step %g); worst difference relative to the parameter's largest gradient entry %v, worst absolute %.3g",
			len(probes)-countUnused(probes, unused), len(params), countUnused(probes, unused), fdStep, worst, worstAbs)
	})
}

// splitPoint returns the midpoint of the widest gap between adjacent sorted
// values in the middle fifth of v: a threshold with about half the values
// on each side and none close to it.
func splitPoint(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	best, at := -1.0, 0
	for i := 2 * len(s) / 5; i+1 < 3*len(s)/5; i++ {
		if gap := s[i+1] - s[i]; gap > best {
			best, at = gap, i
		}
	}
	return (s[at] + s[at+1]) / 2
}

// kinkDistance returns the smallest |N - rho_c| / rho_c over a decoupled
// layer's entries: how far the data lies from the kink of ball and seg.
func kinkDistance(r dcRef) float64 {
	bN, cout, per := int(r.dims[0]), int(r.dims[1]), int(r.dims[2]*r.dims[3])
	d := math.Inf(1)
	for b := range bN {
		for c := range cout {
			for l := range per {
				d = min(d, math.Abs(r.n[b*per+l]-r.rho[c])/r.rho[c])
			}
		}
	}
	return d
}

// countUnused counts the probes of the given initializers.
func countUnused(probes []fdProbe, unused []string) int {
	n := 0
	for _, p := range probes {
		if slices.Contains(unused, p.Init) {
			n++
		}
	}
	return n
}

// TestTorchTrainBatchNormByHand checks training-mode BatchNormalization on
// numbers worked out by hand. x is [2, 2, 1, 2]; channel 0 holds 1, 3, 5, 7
// (mean 4, population variance 5), channel 1 holds 0, 2, 4, -2 (mean 1,
// variance 5; the unbiased variance would be 20/3).
//
// bn1 (momentum 0.8, on the loss path), running mean [0.5, -1], variance
// [2, 0.25]: mean 0.8 [0.5, -1] + 0.2 [4, 1] = [1.2, -0.6], variance
// 0.8 [2, 0.25] + 0.2 [5, 5] = [2.6, 1.2].
//
// bn2 (default momentum 0.9, epsilon 4 so sqrt(var + eps) = 3, scale
// [1.5, 3], bias [0.5, -1], off the loss path): y = (x - 4) / 2 + 0.5 on
// channel 0 = -1, 0, 1, 2 and x - 2 on channel 1 = -2, 0, 2, -4; mean
// 0.9 [0.5, -1] + 0.1 [4, 1] = [0.85, -0.8], variance 0.9 [2, 0.25] +
// 0.1 [5, 5] = [2.3, 0.725]; its scale and bias get zero gradients.
func TestTorchTrainBatchNormByHand(t *testing.T) {
	tr := Torch(t)
	x := Tensor{Dims: []int64{2, 2, 1, 2}, Data: []float32{1, 3, 0, 2, 5, 7, 4, -2}}
	running := func(prefix string) []*onnxpb.TensorProto {
		return []*onnxpb.TensorProto{floatInit(prefix+".mean", []int64{2}, 0.5, -1), floatInit(prefix+".var", []int64{2}, 2, 0.25)}
	}
	inits := []*onnxpb.TensorProto{
		floatInit("bn1.scale", []int64{2}, 0.7, 1.1), floatInit("bn1.bias", []int64{2}, 0.1, -0.2),
		floatInit("bn2.scale", []int64{2}, 1.5, 3), floatInit("bn2.bias", []int64{2}, 0.5, -1),
		floatInit("fc.w", []int64{4, 3}, 0.1, -0.2, 0.3, 0.4, -0.5, 0.6, -0.7, 0.8, 0.9, 1, -1.1, 1.2),
	}
	inits = append(append(inits, running("bn1")...), running("bn2")...)
	g := &onnxpb.GraphProto{
		Node: []*onnxpb.NodeProto{
			node("BatchNormalization", "bn1", []string{"x", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"}, []string{"y1"},
				floatAttr("momentum", 0.8)),
			node("Flatten", "flatten", []string{"y1"}, []string{"flat"}),
			node("MatMul", "fc", []string{"flat", "fc.w"}, []string{"logits"}),
			node("BatchNormalization", "bn2", []string{"x", "bn2.scale", "bn2.bias", "bn2.mean", "bn2.var"}, []string{"y2"},
				floatAttr("epsilon", 4)),
		},
		Initializer: inits,
		Input:       []*onnxpb.ValueInfoProto{floatValue("x", dims(x.Dims...))},
		Output:      floatOutputs("logits", "y2"),
	}
	path := writeModel(t, t.TempDir(), "bn.onnx", graphModel(g))
	res, err := tr.Train(path, map[string]Tensor{"x": x}, []int{2, 0}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var worst worstTracker
	check := func(what string, got Tensor, dims []int64, want ...float32) {
		t.Helper()
		d, err := compareTensor(got, Tensor{Dims: dims, Data: want}, trainExactTol)
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
		worst.add(d, what)
	}
	two := []int64{2}
	check("bn1.mean", res.Running["bn1.mean"], two, 1.2, -0.6)
	check("bn1.var", res.Running["bn1.var"], two, 2.6, 1.2)
	check("bn2.mean", res.Running["bn2.mean"], two, 0.85, -0.8)
	check("bn2.var", res.Running["bn2.var"], two, 2.3, 0.725)
	check("y2", res.Outputs["y2"], x.Dims, -1, 0, -2, 0, 1, 2, 2, -4)
	if names, want := slices.Sorted(maps.Keys(res.Running)), []string{"bn1.mean", "bn1.var", "bn2.mean", "bn2.var"}; !slices.Equal(names, want) {
		t.Errorf("running statistics %v, want %v", names, want)
	}
	wantGrads := []string{"bn1.bias", "bn1.scale", "bn2.bias", "bn2.scale", "fc.w"}
	if names := slices.Sorted(maps.Keys(res.Grads)); !slices.Equal(names, wantGrads) {
		t.Errorf("gradients for %v, want %v", names, wantGrads)
	}
	for _, name := range []string{"bn2.scale", "bn2.bias"} {
		check(name+" gradient", res.Grads[name], two, 0, 0)
	}
	for _, name := range []string{"bn1.scale", "bn1.bias"} {
		if largestAbs(toFloat64(res.Grads[name].Data)) == 0 {
			t.Errorf("gradient of %s (on the loss path) is zero", name)
		}
	}
	t.Logf("checked 4 updated running statistics, a training-mode output and 2 zero gradients against hand computation; worst difference %v", worst)
}

// TestTorchTrainSharedInitializer checks that an initializer used by two
// Convs gives one gradient per use, the first under its name and the second
// as "w@conv2" ("w@#2" when that node has no name), whether shared directly
// or through an Identity node; that
// they equal the gradients of the same model with two separate
// initializers; and that their sum is the derivative of the loss with
// respect to the tied weight, by finite differences moving both uses.
func TestTorchTrainSharedInitializer(t *testing.T) {
	tr := Torch(t)
	rng := rand.New(rand.NewPCG(91, 92))
	x := randTensor(rng, 1, 2, 3, 5, 5)
	w := randTensor(rng, 0.4, 3, 3, 3, 3)
	labels := []int{1, 0}
	pads := intsAttr("pads", 1, 1, 1, 1)
	build := func(second string, identity bool, conv2 string) *onnxpb.ModelProto {
		nodes := []*onnxpb.NodeProto{
			node(opConv, "conv1", []string{"x", "w", "b1"}, []string{"z1"}, pads),
			node(opRelu, "relu1", []string{"z1"}, []string{"a1"}),
			node(opConv, conv2, []string{"a1", second, "b2"}, []string{"z2"}, pads),
			node(opRelu, "relu2", []string{"z2"}, []string{"a2"}),
			node("GlobalAveragePool", "pool", []string{"a2"}, []string{"pool"}),
			node("Flatten", "flatten", []string{"pool"}, []string{"flat"}),
			node("Gemm", "fc", []string{"flat", "fc.w", "fc.b"}, []string{"logits"}, intAttr("transB", 1)),
		}
		inits := []*onnxpb.TensorProto{tensorInit("w", w),
			floatInit("b1", []int64{3}, 0.1, -0.2, 0.05), floatInit("b2", []int64{3}, -0.1, 0.2, 0.3),
			floatInit("fc.w", []int64{2, 3}, 0.5, -0.4, 0.3, -0.2, 0.6, 0.7), floatInit("fc.b", []int64{2}, 0.1, -0.1)}
		if identity {
			nodes = append([]*onnxpb.NodeProto{node("Identity", "dedup", []string{"w"}, []string{second})}, nodes...)
		} else if second != "w" {
			inits = append(inits, tensorInit(second, w))
		}
		return graphModel(&onnxpb.GraphProto{Node: nodes, Initializer: inits,
			Input: []*onnxpb.ValueInfoProto{floatValue("x", dims(x.Dims...))}, Output: floatOutputs("logits")})
	}
	dir := t.TempDir()
	inputs := map[string]Tensor{"x": x}
	var probes []fdProbe
	for i := range w.Data {
		probes = append(probes, fdProbe{Init: "w", Index: i})
	}
	res := runAll(t, tr, []torchJob{
		trainJob(writeModel(t, dir, "shared.onnx", build("w", false, "conv2")), inputs, labels, 0, probes...),
		trainJob(writeModel(t, dir, "identity.onnx", build("w_dedup", true, "conv2")), inputs, labels, 0),
		trainJob(writeModel(t, dir, "separate.onnx", build("w2", false, "conv2")), inputs, labels, 0),
		trainJob(writeModel(t, dir, "unnamed.onnx", build("w", false, "")), inputs, labels, 0),
	})
	for i, r := range res {
		if r.err != nil {
			t.Fatalf("job %d: %v", i, r.err)
		}
	}
	shared, identity, separate, unnamed := res[0].train, res[1].train, res[2].train, res[3].train
	wantShared := []string{"b1", "b2", "fc.b", "fc.w", "w", "w@conv2"}
	for name, r := range map[string]*TorchTrainResult{"shared": shared, "identity": identity} {
		if names := slices.Sorted(maps.Keys(r.Grads)); !slices.Equal(names, wantShared) {
			t.Errorf("%s: gradients for %v, want %v", name, names, wantShared)
		}
	}
	if names, want := slices.Sorted(maps.Keys(separate.Grads)), []string{"b1", "b2", "fc.b", "fc.w", "w", "w2"}; !slices.Equal(names, want) {
		t.Errorf("separate: gradients for %v, want %v", names, want)
	}
	// An unnamed node is named by its index in the graph.
	if names, want := slices.Sorted(maps.Keys(unnamed.Grads)), []string{"b1", "b2", "fc.b", "fc.w", "w", "w@#2"}; !slices.Equal(names, want) {
		t.Errorf("unnamed second Conv: gradients for %v, want %v", names, want)
	}
	var worst worstTracker
	same := func(what string, got, want Tensor) {
		t.Helper()
		d, err := compareTensor(got, want, tolerance{})
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
		worst.add(d, what)
	}
	same("shared w against separate w", shared.Grads["w"], separate.Grads["w"])
	same("shared w@conv2 against separate w2", shared.Grads["w@conv2"], separate.Grads["w2"])
	same("Identity w against shared w", identity.Grads["w"], shared.Grads["w"])
	same("Identity w@conv2 against shared w@conv2", identity.Grads["w@conv2"], shared.Grads["w@conv2"])
	same("unnamed w@#2 against shared w@conv2", unnamed.Grads["w@#2"], shared.Grads["w@conv2"])
	if relErr(shared.Loss, separate.Loss) > trainLossTol || relErr(identity.Loss, separate.Loss) > trainLossTol {
		t.Errorf("losses %.17g (shared), %.17g (Identity), %.17g (separate) differ", shared.Loss, identity.Loss, separate.Loss)
	}

	sum := make([]float64, len(w.Data))
	for i := range sum {
		sum[i] = float64(shared.Grads["w"].Data[i]) + float64(shared.Grads["w@conv2"].Data[i])
	}
	scale := maxAbs(sum)
	var worstFD float64
	for i, fd := range res[0].fd {
		d := math.Abs(sum[i] - fd)
		if d > fdTol.abs+fdTol.rel*scale {
			t.Errorf("w[%d]: sum of the two uses' gradients %.9g, finite difference of the tied weight %.9g", i, sum[i], fd)
		}
		worstFD = max(worstFD, d/scale)
	}
	var differ float64
	for i := range sum {
		differ = max(differ, math.Abs(float64(shared.Grads["w"].Data[i]-shared.Grads["w@conv2"].Data[i])))
	}
	if differ < 1e-3*scale {
		t.Errorf("the two uses' gradients are nearly equal (%.3g): the test does not tell them apart", differ)
	}
	t.Logf("checked 2 uses of a shared weight (directly, through Identity, at an unnamed node) against separate initializers, worst difference %v; "+
		"their sum against %d finite differences of the tied weight, worst difference relative to its largest entry %.3g",
		worst, len(probes), worstFD)
}

// TestTorchTrainErrors checks that bad labels, label smoothing or logits
// are errors naming the model file.
func TestTorchTrainErrors(t *testing.T) {
	tr := Torch(t)
	dir := t.TempDir()
	x := Tensor{Dims: []int64{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}}
	model := func(name string, out string, nodes ...*onnxpb.NodeProto) string {
		return writeModel(t, dir, name, graphModel(&onnxpb.GraphProto{
			Node:        nodes,
			Initializer: []*onnxpb.TensorProto{floatInit("w", []int64{3, 2}, 1, 0, 0, 1, 1, 1), int64Init("axes", []int64{1}, 0)},
			Input:       []*onnxpb.ValueInfoProto{floatValue("x", dims(2, 3))},
			Output:      floatOutputs(out),
		}))
	}
	mm := node("MatMul", "mm", []string{"x", "w"}, []string{"logits"})
	good := model("good.onnx", "logits", mm)
	softmax0 := model("softmax0.onnx", "probs", mm, node("Softmax", "sm", []string{"logits"}, []string{"probs"}, intAttr("axis", 0)))
	rank3 := model("rank3.onnx", "u", mm, node("Unsqueeze", "u", []string{"logits", "axes"}, []string{"u"}))
	tests := []struct {
		name      string
		path      string
		labels    []int
		smoothing float64
		want      string
	}{
		{"no labels", good, nil, 0, "needs labels"},
		{"too few labels", good, []int{1}, 0, "1 labels for a batch of 2"},
		{"label out of range", good, []int{0, 2}, 0, "label 2 of sample 1 is not in [0, 2)"},
		{"negative label", good, []int{-1, 0}, 0, "label -1 of sample 0"},
		{"smoothing above 1", good, []int{0, 1}, 1.5, "label smoothing 1.5"},
		{"smoothing NaN", good, []int{0, 1}, math.NaN(), "label smoothing NaN"},
		{"softmax over the batch", softmax0, []int{0, 1}, 0, "works along axis 0"},
		{"logits of rank 3", rank3, []int{0, 1}, 0, "want floating [batch, classes]"},
		{"missing model", filepath.Join(dir, "absent.onnx"), []int{0, 1}, 0, "absent.onnx"},
	}
	// The cases the Go side rejects start no Python process; the others
	// run in one request, except the first, which goes through Train.
	inputs := map[string]Tensor{"x": x}
	var jobs []torchJob
	var batched []int
	for i, tt := range tests {
		if len(tt.labels) > 0 && tt.smoothing >= 0 && tt.smoothing <= 1 && i != 1 {
			jobs = append(jobs, trainJob(tt.path, inputs, tt.labels, tt.smoothing))
			batched = append(batched, i)
		}
	}
	res := runAll(t, tr, jobs)
	errs := make([]error, len(tests))
	for i, tt := range tests {
		if j := slices.Index(batched, i); j >= 0 {
			if res[j].err == nil {
				errs[i] = fmt.Errorf("training succeeded with loss %g, want an error", res[j].train.Loss)
				continue
			}
			errs[i] = res[j].err
			continue
		}
		r, err := tr.Train(tt.path, inputs, tt.labels, tt.smoothing)
		if err == nil {
			err = fmt.Errorf("training succeeded with loss %g, want an error", r.Loss)
		}
		errs[i] = err
	}
	checked := 0
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := errs[i]
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), filepath.Base(tt.path)) {
				t.Errorf("error %q does not name the model file", err)
			}
			t.Logf("error: %v", err)
			checked++
		})
	}
	t.Logf("checked %d failing training runs", checked)
}
