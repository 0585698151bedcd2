// Package dcnet defines the decoupled convolution operator of DCNET.md:
// its configuration, the way a configuration is stored on an ONNX node,
// the ONNX function body that computes it at each default-domain opset,
// and a reference implementation for tests.
//
// It owns the operator's definition and nothing else: choosing which Conv
// nodes to rewrite and editing graphs is package rewrite's job, running and
// training decoupled networks is package engine's.
//
// # The operator
//
// A decoupled convolution replaces the inner product <w, x> of a filter
// and an input patch by
//
//	y = A_c * h(N) * m(|w|_c) * g(theta) + b_c
//
// where N = sqrt(sum x^2 + eps) is the patch norm, |w|_c = sqrt(sum W_c^2 +
// eps) the filter norm, cos = clamp(<w, x> / (|w| N), -1, 1) and theta =
// acos(cos). The magnitude function h is one of Magnitudes (sphere, ball,
// tanh, linear, seg, log, mix), the angular activation g one of Angulars
// (cos, linear, sigmoid, sqcos), the weighting m one of Weightings (none,
// linear, log). A_c (input Alpha) and b_c (input B) are optional.
// ball, tanh and seg need a radius rho: fixed (Config.Rho) or learnable
// per channel, rho_c = (RhoV_c^2 + 1e-4) * RhoScale (Config.LearnRho).
//
// # Configurations
//
// Config holds one layer's choice of functions, its scalars and which
// optional inputs its node has; DefaultConfig gives the command-line
// defaults. Config.Validate reports every problem at once as *FlagError values
// naming the command-line flag to fix.
//
// # Storage in ONNX
//
// A decoupled node has domain Domain and op type Config.OpType:
// "DecoupledConv_" and eight hexadecimal digits hashing Config.Key, the
// canonical configuration string. Its inputs are named by position as
// Config.Inputs lists them (X, W, B, Alpha, RhoV, RhoScale, absent ones
// empty, trailing absent ones left out); its attributes are the source
// Conv's plus Config.Attributes. FromNode reads a configuration back from
// the attributes and the inputs, never from the op type. LayerInfoOf gives
// the JSON record of the MetaLayers metadata entry.
//
// An input left empty before a present one (no bias but a channel scale or
// a learnable radius) runs in ONNX Runtime but fails the strict shape
// inference of the ONNX checker; Config.HasGaps detects it and
// Config.WithoutGaps fills such inputs with neutral ones (zeros for B, ones
// for Alpha).
//
// # Function bodies
//
// Function builds the model-local FunctionProto for a configuration with
// the standard operators of the model's own default-domain opset, 7 to 17.
// The Conv geometry reaches the body by attribute reference; alpha, beta,
// k, rho and eps are constants inside it. The body differs between opsets
// only where the operators do: Clip takes min and max as attributes before
// opset 11 and as inputs from 11, Unsqueeze takes axes as an attribute
// before 13 and as an input from 13. Everything else avoids what older
// opsets lack: the ones kernel of N is derived from W (no int64 constants
// before opset 9), min(N, rho) is N - Relu(N - rho) (Min broadcasts only
// from opset 8), sign(cos) cos^2 is cos * Abs(cos) (Sign exists only from
// opset 9).
//
// # Reference implementation
//
// Reference computes the operator from the formulas in float64 loops, with
// any Conv window (pads, strides, dilations, auto_pad). ReferenceStats also
// returns the patch norms, cosines and radii, so tests can check that each
// branch of a piecewise function is exercised. Config.MagnitudeOf,
// Config.AngularOf and Config.WeightOf evaluate h, g and m alone.
package dcnet
