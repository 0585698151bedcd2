package onnximport

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestForeignFixtures reads the models PyTorch exported into
// testdata/foreign (see its README): each must pass Check, write back byte
// for byte, and have its output shape inferred as the recorded output's
// shape with the batch dimension left symbolic.
func TestForeignFixtures(t *testing.T) {
	paths, _ := filepath.Glob("../testdata/foreign/*/model.onnx")
	if len(paths) == 0 {
		t.Fatal("no fixtures under ../testdata/foreign")
	}
	for _, path := range paths {
		dir := filepath.Dir(path)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			m, err := ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(path)
			out, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, b) {
				t.Error("written model differs from the file")
			}
			shapes, err := m.InferShapes()
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range m.Graph().GetOutput() {
				if got := shapes[o.GetName()]; len(got) == 0 || got[0].Known() {
					t.Errorf("output %q has shape %v, want a symbolic batch dimension", o.GetName(), got)
				}
			}
			// With the batch fixed to the recorded input's, every output
			// shape must be the recorded output's.
			if n := verifyOutputShapes(t, m, withBatch(shapes, 2), dir); n == 0 {
				t.Error("no output shape compared")
			}
		})
	}
	t.Logf("checked %d fixtures", len(paths))
}

// withBatch replaces a symbolic leading dimension by n.
func withBatch(shapes Shapes, n int64) Shapes {
	out := Shapes{}
	for k, s := range shapes {
		c := append(Shape(nil), s...)
		if len(c) > 0 && !c[0].Known() {
			c[0] = Dim{Size: n}
		}
		out[k] = c
	}
	return out
}
