package onnximport

import (
	"strings"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// The domain and op-type prefix of decoupled convolutions (package dcnet
// owns their definition). Shape inference gives them a Conv's geometry;
// readers recognise any op type that starts with the prefix.
const (
	DecoupledDomain   = "ai.dcnet"
	DecoupledOpPrefix = "DecoupledConv"
)

// IsDecoupledConv reports whether n is a decoupled convolution.
func IsDecoupledConv(n *onnxpb.NodeProto) bool {
	return n.GetDomain() == DecoupledDomain && strings.HasPrefix(n.GetOpType(), DecoupledOpPrefix)
}

// Operator types of the default domain that dcconvert handles by name.
const (
	OpAbs                = "Abs"
	OpAcos               = "Acos"
	OpAdd                = "Add"
	OpAveragePool        = "AveragePool"
	OpBatchNormalization = "BatchNormalization"
	OpCast               = "Cast"
	OpClip               = "Clip"
	OpConcat             = "Concat"
	OpConstant           = "Constant"
	OpConstantOfShape    = "ConstantOfShape"
	OpConv               = "Conv"
	OpDiv                = "Div"
	OpDropout            = "Dropout"
	OpExp                = "Exp"
	OpFlatten            = "Flatten"
	OpGather             = "Gather"
	OpGemm               = "Gemm"
	OpGlobalAveragePool  = "GlobalAveragePool"
	OpIdentity           = "Identity"
	OpLeakyRelu          = "LeakyRelu"
	OpLog                = "Log"
	OpLogSoftmax         = "LogSoftmax"
	OpMatMul             = "MatMul"
	OpMaxPool            = "MaxPool"
	OpMul                = "Mul"
	OpNeg                = "Neg"
	OpReciprocal         = "Reciprocal"
	OpReduceMean         = "ReduceMean"
	OpReduceSum          = "ReduceSum"
	OpReduceSumSquare    = "ReduceSumSquare"
	OpRelu               = "Relu"
	OpReshape            = "Reshape"
	OpShape              = "Shape"
	OpSigmoid            = "Sigmoid"
	OpSoftmax            = "Softmax"
	OpSqrt               = "Sqrt"
	OpSqueeze            = "Squeeze"
	OpSub                = "Sub"
	OpTanh               = "Tanh"
	OpTranspose          = "Transpose"
	OpUnsqueeze          = "Unsqueeze"
)
