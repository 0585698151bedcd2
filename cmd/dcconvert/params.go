package main

import (
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// floatParameters counts the elements of g's floating-point initializers
// from their dimensions, without decoding their data. This is the
// parameter count both inspect and models report; it includes
// BatchNormalization running statistics.
func floatParameters(g *onnxpb.GraphProto) int64 {
	var n int64
	for _, t := range g.GetInitializer() {
		if onnximport.IsFloatType(onnxpb.TensorProto_DataType(t.GetDataType())) {
			k, _ := Shape(onnximport.ShapeOf(t.GetDims()...)).elements()
			n += k
		}
	}
	return n
}
