package rewrite

import (
	"fmt"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Problems returns why node n of m cannot be rewritten into a decoupled
// convolution, or nothing when it can: it must be a default-domain Conv
// with group 1 whose weight is a 4-D float32 initializer. shapes may be
// nil.
func Problems(m *onnximport.Model, n *onnxpb.NodeProto) []string {
	if onnximport.IsDecoupledConv(n) {
		return []string{"already decoupled"}
	}
	if !onnximport.IsDefaultDomain(n.GetDomain()) || n.GetOpType() != onnximport.OpConv {
		return []string{fmt.Sprintf("%s is not a Conv", n.GetOpType())}
	}
	var out []string
	if g := onnximport.AttrInt(n, "group", 1); g != 1 {
		out = append(out, fmt.Sprintf("group %d (grouped and depthwise convolutions stay plain)", g))
	}
	in := n.GetInput()
	if len(in) < 2 || in[1] == "" {
		return append(out, "the weight input is missing")
	}
	w, ok := m.Initializer(in[1])
	if !ok {
		for _, gi := range m.Graph().GetInput() {
			if gi.GetName() == in[1] {
				return append(out, fmt.Sprintf("weight %q is a graph input, not an initializer", in[1]))
			}
		}
		return append(out, fmt.Sprintf("weight %q is computed, not an initializer", in[1]))
	}
	if dt := onnxpb.TensorProto_DataType(w.GetDataType()); dt != onnxpb.TensorProto_FLOAT {
		out = append(out, fmt.Sprintf("weight %q is %s (only float32 convolutions are rewritten)", in[1], dt))
	}
	switch d := len(w.GetDims()); {
	case d >= 3 && d != 4:
		out = append(out, fmt.Sprintf("%d-D convolution (only 2-D convolutions are rewritten)", d-2))
	case d < 3:
		out = append(out, fmt.Sprintf("weight %q has rank %d", in[1], d))
	}
	return out
}
