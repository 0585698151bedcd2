package peer

import (
	"fmt"
	"math"
	"math/rand/v2"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// This file holds what the PyTorch reference's tests build models from, and
// a direct-loop float64 decoupled convolution written from DCNET.md section
// 1, independent of torch_ref.py.

// Names of the decoupled convolution's domain and attributes.
const (
	dcnetDomain  = "ai.dcnet"
	opDecoupled  = "DecoupledConv_test"
	attrMag      = "magnitude"
	attrAngular  = "angular"
	attrWeighted = "weighted"
)

// rhoVEps is the literal in rho_c = (v_c^2 + 1e-4) * RhoScale.
const rhoVEps = 1e-4

// Magnitudes, angular activations and weightings of DCNET.md, in its order.
var (
	magnitudes = []string{"sphere", "ball", "tanh", "linear", "seg", "log", "mix"}
	angulars   = []string{"cos", "linear", "sigmoid", "sqcos"}
	weightings = []string{"none", "linear", "log"}
)

// needsRho reports whether a magnitude function uses rho.
func needsRho(mag string) bool {
	return mag == "ball" || mag == "tanh" || mag == "seg"
}

// dcConfig is one decoupled convolution's configuration.
type dcConfig struct {
	magnitude, angular, weighted string
	alpha, beta, k, rho, eps     float64
}

// defaultConfig is the identity configuration with DCNET.md's defaults.
func defaultConfig() dcConfig {
	return dcConfig{magnitude: "linear", angular: "cos", weighted: "linear",
		alpha: 1, beta: 0.5, k: 0.3, rho: 1, eps: 1e-4}
}

// String names the configuration, for subtest and node names.
func (c dcConfig) String() string {
	return fmt.Sprintf("%s_%s_%s", c.magnitude, c.angular, c.weighted)
}

// attrs returns every configuration attribute.
func (c dcConfig) attrs() []*onnxpb.AttributeProto {
	return []*onnxpb.AttributeProto{
		stringAttr(attrMag, c.magnitude),
		stringAttr(attrAngular, c.angular),
		stringAttr(attrWeighted, c.weighted),
		floatAttr("alpha", c.alpha),
		floatAttr("beta", c.beta),
		floatAttr("k", c.k),
		floatAttr("rho", c.rho),
		floatAttr("eps", c.eps),
	}
}

// convGeom is a 2-d convolution's geometry as ONNX attributes; nil slices
// and an empty autoPad are left out of the node.
type convGeom struct {
	pads      []int64 // h_begin, w_begin, h_end, w_end
	strides   []int64
	dilations []int64
	autoPad   string
	kernel    bool // write kernel_shape
}

// attrs returns the geometry's attributes for a kernel of kH x kW.
func (g convGeom) attrs(kH, kW int64) []*onnxpb.AttributeProto {
	var out []*onnxpb.AttributeProto
	if g.kernel {
		out = append(out, intsAttr("kernel_shape", kH, kW))
	}
	if g.pads != nil {
		out = append(out, intsAttr("pads", g.pads...))
	}
	if g.strides != nil {
		out = append(out, intsAttr("strides", g.strides...))
	}
	if g.dilations != nil {
		out = append(out, intsAttr("dilations", g.dilations...))
	}
	if g.autoPad != "" {
		out = append(out, stringAttr("auto_pad", g.autoPad))
	}
	return out
}

// resolved returns the pads (top, left, bottom, right), strides and
// dilations for an inH x inW input and kH x kW kernel.
func (g convGeom) resolved(inH, inW, kH, kW int) (pads [4]int, strides, dilations [2]int) {
	strides, dilations = [2]int{1, 1}, [2]int{1, 1}
	for i := range 2 {
		if g.strides != nil {
			strides[i] = int(g.strides[i])
		}
		if g.dilations != nil {
			dilations[i] = int(g.dilations[i])
		}
	}
	switch g.autoPad {
	case "", "NOTSET":
		for i := range 4 {
			if g.pads != nil {
				pads[i] = int(g.pads[i])
			}
		}
	case "VALID":
	case "SAME_UPPER", "SAME_LOWER":
		in, k := [2]int{inH, inW}, [2]int{kH, kW}
		for i := range 2 {
			out := (in[i] + strides[i] - 1) / strides[i]
			total := max(0, (out-1)*strides[i]+(k[i]-1)*dilations[i]+1-in[i])
			small := total / 2
			if g.autoPad == "SAME_UPPER" {
				pads[i], pads[i+2] = small, total-small
			} else {
				pads[i], pads[i+2] = total-small, small
			}
		}
	default:
		panic("unknown auto_pad " + g.autoPad)
	}
	return pads, strides, dilations
}

// dcInputs holds a decoupled convolution's optional inputs; nil is absent.
// rhoM, when positive, replaces RhoScale in rho_c = (v_c^2 + 1e-4) *
// RhoScale: the batch mean of N that training uses, in float64.
type dcInputs struct {
	bias, scale, rhoV []float32
	rhoScale          *float32
	rhoM              float64
}

// dcRef is what the direct-loop reference computes.
type dcRef struct {
	dims []int64   // [B, C, OH, OW]
	y    []float64 // [B, C, OH, OW]
	cos  []float64 // [B, C, OH, OW]
	n    []float64 // [B, OH, OW]
	rho  []float64 // [C], nil when the magnitude has no rho
}

// magnitude evaluates h(N) of DCNET.md's table.
func magnitude(c dcConfig, n, rho float64) float64 {
	switch c.magnitude {
	case "sphere":
		return c.alpha
	case "ball":
		return c.alpha * math.Min(n, rho) / rho
	case "tanh":
		return c.alpha * math.Tanh(n/rho)
	case "linear":
		return c.alpha * n
	case "seg":
		if n <= rho {
			return c.alpha * n
		}
		return c.beta*n + c.alpha*rho - c.beta*rho
	case "log":
		return c.alpha * math.Log(1+n)
	case "mix":
		return c.alpha*n + c.beta*math.Log(1+n)
	}
	panic("unknown magnitude " + c.magnitude)
}

// angular evaluates g of DCNET.md's table from cos.
func angular(c dcConfig, cos float64) float64 {
	theta := math.Acos(cos)
	switch c.angular {
	case "cos":
		return cos
	case "linear":
		return 1 - 2*theta/math.Pi
	case "sigmoid":
		k := 1 / math.Tanh(math.Pi/(4*c.k))
		return k * math.Tanh((math.Pi/2-theta)/(2*c.k))
	case "sqcos":
		return cos * math.Abs(cos)
	}
	panic("unknown angular " + c.angular)
}

// weighting evaluates m(|w|_c).
func weighting(c dcConfig, wn float64) float64 {
	switch c.weighted {
	case "none":
		return 1
	case "linear":
		return wn
	case "log":
		return math.Log(1 + wn)
	}
	panic("unknown weighting " + c.weighted)
}

// naiveDecoupled computes y = A_c h(N) m(|w|_c) g(theta) + b_c with direct
// loops in float64, for x [B, Cin, H, W] and w [C, Cin, kH, kW]. The float32
// attributes are rounded as a model stores them.
func naiveDecoupled(x, w Tensor, in dcInputs, c dcConfig, g convGeom) dcRef {
	return naiveDecoupled64(toFloat64(x.Data), x.Dims, w, in, c, g)
}

// toFloat64 widens float32 values.
func toFloat64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// naiveDecoupled64 is naiveDecoupled for a float64 input x of shape xDims.
func naiveDecoupled64(x []float64, xDims []int64, w Tensor, in dcInputs, c dcConfig, g convGeom) dcRef {
	c = c.float32Rounded()
	bN, cin, h, wd := int(xDims[0]), int(xDims[1]), int(xDims[2]), int(xDims[3])
	cout, kH, kW := int(w.Dims[0]), int(w.Dims[2]), int(w.Dims[3])
	pads, s, d := g.resolved(h, wd, kH, kW)
	oh := (h+pads[0]+pads[2]-(kH-1)*d[0]-1)/s[0] + 1
	ow := (wd+pads[1]+pads[3]-(kW-1)*d[1]-1)/s[1] + 1
	ref := dcRef{dims: []int64{int64(bN), int64(cout), int64(oh), int64(ow)}}
	ref.y = make([]float64, bN*cout*oh*ow)
	ref.cos = make([]float64, len(ref.y))
	ref.n = make([]float64, bN*oh*ow)

	wn := make([]float64, cout)
	for co := range cout {
		var sum float64
		for _, v := range w.Data[co*cin*kH*kW : (co+1)*cin*kH*kW] {
			sum += float64(v) * float64(v)
		}
		wn[co] = math.Sqrt(sum + c.eps)
	}
	if needsRho(c.magnitude) {
		ref.rho = make([]float64, cout)
		for co := range cout {
			switch {
			case in.rhoV != nil && in.rhoM > 0:
				v := float64(in.rhoV[co])
				ref.rho[co] = (v*v + rhoVEps) * in.rhoM
			case in.rhoV != nil:
				v := float64(in.rhoV[co])
				ref.rho[co] = (v*v + rhoVEps) * float64(*in.rhoScale)
			default:
				ref.rho[co] = c.rho
			}
		}
	}
	xAt := func(b, ci, i, j int) float64 {
		if i < 0 || i >= h || j < 0 || j >= wd {
			return 0
		}
		return x[((b*cin+ci)*h+i)*wd+j]
	}
	for b := range bN {
		for i := range oh {
			for j := range ow {
				var sq float64
				dot := make([]float64, cout)
				for ci := range cin {
					for ki := range kH {
						for kj := range kW {
							v := xAt(b, ci, i*s[0]-pads[0]+ki*d[0], j*s[1]-pads[1]+kj*d[1])
							sq += v * v
							for co := range cout {
								dot[co] += v * float64(w.Data[((co*cin+ci)*kH+ki)*kW+kj])
							}
						}
					}
				}
				n := math.Sqrt(sq + c.eps)
				ref.n[(b*oh+i)*ow+j] = n
				for co := range cout {
					cos := math.Max(-1, math.Min(1, dot[co]/wn[co]/n))
					var rho float64
					if ref.rho != nil {
						rho = ref.rho[co]
					}
					y := magnitude(c, n, rho) * weighting(c, wn[co]) * angular(c, cos)
					if in.scale != nil {
						y *= float64(in.scale[co])
					}
					if in.bias != nil {
						y += float64(in.bias[co])
					}
					at := ((b*cout+co)*oh+i)*ow + j
					ref.y[at], ref.cos[at] = y, cos
				}
			}
		}
	}
	return ref
}

// float32Rounded returns c with its numbers rounded to float32, as the
// model's FLOAT attributes hold them.
func (c dcConfig) float32Rounded() dcConfig {
	r := func(v float64) float64 { return float64(float32(v)) }
	c.alpha, c.beta, c.k, c.rho, c.eps = r(c.alpha), r(c.beta), r(c.k), r(c.rho), r(c.eps)
	return c
}

// tensor returns the reference output as a float32 Tensor.
func (r dcRef) tensor() Tensor {
	return Tensor{Dims: r.dims, Data: toFloat32(r.y)}
}

// toFloat32 rounds float64 values to float32.
func toFloat32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// stringAttr is a STRING attribute.
func stringAttr(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

// floatAttr is a FLOAT attribute.
func floatAttr(name string, v float64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(float32(v))}
}

// intAttr is an INT attribute.
func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// dcNode builds a decoupled convolution node of domain ai.dcnet; inputs
// are X, W, B, Alpha, RhoV, RhoScale by position ("" for an absent one).
func dcNode(opType, name string, inputs []string, output string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	n := node(opType, name, inputs, []string{output}, attrs...)
	n.Domain = proto.String(dcnetDomain)
	return n
}

// dcModel wraps a graph into an IR 8 model importing opset 13 and ai.dcnet 1.
func dcModel(g *onnxpb.GraphProto) *onnxpb.ModelProto {
	m := graphModel(g)
	m.OpsetImport = append(m.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: proto.String(dcnetDomain), Version: proto.Int64(1)})
	return m
}

