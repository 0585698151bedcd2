package peer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// exact is the tolerance for results computed exactly in float32.
var exact = tolerance{abs: 1e-6, rel: 1e-6}

func TestRunTinyModels(t *testing.T) {
	rt := ORT(t)
	tests := []struct {
		name   string
		graph  *onnxpb.GraphProto
		inputs map[string]Tensor
		want   map[string]Tensor
	}{
		{
			name: "relu",
			graph: &onnxpb.GraphProto{
				Node:   []*onnxpb.NodeProto{node(opRelu, "relu", []string{"x"}, []string{"y"})},
				Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(2, 3))},
				Output: []*onnxpb.ValueInfoProto{floatValue("y", dims(2, 3))},
			},
			inputs: map[string]Tensor{"x": {Dims: []int64{2, 3}, Data: []float32{-1, 0, 2, -3.5, 4, 0.25}}},
			want:   map[string]Tensor{"y": {Dims: []int64{2, 3}, Data: []float32{0, 0, 2, 0, 4, 0.25}}},
		},
		{
			name: "add initializer over symbolic batch",
			graph: &onnxpb.GraphProto{
				Node:        []*onnxpb.NodeProto{node(opAdd, "add", []string{"x", "b"}, []string{"y"})},
				Initializer: []*onnxpb.TensorProto{floatInit("b", []int64{3}, 10, 20, 30)},
				Input:       []*onnxpb.ValueInfoProto{floatValue("x", []dim{{param: "batch"}, {value: 3}})},
				Output:      []*onnxpb.ValueInfoProto{floatValue("y", []dim{{param: "batch"}, {value: 3}})},
			},
			inputs: map[string]Tensor{"x": {Dims: []int64{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}}},
			want:   map[string]Tensor{"y": {Dims: []int64{2, 3}, Data: []float32{11, 22, 33, 14, 25, 36}}},
		},
		{
			name: "two inputs two outputs",
			graph: &onnxpb.GraphProto{
				Node: []*onnxpb.NodeProto{
					node(opAdd, "add", []string{"a", "b"}, []string{"sum"}),
					node(opMul, "mul", []string{"a", "b"}, []string{"prod"}),
				},
				Input:  []*onnxpb.ValueInfoProto{floatValue("a", dims(2, 2)), floatValue("b", dims(2, 2))},
				Output: []*onnxpb.ValueInfoProto{floatValue("sum", dims(2, 2)), floatValue("prod", dims(2, 2))},
			},
			inputs: map[string]Tensor{
				"a": {Dims: []int64{2, 2}, Data: []float32{1, -2, 3, 0.5}},
				"b": {Dims: []int64{2, 2}, Data: []float32{4, 5, -6, 8}},
			},
			want: map[string]Tensor{
				"sum":  {Dims: []int64{2, 2}, Data: []float32{5, 3, -3, 8.5}},
				"prod": {Dims: []int64{2, 2}, Data: []float32{4, -10, -18, 4}},
			},
		},
		{
			// 3x3 input 1..9, 2x2 kernel [1 0; 0 -1], bias 0.5, no padding:
			// each output is x[i][j] - x[i+1][j+1] + 0.5 = -4 + 0.5.
			name: "conv 2x2",
			graph: &onnxpb.GraphProto{
				Node: []*onnxpb.NodeProto{node(opConv, "conv", []string{"x", "w", "bias"}, []string{"y"},
					intsAttr("kernel_shape", 2, 2), intsAttr("pads", 0, 0, 0, 0))},
				Initializer: []*onnxpb.TensorProto{
					floatInit("w", []int64{1, 1, 2, 2}, 1, 0, 0, -1),
					floatInit("bias", []int64{1}, 0.5),
				},
				Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(1, 1, 3, 3))},
				Output: []*onnxpb.ValueInfoProto{floatValue("y", dims(1, 1, 2, 2))},
			},
			inputs: map[string]Tensor{"x": {Dims: []int64{1, 1, 3, 3}, Data: []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}}},
			want:   map[string]Tensor{"y": {Dims: []int64{1, 1, 2, 2}, Data: []float32{-3.5, -3.5, -3.5, -3.5}}},
		},
	}
	dir := t.TempDir()
	checked := 0
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeModel(t, dir, fmt.Sprintf("model%d.onnx", i), graphModel(tt.graph))
			CheckModel(t, path)
			got, err := rt.Run(path, tt.inputs)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d outputs, want %d", len(got), len(tt.want))
			}
			for name, want := range tt.want {
				g, ok := got[name]
				if !ok {
					t.Errorf("output %q missing", name)
					continue
				}
				if _, err := compareTensor(g, want, exact); err != nil {
					t.Errorf("output %q: %v", name, err)
				}
			}
			checked++
		})
	}
	t.Logf("checked %d hand-computed cases against ONNX Runtime", checked)
}

func TestRunErrors(t *testing.T) {
	rt := ORT(t)
	dir := t.TempDir()
	relu := writeModel(t, dir, "relu.onnx", graphModel(&onnxpb.GraphProto{
		Node:   []*onnxpb.NodeProto{node(opRelu, "relu", []string{"x"}, []string{"y"})},
		Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(2, 3))},
		Output: []*onnxpb.ValueInfoProto{floatValue("y", dims(2, 3))},
	}))
	unknownOp := writeModel(t, dir, "unknown_op.onnx", graphModel(&onnxpb.GraphProto{
		Node:   []*onnxpb.NodeProto{node("NoSuchOp", "bad", []string{"x"}, []string{"y"})},
		Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(2, 3))},
		Output: []*onnxpb.ValueInfoProto{floatValue("y", dims(2, 3))},
	}))
	garbage := filepath.Join(dir, "garbage.onnx")
	if err := os.WriteFile(garbage, []byte("this is not a protobuf\xff\xff\xff"), 0o644); err != nil {
		t.Fatal(err)
	}
	x := Tensor{Dims: []int64{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}}

	tests := []struct {
		name   string
		model  string
		inputs map[string]Tensor
		want   string // a substring of the error, lowercase
	}{
		{name: "unknown op", model: unknownOp, inputs: map[string]Tensor{"x": x}, want: "nosuchop"},
		{name: "not a protobuf", model: garbage, inputs: map[string]Tensor{"x": x}, want: "garbage.onnx"},
		{name: "missing file", model: filepath.Join(dir, "absent.onnx"), inputs: map[string]Tensor{"x": x}, want: "absent.onnx"},
		{name: "wrong input name", model: relu, inputs: map[string]Tensor{"z": x}, want: "missing in 'feeds'"},
		{name: "wrong rank", model: relu, inputs: map[string]Tensor{"x": {Dims: []int64{6}, Data: x.Data}}, want: "rank"},
		{name: "data does not fit shape", model: relu, inputs: map[string]Tensor{"x": {Dims: []int64{2, 2}, Data: x.Data}}, want: "holds 4 values"},
	}
	checked := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rt.Run(tt.model, tt.inputs)
			if err == nil {
				t.Fatal("Run succeeded, want an error")
			}
			if !strings.Contains(strings.ToLower(err.Error()), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			t.Logf("error: %v", err)
			checked++
		})
	}
	t.Logf("checked %d failing cases against ONNX Runtime", checked)
}
