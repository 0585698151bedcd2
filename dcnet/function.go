package dcnet

import (
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// Function returns the model-local function that defines the op type
// c.OpType() with standard operators of the default domain at opset, the
// default-domain opset of the model that will carry it (ONNX Runtime binds
// a function body to the model's opset, not the function's).
//
// The function is in Domain and named c.OpType(). Its formal inputs are
// c.FormalInputs(): c.Inputs() with the absent inputs before the last
// present one named too, since a formal input cannot be empty; the body
// reads only the inputs the node passes. Its output is "Y". It declares
// every attribute a calling node carries (the Conv attributes and the
// configuration attributes) and reads the Conv geometry (auto_pad, pads,
// strides, dilations, kernel_shape) by reference. alpha, beta, k, rho and
// eps are constants inside the body, since float attributes cannot be
// referenced below opset 12; that is why they are part of the key.
//
// Bodies are built for opsets MinOpset to MaxOpset (7 to 17); the forms
// of Clip (min and max as inputs from opset 11) and Unsqueeze (axes as an
// input from opset 13) follow the opset. An invalid c is an error.
func Function(c Config, opset int64) (*onnxpb.FunctionProto, error) {
	if opset < MinOpset || opset > MaxOpset {
		return nil, fmt.Errorf("building the function of %s: default-domain opset %d is not supported (opsets %d to %d are)",
			c.OpType(), opset, MinOpset, MaxOpset)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("building the function of %s: %w", c.OpType(), err)
	}
	b := &body{opset: opset, consts: map[string]bool{}}
	b.build(c)
	return &onnxpb.FunctionProto{
		Name:        proto.String(c.OpType()),
		Domain:      proto.String(Domain),
		Input:       c.FormalInputs(),
		Output:      []string{OutputY},
		Attribute:   append(ConvAttributes(), ConfigAttributes()...),
		Node:        b.nodes,
		DocString:   proto.String("Decoupled convolution " + c.Summary() + "; key " + c.Key()),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opset)}},
	}, nil
}

// body accumulates the nodes of a function body. Each node is named after
// the value it produces.
type body struct {
	opset  int64
	nodes  []*onnxpb.NodeProto
	consts map[string]bool
}

// op appends a node computing out and returns out.
func (b *body) op(op, out string, inputs []string, attrs ...*onnxpb.AttributeProto) string {
	b.nodes = append(b.nodes, &onnxpb.NodeProto{
		OpType:    proto.String(op),
		Name:      proto.String(out),
		Input:     inputs,
		Output:    []string{out},
		Attribute: attrs,
	})
	return out
}

// scalar returns the name of a rank-0 float constant, adding its Constant
// node the first time the name is asked for. Float tensors are the one
// kind of Constant every opset from 7 accepts.
func (b *body) scalar(name string, v float32) string {
	if !b.consts[name] {
		b.consts[name] = true
		t := &onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{v}}
		b.op(opConstant, name, nil, &onnxpb.AttributeProto{
			Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t})
	}
	return name
}

// channelAxes are the axes Unsqueeze inserts to turn a per-channel vector
// [C_out] into [1, C_out, 1, 1].
var channelAxes = []int64{0, 2, 3}

// perChannel reshapes the vector in ([C_out]) to [1, C_out, 1, 1] so it
// broadcasts against [batch, C_out, H, W]: Unsqueeze with axes as an
// attribute before opset 13 and as an int64 constant input from 13.
func (b *body) perChannel(in, out string) string {
	if b.opset < unsqueezeInputOpset {
		return b.op(opUnsqueeze, out, []string{in}, intsAttr("axes", channelAxes...))
	}
	const axes = "c_channel_axes"
	if !b.consts[axes] {
		b.consts[axes] = true
		t := &onnxpb.TensorProto{Dims: []int64{int64(len(channelAxes))},
			DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: channelAxes}
		b.op(opConstant, axes, nil, &onnxpb.AttributeProto{
			Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t})
	}
	return b.op(opUnsqueeze, out, []string{in, axes})
}

// clip clamps in to [-1, 1]: min and max are attributes before opset 11
// and scalar inputs from 11.
func (b *body) clip(in, out string) string {
	if b.opset < clipInputsOpset {
		return b.op(opClip, out, []string{in}, floatAttr("min", -1), floatAttr("max", 1))
	}
	return b.op(opClip, out, []string{in, b.scalar("c_minus_one", -1), b.scalar("c_one", 1)})
}

// conv is a convolution with the calling node's geometry and no bias.
func (b *body) conv(x, w, out string) string {
	return b.op(opConv, out, []string{x, w},
		refAttr(AttrAutoPad, onnxpb.AttributeProto_STRING),
		refAttr(AttrDilations, onnxpb.AttributeProto_INTS),
		refAttr(AttrKernelShape, onnxpb.AttributeProto_INTS),
		refAttr(AttrPads, onnxpb.AttributeProto_INTS),
		refAttr(AttrStrides, onnxpb.AttributeProto_INTS),
	)
}

