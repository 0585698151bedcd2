package onnximport

import (
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// Helpers that build small models by hand for tests.

func node(op, name string, ins, outs []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(name), Input: ins, Output: outs, Attribute: attrs}
}

func intsAttr(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func strAttr(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

// valueInfo declares a float tensor; a negative dim becomes the symbol N.
func valueInfo(name string, dims ...int64) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if d < 0 {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "N"}
		} else {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{
		Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Shape: shape}}}}
}

// floatTensor stores values as little-endian raw data.
func floatTensor(name string, dims []int64, v ...float32) *onnxpb.TensorProto {
	return FloatTensor(name, dims, v)
}

func int64Tensor(name string, v ...int64) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: []int64{int64(len(v))},
		DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: v}
}

// model wraps a graph into a model at the given default-domain opset.
func model(opset int64, g *onnxpb.GraphProto) *onnxpb.ModelProto {
	if g.Name == nil {
		g.Name = proto.String("g")
	}
	return &onnxpb.ModelProto{IrVersion: proto.Int64(8), ProducerName: proto.String("test"),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opset)}},
		Graph:       g}
}

// convNet is a small valid model: Conv, Relu, MaxPool, Flatten, Gemm with
// a symbolic batch dimension.
func convNet() *onnxpb.ModelProto {
	w := make([]float32, 4*1*3*3)
	for i := range w {
		w[i] = float32(i) / 10
	}
	fc := make([]float32, 3*16)
	return model(13, &onnxpb.GraphProto{
		Node: []*onnxpb.NodeProto{
			node(OpConv, "conv", []string{"x", "w", "b"}, []string{"c"}, intsAttr("pads", 1, 1, 1, 1)),
			node(OpRelu, "relu", []string{"c"}, []string{"r"}),
			node(OpMaxPool, "pool", []string{"r"}, []string{"p"}, intsAttr("kernel_shape", 2, 2), intsAttr("strides", 2, 2)),
			node(OpFlatten, "flat", []string{"p"}, []string{"f"}),
			node(OpGemm, "fc", []string{"f", "fw", "fb"}, []string{"y"}, intAttr("transB", 1)),
		},
		Initializer: []*onnxpb.TensorProto{
			floatTensor("w", []int64{4, 1, 3, 3}, w...),
			floatTensor("b", []int64{4}, 1, 2, 3, 4),
			floatTensor("fw", []int64{3, 16}, fc...),
			floatTensor("fb", []int64{3}, 0, 0, 0),
		},
		Input:  []*onnxpb.ValueInfoProto{valueInfo("x", -1, 1, 4, 4)},
		Output: []*onnxpb.ValueInfoProto{valueInfo("y", -1, 3)},
	})
}

func mustMarshal(m proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