// opsetModel wraps a graph into an IR 8 model importing the given
// default-domain opset.
func opsetModel(g *onnxpb.GraphProto, opset int64) *onnxpb.ModelProto {
	m := graphModel(g)
	m.OpsetImport[0].Version = proto.Int64(opset)
	return m
}

// anyValue describes a graph output of the given element type and unknown
// shape.
func anyValue(name string, elem onnxpb.TensorProto_DataType) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(elem)),
		}}},
	}
}

// int64Init is an int64 initializer stored in int64_data.
func int64Init(name string, shape []int64, data ...int64) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{
		Name:      proto.String(name),
		Dims:      shape,
		DataType:  proto.Int32(int32(onnxpb.TensorProto_INT64)),
		Int64Data: data,
	}
}

// tensorInit turns a Tensor into a float initializer.
func tensorInit(name string, t Tensor) *onnxpb.TensorProto {
	return floatInit(name, t.Dims, t.Data...)
}

// randTensor fills a tensor with scale * standard normal values.
func randTensor(rng *rand.Rand, scale float64, dims ...int64) Tensor {
	n, err := numElements(dims)
	if err != nil {
		panic(err)
	}
	t := Tensor{Dims: dims, Data: make([]float32, n)}
	for i := range t.Data {
		t.Data[i] = float32(scale * rng.NormFloat64())
	}
	return t
}

// dyadicTensor fills a tensor with multiples of 1/den in [-lim, lim]/den:
// small dyadic numbers whose products and sums float32 holds exactly.
func dyadicTensor(rng *rand.Rand, lim, den int, dims ...int64) Tensor {
	n, err := numElements(dims)
	if err != nil {
		panic(err)
	}
	t := Tensor{Dims: dims, Data: make([]float32, n)}
	for i := range t.Data {
		t.Data[i] = float32(rng.IntN(2*lim+1)-lim) / float32(den)
	}
	return t
}

// positive returns |v| + 0.5 for n standard normal v: a positive scale.
func positive(rng *rand.Rand, n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(math.Abs(rng.NormFloat64()) + 0.5)
	}
	return out
}