// scale returns v * s named out, or v itself when s is 1.
func (b *body) scale(v string, s float32, sName, out string) string {
	if s == 1 {
		return v
	}
	return b.op(opMul, out, []string{v, b.scalar(sName, s)})
}

// build emits the body of DCNET.md section 1:
//
//	y = A_c * h(N) * m(|w|_c) * g(theta) + b_c
func (b *body) build(c Config) {
	// Filter norms |w|_c = sqrt(sum W_c^2 + eps), [C_out, 1, 1, 1], and the
	// filter directions W / |w|.
	eps := b.scalar("c_eps", c.Eps)
	b.op(opReduceSumSquare, "wsumsq", []string{InputW}, intsAttr("axes", 1, 2, 3), intAttr("keepdims", 1))
	b.op(opAdd, "wsumsq_eps", []string{"wsumsq", eps})
	wnorm := b.op(opSqrt, "wnorm", []string{"wsumsq_eps"})
	b.op(opDiv, "wdir", []string{InputW, wnorm})

	// P = conv(X, W/|w|) with the node's geometry and no bias.
	p := b.conv(InputX, "wdir", "P")

	// N = sqrt(conv(X*X, ones[1, C_in, kH, kW]) + eps), [batch, 1, H, W].
	// The ones kernel is derived from W, so no shape constant is needed
	// (int64 Constants do not exist before opset 9).
	b.op(opMul, "xsq", []string{InputX, InputX})
	b.op(opMul, "wzero", []string{InputW, b.scalar("c_zero", 0)})
	b.op(opAdd, "wone", []string{"wzero", b.scalar("c_one", 1)})
	b.op(opReduceMean, "ones", []string{"wone"}, intsAttr("axes", 0), intAttr("keepdims", 1))
	b.conv("xsq", "ones", "psumsq")
	b.op(opAdd, "psumsq_eps", []string{"psumsq", eps})
	n := b.op(opSqrt, "N", []string{"psumsq_eps"})

	// cos = clamp(P / N, -1, 1).
	b.op(opDiv, "P_over_N", []string{p, n})
	cos := b.clip("P_over_N", "cos")

	g := b.angular(c, cos)
	h := b.magnitude(c, n)
	m := b.weighting(c, wnorm)

	// y = A_c * h * m * g + b_c, each product named after its factors
	// ("hg", "hgm", "Ahgm", ...).
	y, name := g, "g"
	if h != "" {
		name = "h" + name
		y = b.op(opMul, name, []string{y, h})
	}
	if m != "" {
		name += "m"
		y = b.op(opMul, name, []string{y, m})
	}
	if c.ChannelScale {
		name = "A" + name
		y = b.op(opMul, name, []string{y, b.perChannel(InputAlpha, "A")})
	}
	switch {
	case c.Bias:
		b.op(opAdd, OutputY, []string{y, b.perChannel(InputB, "bias")})
	case y != cos && y == b.lastOutput() && !b.consumed(y):
		// The last product becomes the output.
		last := b.nodes[len(b.nodes)-1]
		last.Output[0], last.Name = OutputY, proto.String(OutputY)
	default:
		b.op(opIdentity, OutputY, []string{y})
	}
}

// lastOutput returns the output of the last node.
func (b *body) lastOutput() string {
	if len(b.nodes) == 0 {
		return ""
	}
	return b.nodes[len(b.nodes)-1].GetOutput()[0]
}

// consumed reports whether a node reads the value v.
func (b *body) consumed(v string) bool {
	for _, n := range b.nodes {
		if slices.Contains(n.GetInput(), v) {
			return true
		}
	}
	return false
}

// angular emits g(theta) from cos and returns its name.
func (b *body) angular(c Config, cos string) string {
	switch c.Angular {
	case AngLinear:
		// g = 1 - 2 theta / pi.
		theta := b.op(opAcos, "theta", []string{cos})
		b.op(opMul, "theta_2_over_pi", []string{theta, b.scalar("c_2_over_pi", float32(2/math.Pi))})
		return b.op(opSub, "g", []string{b.scalar("c_one", 1), "theta_2_over_pi"})
	case AngSigmoid:
		// g = K tanh((pi/2 - theta) / (2k)), K = 1 / tanh(pi / (4k)).
		k := float64(c.K)
		theta := b.op(opAcos, "theta", []string{cos})
		b.op(opSub, "half_pi_minus_theta", []string{b.scalar("c_half_pi", float32(math.Pi/2)), theta})
		b.op(opDiv, "u", []string{"half_pi_minus_theta", b.scalar("c_2k", float32(2*k))})
		b.op(opTanh, "tanh_u", []string{"u"})
		return b.op(opMul, "g", []string{"tanh_u", b.scalar("c_sigmoid_K", float32(1/math.Tanh(math.Pi/(4*k))))})
	case AngSqcos:
		// g = sign(cos) cos^2 = cos |cos| (Sign exists only from opset 9).
		b.op(opAbs, "abs_cos", []string{cos})
		return b.op(opMul, "g", []string{cos, "abs_cos"})
	default: // AngCos
		return cos
	}
}

