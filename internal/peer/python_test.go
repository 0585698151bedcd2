package peer

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

func TestMissingPeer(t *testing.T) {
	const module = "dcconvert_no_such_module"
	tests := []struct {
		name        string
		require     string
		wantSkipped bool
		wantFailed  bool
	}{
		{name: "skips by default", require: "", wantSkipped: true},
		{name: "fails when peers are required", require: "1", wantFailed: true},
		{name: "skips for other values", require: "0", wantSkipped: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(requireEnv, tt.require)
			s := runStub(t, func(tb testing.TB) { Python(tb, module) })
			if s.skipped != tt.wantSkipped || s.failed != tt.wantFailed {
				t.Errorf("skipped %v, failed %v; want %v, %v", s.skipped, s.failed, tt.wantSkipped, tt.wantFailed)
			}
			if !strings.Contains(s.msg, "python3-"+module) {
				t.Errorf("message %q does not name the package to install", s.msg)
			}
		})
	}
}

func TestCheckModel(t *testing.T) {
	Python(t, "onnx")
	dir := t.TempDir()
	tests := []struct {
		name       string
		graph      *onnxpb.GraphProto
		wantReject string // a substring of the checker's message; "" to accept
	}{
		{
			name: "relu",
			graph: &onnxpb.GraphProto{
				Node:   []*onnxpb.NodeProto{node(opRelu, "relu", []string{"x"}, []string{"y"})},
				Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(2, 3))},
				Output: []*onnxpb.ValueInfoProto{floatValue("y", dims(2, 3))},
			},
		},
		{
			name: "unknown op",
			graph: &onnxpb.GraphProto{
				Node:   []*onnxpb.NodeProto{node("NoSuchOp", "bad", []string{"x"}, []string{"y"})},
				Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(2, 3))},
				Output: []*onnxpb.ValueInfoProto{floatValue("y", dims(2, 3))},
			},
			wantReject: "NoSuchOp",
		},
		{
			// Only the full check's strict shape inference sees this: the
			// declared output shape contradicts Relu's.
			name: "output shape contradicts inference",
			graph: &onnxpb.GraphProto{
				Node:   []*onnxpb.NodeProto{node(opRelu, "relu", []string{"x"}, []string{"y"})},
				Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(2, 3))},
				Output: []*onnxpb.ValueInfoProto{floatValue("y", dims(3, 2))},
			},
			wantReject: "Inferred shape and existing shape differ",
		},
		{
			name: "undefined input",
			graph: &onnxpb.GraphProto{
				Node:   []*onnxpb.NodeProto{node(opRelu, "relu", []string{"nowhere"}, []string{"y"})},
				Input:  []*onnxpb.ValueInfoProto{floatValue("x", dims(2, 3))},
				Output: []*onnxpb.ValueInfoProto{floatValue("y", dims(2, 3))},
			},
			wantReject: "nowhere",
		},
	}
	checked := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeModel(t, dir, strings.ReplaceAll(tt.name, " ", "_")+".onnx", graphModel(tt.graph))
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			s := runStub(t, func(tb testing.TB) { CheckModel(tb, path) })
			switch {
			case s.skipped:
				t.Fatalf("CheckModel skipped: %s", s.msg)
			case tt.wantReject == "" && s.failed:
				t.Errorf("CheckModel rejected a valid model: %s", s.msg)
			case tt.wantReject != "" && !s.failed:
				t.Errorf("CheckModel accepted the model, want a rejection mentioning %q", tt.wantReject)
			case tt.wantReject != "" && !strings.Contains(s.msg, tt.wantReject):
				t.Errorf("rejection %q does not mention %q", s.msg, tt.wantReject)
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("CheckModel changed %s (%d bytes, was %d)", path, len(after), len(before))
			}
			checked++
		})
	}
	t.Logf("checked %d cases against the onnx checker", checked)
}
