package dcnet

import (
	"fmt"
	"hash/fnv"
	"strings"
)

// Formal input and output names of a decoupled convolution, in position.
const (
	InputX        = "X"        // the layer input, [batch, C_in, H, W]
	InputW        = "W"        // the filters, [C_out, C_in, kH, kW]
	InputB        = "B"        // the source Conv's bias, [C_out]
	InputAlpha    = "Alpha"    // the per-channel output scale A, [C_out]
	InputRhoV     = "RhoV"     // the learnable radius' per-channel v, [C_out]
	InputRhoScale = "RhoScale" // the learnable radius' scale m_run, rank 0
	OutputY       = "Y"        // the output, [batch, C_out, outH, outW]
)

// Positions of the inputs of a decoupled convolution node.
const (
	IndexX = iota
	IndexW
	IndexB
	IndexAlpha
	IndexRhoV
	IndexRhoScale
)

// Key returns the canonical configuration string hashed into the op type
// (DCNET.md section 5):
//
//	mag=..;ang=..;weighted=..;alpha=..;beta=..;k=..;rho=..|learn;eps=..;inputs=X,W[,B][,Alpha][,RhoV,RhoScale]
//
// Floats are written with %.9g of their float32 value, which reads back
// as the same float32. Values the configuration does not use are left out
// with their name: beta unless the magnitude is seg or mix, k unless the
// activation is sigmoid, rho unless the magnitude is ball, tanh or seg.
// The default configuration's key is
// "mag=linear;ang=cos;weighted=none;alpha=1;eps=9.99999975e-05;inputs=X,W".
func (c Config) Key() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mag=%s;ang=%s;weighted=%s;alpha=%s", c.Magnitude, c.Angular, c.Weighted, keyFloat(c.Alpha))
	if c.UsesBeta() {
		b.WriteString(";beta=" + keyFloat(c.Beta))
	}
	if c.UsesK() {
		b.WriteString(";k=" + keyFloat(c.K))
	}
	if c.NeedsRho() {
		if c.LearnRho {
			b.WriteString(";rho=learn")
		} else {
			b.WriteString(";rho=" + keyFloat(c.Rho))
		}
	}
	b.WriteString(";eps=" + keyFloat(c.Eps))
	var present []string
	for _, in := range c.Inputs() {
		if in != "" {
			present = append(present, in)
		}
	}
	b.WriteString(";inputs=" + strings.Join(present, ","))
	return b.String()
}

// keyFloat formats a float32 as the key does.
func keyFloat(v float32) string { return fmt.Sprintf("%.9g", float64(v)) }

// OpType returns the op type of the node and the name of its function:
// OpPrefix, an underscore and the FNV-1a 32-bit hash of Key as 8
// lowercase hexadecimal digits.
func (c Config) OpType() string {
	h := fnv.New32a()
	h.Write([]byte(c.Key()))
	return fmt.Sprintf("%s_%08x", OpPrefix, h.Sum32())
}

// Inputs returns the formal input names of the node in position (X, W, B,
// Alpha, RhoV, RhoScale): absent inputs are empty names, and trailing
// absent ones are left out. RhoV and RhoScale are present when LearnRho is
// set for a magnitude that needs a radius.
func (c Config) Inputs() []string {
	in := []string{InputX, InputW, "", "", "", ""}
	if c.Bias {
		in[IndexB] = InputB
	}
	if c.ChannelScale {
		in[IndexAlpha] = InputAlpha
	}
	if c.usesRhoInputs() {
		in[IndexRhoV], in[IndexRhoScale] = InputRhoV, InputRhoScale
	}
	for len(in) > 2 && in[len(in)-1] == "" {
		in = in[:len(in)-1]
	}
	return in
}

// HasGaps reports whether Inputs has an empty name before a present
// input: no bias but a channel scale or a learnable radius, or no channel
// scale but a learnable radius. ONNX Runtime runs such a node, but the
// ONNX checker's strict shape inference (onnx 1.12) rejects a call of a
// model-local function with an empty input name ("Input 2 type is
// missing"); WithoutGaps avoids them.
func (c Config) HasGaps() bool {
	for _, in := range c.Inputs() {
		if in == "" {
			return true
		}
	}
	return false
}

// WithoutGaps returns c with Bias and ChannelScale set wherever an input
// after them is present, so that Inputs has no empty name. The result
// computes the same function as c when the filled inputs hold their
// neutral values: zeros for B, ones for Alpha.
func (c Config) WithoutGaps() Config {
	if c.usesRhoInputs() {
		c.Bias, c.ChannelScale = true, true
	}
	if c.ChannelScale {
		c.Bias = true
	}
	return c
}

// FormalInputs returns the input names the function declares: those of
// Inputs with every absent position before the last present one named as
// well (ONNX Runtime rejects a function whose formal input is an empty
// name). A node passes the empty name for such an input, and the body
// never reads it.
func (c Config) FormalInputs() []string {
	all := []string{InputX, InputW, InputB, InputAlpha, InputRhoV, InputRhoScale}
	return all[:len(c.Inputs())]
}
