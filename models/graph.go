package models

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// ONNX operator types the builders emit.
const (
	opAdd                = "Add"
	opAveragePool        = "AveragePool"
	opBatchNormalization = "BatchNormalization"
	opConv               = "Conv"
	opDropout            = "Dropout"
	opFlatten            = "Flatten"
	opGemm               = "Gemm"
	opGlobalAveragePool  = "GlobalAveragePool"
	opMaxPool            = "MaxPool"
	opRelu               = "Relu"
)

// Names of the graph's input and output, and of its symbolic batch dimension.
const (
	inputName  = "input"
	outputName = "output"
	batchDim   = "batch_size"
)

// BatchNormalization attributes, in ONNX terms: ONNX's momentum is the weight
// of the old running statistic, so torch's default momentum 0.1 is 0.9 here.
const (
	bnEpsilon  = 1e-5
	bnMomentum = 0.9
)

// fillKind says how a parameter tensor is initialised.
type fillKind int

const (
	fillZeros  fillKind = iota // every element 0
	fillOnes                   // every element 1
	fillNormal                 // normal(0, std), from the tensor's own random stream
)

// param is an initializer whose values are filled in after the graph is laid out.
type param struct {
	name string
	dims []int64
	kind fillKind
	std  float64
}

// size is the number of elements of p.
func (p *param) size() int64 {
	n := int64(1)
	for _, d := range p.dims {
		n *= d
	}
	return n
}

// graph collects nodes and parameters in the order a torch export lists them.
type graph struct {
	opset  int64
	nodes  []*onnxpb.NodeProto
	params []*param
	used   map[string]bool // node names already taken
	shrunk string          // where the feature map first lost all rows or columns, if it did
}

func newGraph(opset int64) *graph {
	return &graph{opset: opset, used: map[string]bool{}}
}

// param declares an initializer and returns its name.
func (g *graph) param(name string, kind fillKind, std float64, dims ...int64) string {
	g.params = append(g.params, &param{name: name, dims: dims, kind: kind, std: std})
	return name
}

// node appends a node of type op belonging to the module at path (a torch
// state_dict prefix such as "features.0" or "layer1.0.conv1"; "" for the
// top level) and returns the name of its single output.
//
// Nodes are named as torch 1.13+ exports name them: the module path becomes
// a scope ("layer2.0.downsample.0" -> "/layer2/layer2.0/downsample/downsample.0"),
// followed by the op type, e.g. "/layer2/layer2.0/downsample/downsample.0/Conv".
// A module used twice gets "_1", "_2", ... on its last scope component, as
// torch does for a ReLU module called twice ("/layer1/layer1.0/relu_1/Relu").
// The output is the node name followed by "_output_0".
func (g *graph) node(path, op string, inputs []string, attrs ...*onnxpb.AttributeProto) string {
	scope := scopeOf(path)
	name := nodeName(scope, op)
	for i := 1; g.used[name]; i++ {
		s := append([]string(nil), scope...)
		s[len(s)-1] += "_" + strconv.Itoa(i)
		name = nodeName(s, op)
	}
	g.used[name] = true
	out := name + "_output_0"
	g.nodes = append(g.nodes, &onnxpb.NodeProto{
		Name:      proto.String(name),
		OpType:    proto.String(op),
		Input:     inputs,
		Output:    []string{out},
		Attribute: attrs,
	})
	return out
}

// renameOutput renames the value old, produced by the last node, to name.
func (g *graph) renameOutput(old, name string) {
	last := g.nodes[len(g.nodes)-1]
	for i, o := range last.Output {
		if o == old {
			last.Output[i] = name
		}
	}
}

// scopeOf turns a module path into torch's scope components: a numeric
// component (a Sequential index) is written with its parent's name in front.
func scopeOf(path string) []string {
	if path == "" {
		return nil
	}
	parts := strings.Split(path, ".")
	var scope []string
	for i, p := range parts {
		if _, err := strconv.Atoi(p); err == nil && i > 0 {
			scope = append(scope, parts[i-1]+"."+p)
			continue
		}
		scope = append(scope, p)
	}
	return scope
}

func nodeName(scope []string, op string) string {
	if len(scope) == 0 {
		return "/" + op
	}
	return "/" + strings.Join(scope, "/") + "/" + op
}

func attrInt(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{
		Name: proto.String(name),
		Type: onnxpb.AttributeProto_INT.Enum(),
		I:    proto.Int64(v),
	}
}

func attrInts(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{
		Name: proto.String(name),
		Type: onnxpb.AttributeProto_INTS.Enum(),
		Ints: v,
	}
}

func attrFloat(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{
		Name: proto.String(name),
		Type: onnxpb.AttributeProto_FLOAT.Enum(),
		F:    proto.Float32(v),
	}
}

// tensorType is the ValueInfoProto type of a float tensor; a dimension of -1
// is the symbolic batch dimension.
func tensorType(dims ...int64) *onnxpb.TypeProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if d < 0 {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: batchDim}
		} else {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.TypeProto{
		Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape:    shape,
		}},
	}
}

func valueInfo(name string, dims ...int64) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: tensorType(dims...)}
}
