package onnximport

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzRead feeds arbitrary bytes to ReadBytes. Nothing may panic; a model
// that is accepted must survive encode -> decode -> encode unchanged, and
// shape inference and tensor decoding must not panic on it.
func FuzzRead(f *testing.F) {
	f.Add(mustMarshal(convNet()))
	seeds, _ := filepath.Glob("../testdata/foreign/*/model.onnx")
	for _, name := range []string{"test_conv_with_strides_padding", "test_maxpool_2d_ceil", "test_reshape_negative_dim",
		"test_gemm_all_attributes", "test_batchnorm_example", "test_flatten_axis0", "test_concat_2d_axis_0"} {
		seeds = append(seeds, filepath.Join(conformanceDir, "node", name, "model.onnx"))
	}
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ReadBytes(b)
		if err != nil {
			if m != nil {
				t.Fatal("ReadBytes returned a model with an error")
			}
			return
		}
		first, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		again, err := Decode(first)
		if err != nil {
			t.Fatalf("decoding an encoded model: %v", err)
		}
		second, err := again.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatal("encode -> decode -> encode changed the bytes")
		}
		m.InferShapes()
		for _, init := range m.Graph().GetInitializer() {
			m.Tensor(init)
		}
	})
}
