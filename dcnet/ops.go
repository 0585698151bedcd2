package dcnet

import "github.com/dcconvert/dcconvert/onnximport"

// Operator types of the default domain used in function bodies.
const (
	opAbs             = "Abs"
	opAcos            = "Acos"
	opAdd             = onnximport.OpAdd
	opClip            = onnximport.OpClip
	opConstant        = onnximport.OpConstant
	opConv            = onnximport.OpConv
	opDiv             = onnximport.OpDiv
	opIdentity        = onnximport.OpIdentity
	opLog             = "Log"
	opMul             = onnximport.OpMul
	opReduceMean      = "ReduceMean"
	opReduceSumSquare = "ReduceSumSquare"
	opRelu            = onnximport.OpRelu
	opSqrt            = "Sqrt"
	opSub             = onnximport.OpSub
	opTanh            = onnximport.OpTanh
	opTranspose       = "Transpose"
	opUnsqueeze       = onnximport.OpUnsqueeze
)

// Opsets of the default domain at which an operator changed the form the
// body relies on.
const (
	// clipInputsOpset is the first opset where Clip takes min and max as
	// inputs instead of attributes.
	clipInputsOpset = 11
	// unsqueezeInputOpset is the first opset where Unsqueeze takes axes as
	// an input instead of an attribute.
	unsqueezeInputOpset = 13
)

// Default-domain opsets Function builds bodies for.
const (
	MinOpset = 7
	MaxOpset = 17
)
