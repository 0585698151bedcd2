package onnximport

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

func TestReadBytesValid(t *testing.T) {
	b := mustMarshal(convNet())
	m, err := ReadBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, b) {
		t.Error("encoding an unchanged model changed its bytes")
	}
	if got := m.Opset(""); got != 13 {
		t.Errorf("Opset(\"\") = %d, want 13", got)
	}
	if got := m.Opset("ai.onnx"); got != 13 {
		t.Errorf("Opset(\"ai.onnx\") = %d, want 13", got)
	}
}

// TestReadBadInput feeds malformed models to ReadBytes: each must give one
// clear error mentioning what is wrong, and never panic.
func TestReadBadInput(t *testing.T) {
	valid := mustMarshal(convNet())
	edit := func(f func(m *onnxpb.ModelProto)) []byte {
		m := convNet()
		f(m)
		return mustMarshal(m)
	}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "file is empty"},
		{"truncated", valid[:len(valid)/2], "not an ONNX model"},
		{"random bytes", []byte("\xff\xfe\x00 this is not a protobuf at all \x07\x08"), "not an ONNX model"},
		{"other protobuf", mustMarshal(floatTensor("t", []int64{2}, 1, 2)), "not an ONNX model"},
		{"text", []byte("ir_version: 8\ngraph { }\n"), "not an ONNX model"},
		{"no graph", edit(func(m *onnxpb.ModelProto) { m.Graph = nil }), "model has no graph"},
		{"empty graph", edit(func(m *onnxpb.ModelProto) { m.Graph.Node = nil }), "graph has no nodes"},
		{"no outputs", edit(func(m *onnxpb.ModelProto) { m.Graph.Output = nil }), "graph has no outputs"},
		{"old IR", edit(func(m *onnxpb.ModelProto) { m.IrVersion = proto.Int64(2) }), "IR version 2 is not supported"},
		{"no opset", edit(func(m *onnxpb.ModelProto) { m.OpsetImport = nil }), "imports no default-domain operator set"},
		{"opset too old", edit(func(m *onnxpb.ModelProto) { m.OpsetImport[0].Version = proto.Int64(6) }), "opset 6 is not supported (7 to 21 are)"},
		{"opset too new", edit(func(m *onnxpb.ModelProto) { m.OpsetImport[0].Version = proto.Int64(22) }), "opset 22 is not supported"},
		{"opset twice", edit(func(m *onnxpb.ModelProto) {
			m.OpsetImport = append(m.OpsetImport, &onnxpb.OperatorSetIdProto{Domain: proto.String("ai.onnx"), Version: proto.Int64(13)})
		}), `operator set "ai.onnx" is imported twice`},
		{"dangling input", edit(func(m *onnxpb.ModelProto) { m.Graph.Node[1].Input[0] = "nowhere" }), `node "relu" (Relu): input "nowhere" is not defined`},
		{"output twice", edit(func(m *onnxpb.ModelProto) { m.Graph.Node[1].Output[0] = "c" }), `node "relu" (Relu): output "c" is also produced by node "conv" (Conv)`},
		{"output shadows initializer", edit(func(m *onnxpb.ModelProto) { m.Graph.Node[1].Output[0] = "w" }), `output "w" is also a graph input or initializer`},
		{"graph output undefined", edit(func(m *onnxpb.ModelProto) { m.Graph.Output[0].Name = proto.String("z") }), `graph output "z" is not produced by any node`},
		{"not topological", edit(func(m *onnxpb.ModelProto) {
			n := m.Graph.Node
			n[0], n[1] = n[1], n[0]
		}), `nodes are not in topological order: node "relu" (Relu) uses "c" before node "conv" (Conv) produces it`},
		{"cycle", edit(func(m *onnxpb.ModelProto) { m.Graph.Node[0].Input[0] = "r" }), "the graph has a cycle through node \"conv\" (Conv)"},
		{"self loop", edit(func(m *onnxpb.ModelProto) { m.Graph.Node[1].Input[0] = "r" }), "cycle through node \"relu\""},
		{"negative dim", edit(func(m *onnxpb.ModelProto) { m.Graph.Initializer[1].Dims = []int64{-4} }), `tensor "b": dimension -4 is negative`},
		{"absurd dims", edit(func(m *onnxpb.ModelProto) { m.Graph.Initializer[1].Dims = []int64{1 << 20, 1 << 20} }), `tensor "b": holds 16 bytes of FLOAT data for dimensions [1048576 1048576]`},
		{"overflowing dims", edit(func(m *onnxpb.ModelProto) { m.Graph.Initializer[1].Dims = []int64{1 << 40, 1 << 40, 1 << 40} }), "describe too many elements"},
		{"short data", edit(func(m *onnxpb.ModelProto) { m.Graph.Initializer[1].Dims = []int64{5} }), `tensor "b": holds 16 bytes of FLOAT data for dimensions [5] (5 elements)`},
		{"typed data count", edit(func(m *onnxpb.ModelProto) {
			m.Graph.Initializer = append(m.Graph.Initializer, int64Tensor("s", 1, 2))
			m.Graph.Initializer[4].Dims = []int64{3}
		}), `tensor "s": holds 2 values for dimensions [3]`},
		{"undefined type", edit(func(m *onnxpb.ModelProto) { m.Graph.Initializer[1].DataType = proto.Int32(0) }), `tensor "b": data type is undefined`},
		{"unknown type", edit(func(m *onnxpb.ModelProto) { m.Graph.Initializer[1].DataType = proto.Int32(99) }), `data type 99 is not an ONNX data type`},
		{"domain not imported", edit(func(m *onnxpb.ModelProto) { m.Graph.Node[1].Domain = proto.String("com.example") }), `domain "com.example" is not imported`},
		{"external data in memory", edit(func(m *onnxpb.ModelProto) {
			externalize(m.Graph.Initializer[1], "w.bin", "0", "16")
		}), "the model was not read from a file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ReadBytes(tc.b)
			if err == nil {
				t.Fatalf("ReadBytes succeeded, want an error containing %q", tc.want)
			}
			if m != nil {
				t.Error("ReadBytes returned a model along with an error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestReadFileNamesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "broken.onnx")
	if err := os.WriteFile(path, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(path)
	if err == nil || !strings.HasPrefix(err.Error(), "reading "+path+": ") {
		t.Errorf("error %v does not start with the file name", err)
	}
	_, err = ReadFile(filepath.Join(dir, "missing.onnx"))
	if err == nil || !strings.Contains(err.Error(), "missing.onnx") {
		t.Errorf("error %v does not name the missing file", err)
	}
}

// externalize moves a tensor's raw data to an external data reference.
func externalize(t *onnxpb.TensorProto, kv ...string) {
	t.RawData = nil
	t.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
	keys := []string{"location", "offset", "length"}
	for i, v := range kv {
		t.ExternalData = append(t.ExternalData, &onnxpb.StringStringEntryProto{Key: proto.String(keys[i]), Value: proto.String(v)})
	}
}

func TestExternalData(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	data := append([]byte("padding!"), floatTensor("b", []int64{4}, 1, 2, 3, 4).RawData...)
	if err := os.WriteFile(filepath.Join(dir, "weights.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret.bin"), filepath.Join(dir, "link.bin")); err != nil {
		t.Fatal(err)
	}
	write := func(kv ...string) string {
		m := convNet()
		externalize(m.Graph.Initializer[1], kv...)
		path := filepath.Join(dir, "model.onnx")
		if err := os.WriteFile(path, mustMarshal(m), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}

	t.Run("valid", func(t *testing.T) {
		m, err := ReadFile(write("weights.bin", "8", "16"))
		if err != nil {
			t.Fatal(err)
		}
		init, _ := m.Initializer("b")
		v, err := m.Tensor(init)
		if err != nil {
			t.Fatal(err)
		}
		if want := []float32{1, 2, 3, 4}; !equalFloats(v.Float, want, 0) {
			t.Errorf("decoded %v, want %v", v.Float, want)
		}
	})
	t.Run("to end of file", func(t *testing.T) {
		if _, err := ReadFile(write("weights.bin", "8")); err != nil {
			t.Fatal(err)
		}
	})
	bad := []struct {
		name string
		kv   []string
		want string
	}{
		{"absolute", []string{filepath.Join(dir, "weights.bin")}, "is absolute"},
		{"escapes", []string{"../" + filepath.Base(outside) + "/secret.bin"}, "leads outside the model's directory"},
		{"symlink escapes", []string{"link.bin", "8", "16"}, "leads outside the model's directory"},
		{"missing file", []string{"nope.bin"}, "nope.bin"},
		{"past end", []string{"weights.bin", "8", "17"}, "reaches past the end"},
		{"offset past end", []string{"weights.bin", "100"}, "past the end"},
		{"bad offset", []string{"weights.bin", "-1"}, "not a non-negative integer"},
		{"wrong length", []string{"weights.bin", "0", "8"}, "holds 8 bytes of FLOAT data for dimensions [4]"},
		{"no location", []string{""}, "has no location"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			path := write(tc.kv...)
			_, err := ReadFile(path)
			if err == nil {
				t.Fatalf("ReadFile succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file and contain %q", err, tc.want)
			}
		})
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	m, err := ReadBytes(mustMarshal(convNet()))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "out.onnx")
	if err := m.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	back, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(back.Proto, m.Proto) {
		t.Error("model read back differs from the model written")
	}
	// A failed write leaves neither the target nor a temporary file.
	err = m.WriteFile(filepath.Join(dir, "no-such-dir", "out.onnx"))
	if err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after a failed write, want 1", len(entries))
	}
}

// equalFloats compares two slices elementwise with an absolute tolerance.
func equalFloats(a, b []float32, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		if d > tol || d < -tol {
			return false
		}
	}
	return true
}
