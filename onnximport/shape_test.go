package onnximport

import (
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

func inferOne(t *testing.T, opset int64, g *onnxpb.GraphProto) (Shapes, error) {
	t.Helper()
	m, err := ReadBytes(mustMarshal(model(opset, g)))
	if err != nil {
		t.Fatal(err)
	}
	return m.InferShapes()
}

func TestInferShapes(t *testing.T) {
	// Expected shapes are derived by hand from the ONNX operator
	// definitions.
	flatChain := func(opset int64) *onnxpb.GraphProto {
		unsq := node(OpUnsqueeze, "unsq", []string{"b"}, []string{"bu"}, intsAttr("axes", 0))
		inits := []*onnxpb.TensorProto{int64Tensor("zero", 0), int64Tensor("minus1", -1)}
		inits[0].Dims = nil // a scalar index, as exporters write it
		if opset >= 13 {
			unsq = node(OpUnsqueeze, "unsq", []string{"b", "axes"}, []string{"bu"})
			inits = append(inits, int64Tensor("axes", 0))
		}
		return &onnxpb.GraphProto{
			Node: []*onnxpb.NodeProto{
				node(OpShape, "shape", []string{"x"}, []string{"s"}),
				node(OpGather, "gather", []string{"s", "zero"}, []string{"b"}, intAttr("axis", 0)),
				unsq,
				node(OpConcat, "concat", []string{"bu", "minus1"}, []string{"target"}, intAttr("axis", 0)),
				node(OpReshape, "reshape", []string{"x", "target"}, []string{"y"}),
			},
			Initializer: inits,
			Input:       []*onnxpb.ValueInfoProto{valueInfo("x", -1, 512, 7, 7)},
			Output:      []*onnxpb.ValueInfoProto{valueInfo("y", -1, 25088)},
		}
	}
	window := func(attrs ...*onnxpb.AttributeProto) *onnxpb.GraphProto {
		return &onnxpb.GraphProto{
			Node:        []*onnxpb.NodeProto{node(OpConv, "conv", []string{"x", "w"}, []string{"y"}, attrs...)},
			Initializer: []*onnxpb.TensorProto{floatTensor("w", []int64{2, 3, 3, 3}, make([]float32, 54)...)},
			Input:       []*onnxpb.ValueInfoProto{valueInfo("x", -1, 3, 6, 5)},
			Output:      []*onnxpb.ValueInfoProto{valueInfo("y")},
		}
	}
	pool := func(op string, attrs ...*onnxpb.AttributeProto) *onnxpb.GraphProto {
		return &onnxpb.GraphProto{
			Node:   []*onnxpb.NodeProto{node(op, "pool", []string{"x"}, []string{"y"}, attrs...)},
			Input:  []*onnxpb.ValueInfoProto{valueInfo("x", 2, 3, 6, 7)},
			Output: []*onnxpb.ValueInfoProto{valueInfo("y")},
		}
	}
	binary := func(op string, a, b []int64, attrs ...*onnxpb.AttributeProto) *onnxpb.GraphProto {
		return &onnxpb.GraphProto{
			Node:   []*onnxpb.NodeProto{node(op, "op", []string{"a", "b"}, []string{"y"}, attrs...)},
			Input:  []*onnxpb.ValueInfoProto{valueInfo("a", a...), valueInfo("b", b...)},
			Output: []*onnxpb.ValueInfoProto{valueInfo("y")},
		}
	}
	cases := []struct {
		name  string
		opset int64
		g     *onnxpb.GraphProto
		want  map[string]string
	}{
		{"conv net", 13, convNet().Graph, map[string]string{"c": "[N,4,4,4]", "p": "[N,4,2,2]", "f": "[N,16]", "y": "[N,3]"}},
		{"reshape chain opset 9", 9, flatChain(9), map[string]string{"s": "[4]", "b": "[]", "bu": "[1]", "target": "[2]", "y": "[N,25088]"}},
		{"reshape chain opset 13", 13, flatChain(13), map[string]string{"y": "[N,25088]"}},
		// in 6x5, kernel 3: out = floor((in + pads - 3) / s) + 1.
		{"conv valid", 13, window(), map[string]string{"y": "[N,2,4,3]"}},
		{"conv pads stride", 13, window(intsAttr("pads", 1, 0, 2, 1), intsAttr("strides", 2, 2)), map[string]string{"y": "[N,2,4,2]"}},
		{"conv dilation", 13, window(intsAttr("dilations", 2, 1)), map[string]string{"y": "[N,2,2,3]"}},
		{"conv same upper", 13, window(strAttr("auto_pad", "SAME_UPPER"), intsAttr("strides", 2, 2)), map[string]string{"y": "[N,2,3,3]"}},
		{"conv auto valid", 13, window(strAttr("auto_pad", "VALID"), intsAttr("strides", 2, 2)), map[string]string{"y": "[N,2,2,2]"}},
		// 6x7, kernel 3, stride 2: floor((6-3)/2)+1 = 2, ceil 3; floor((7-3)/2)+1 = 3.
		{"maxpool floor", 13, pool(OpMaxPool, intsAttr("kernel_shape", 3, 3), intsAttr("strides", 2, 2)), map[string]string{"y": "[2,3,2,3]"}},
		{"maxpool ceil", 13, pool(OpMaxPool, intsAttr("kernel_shape", 3, 3), intsAttr("strides", 2, 2), intAttr("ceil_mode", 1)), map[string]string{"y": "[2,3,3,3]"}},
		{"avgpool pads", 13, pool(OpAveragePool, intsAttr("kernel_shape", 2, 2), intsAttr("pads", 1, 1, 1, 1), intsAttr("strides", 2, 2)), map[string]string{"y": "[2,3,4,4]"}},
		{"global pool", 13, pool(OpGlobalAveragePool), map[string]string{"y": "[2,3,1,1]"}},
		{"flatten axis 2", 13, pool(OpFlatten, intAttr("axis", 2)), map[string]string{"y": "[6,42]"}},
		{"flatten axis 0", 13, pool(OpFlatten, intAttr("axis", 0)), map[string]string{"y": "[1,252]"}},
		{"add broadcast", 13, binary(OpAdd, []int64{-1, 3, 1, 5}, []int64{4, 1}), map[string]string{"y": "[N,3,4,5]"}},
		{"gemm trans", 13, binary(OpGemm, []int64{5, -1}, []int64{7, 5}, intAttr("transA", 1), intAttr("transB", 1)), map[string]string{"y": "[N,7]"}},
		{"matmul batched", 13, binary(OpMatMul, []int64{2, 1, 3, 4}, []int64{5, 4, 6}), map[string]string{"y": "[2,5,3,6]"}},
		{"matmul vector", 13, binary(OpMatMul, []int64{4}, []int64{4, 6}), map[string]string{"y": "[6]"}},
		{"concat", 13, binary(OpConcat, []int64{-1, 3, 4}, []int64{-1, 5, 4}, intAttr("axis", -2)), map[string]string{"y": "[N,8,4]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			shapes, err := inferOne(t, c.opset, c.g)
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range c.want {
				if got := shapes[name].String(); got != want {
					t.Errorf("shape of %q = %s, want %s", name, got, want)
				}
			}
		})
	}
}

func TestInferShapesErrors(t *testing.T) {
	g := convNet().Graph
	g.Node = append(g.Node[:1], append([]*onnxpb.NodeProto{node("Erf", "erf", []string{"c"}, []string{"e"})}, g.Node[1:]...)...)
	g.Node[2].Input[0] = "e"
	_, err := inferOne(t, 13, g)
	if err == nil || !strings.Contains(err.Error(), `node "erf" (Erf): shape inference does not support this operator`) {
		t.Errorf("error = %v, want the unsupported Erf node named", err)
	}
	// Only the root cause is reported, not every node after it.
	if strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("error reports more than the unsupported node: %v", err)
	}

	bad := convNet()
	bad.Graph.Initializer[0].Dims = []int64{4, 2, 3, 3}
	bad.Graph.Initializer[0].RawData = append(bad.Graph.Initializer[0].RawData, bad.Graph.Initializer[0].RawData...)
	_, err = inferOne(t, 13, bad.Graph)
	if err == nil || !strings.Contains(err.Error(), `node "conv" (Conv): input has 1 channels, weight [4,2,3,3] with group 1 expects 2`) {
		t.Errorf("error = %v, want a channel mismatch", err)
	}
}