// radius returns the name of rho: a constant, or the learnable
// rho_c = (RhoV_c^2 + 1e-4) * RhoScale as [1, C_out, 1, 1].
func (b *body) radius(c Config) string {
	if !c.LearnRho {
		return b.scalar("c_rho", c.Rho)
	}
	b.op(opMul, "rho_v_sq", []string{InputRhoV, InputRhoV})
	b.op(opAdd, "rho_v_sq_floor", []string{"rho_v_sq", b.scalar("c_rho_floor", RhoFloor)})
	b.op(opMul, "rho_c", []string{"rho_v_sq_floor", InputRhoScale})
	return b.perChannel("rho_c", "rho")
}

// clamped emits min(N, rho) = N - relu(N - rho) (Min does not broadcast
// before opset 8) and returns its name and that of relu(N - rho).
func (b *body) clamped(n, rho string) (minimum, excess string) {
	b.op(opSub, "N_minus_rho", []string{n, rho})
	excess = b.op(opRelu, "N_excess", []string{"N_minus_rho"})
	minimum = b.op(opSub, "N_min_rho", []string{n, excess})
	return minimum, excess
}

// magnitude emits h(N) and returns its name, or "" when h is 1.
func (b *body) magnitude(c Config, n string) string {
	switch c.Magnitude {
	case MagSphere:
		// h = alpha.
		if c.Alpha == 1 {
			return ""
		}
		return b.scalar("c_alpha", c.Alpha)
	case MagBall:
		// h = alpha * min(N, rho) / rho.
		rho := b.radius(c)
		minimum, _ := b.clamped(n, rho)
		ball := b.op(opDiv, "N_min_rho_over_rho", []string{minimum, rho})
		return b.scale(ball, c.Alpha, "c_alpha", "h")
	case MagTanh:
		// h = alpha * tanh(N / rho).
		rho := b.radius(c)
		b.op(opDiv, "N_over_rho", []string{n, rho})
		t := b.op(opTanh, "tanh_N_over_rho", []string{"N_over_rho"})
		return b.scale(t, c.Alpha, "c_alpha", "h")
	case MagSeg:
		// h = alpha * min(N, rho) + beta * relu(N - rho). This is the
		// piecewise form of DCNET.md: for N <= rho, min(N, rho) = N and
		// relu(N - rho) = 0, so h = alpha * N; for N > rho, min(N, rho) =
		// rho and relu(N - rho) = N - rho, so h = alpha * rho + beta * (N -
		// rho) = beta * N + alpha * rho - beta * rho.
		rho := b.radius(c)
		minimum, excess := b.clamped(n, rho)
		inner := b.scale(minimum, c.Alpha, "c_alpha", "alpha_N_min_rho")
		outer := b.scale(excess, c.Beta, "c_beta", "beta_N_excess")
		return b.op(opAdd, "h", []string{inner, outer})
	case MagLog:
		// h = alpha * log(1 + N).
		b.op(opAdd, "N_plus_one", []string{n, b.scalar("c_one", 1)})
		l := b.op(opLog, "log_N_plus_one", []string{"N_plus_one"})
		return b.scale(l, c.Alpha, "c_alpha", "h")
	case MagMix:
		// h = alpha * N + beta * log(1 + N).
		b.op(opAdd, "N_plus_one", []string{n, b.scalar("c_one", 1)})
		l := b.op(opLog, "log_N_plus_one", []string{"N_plus_one"})
		lin := b.scale(n, c.Alpha, "c_alpha", "alpha_N")
		lg := b.scale(l, c.Beta, "c_beta", "beta_log_N_plus_one")
		return b.op(opAdd, "h", []string{lin, lg})
	default: // MagLinear
		// h = alpha * N.
		return b.scale(n, c.Alpha, "c_alpha", "h")
	}
}

// weighting emits m(|w|_c) as [1, C_out, 1, 1] from the norms [C_out, 1,
// 1, 1] and returns its name, or "" when m is 1.
func (b *body) weighting(c Config, wnorm string) string {
	switch c.Weighted {
	case WeightLinear:
		return b.op(opTranspose, "m", []string{wnorm}, intsAttr("perm", 1, 0, 2, 3))
	case WeightLog:
		b.op(opTranspose, "wnorm_t", []string{wnorm}, intsAttr("perm", 1, 0, 2, 3))
		b.op(opAdd, "wnorm_t_plus_one", []string{"wnorm_t", b.scalar("c_one", 1)})
		return b.op(opLog, "m", []string{"wnorm_t_plus_one"})
	default: // WeightNone
		return ""
	}
}
