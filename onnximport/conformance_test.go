package onnximport

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

var update = flag.Bool("update", false, "rewrite golden files")

// conformanceDir holds ONNX's own backend test data (Debian
// libonnx-testdata).
const conformanceDir = "/usr/share/libonnx-testdata/data"

// conformanceModels lists the model.onnx files of the ONNX backend test
// data, relative to conformanceDir, or skips the test when the package is
// missing.
func conformanceModels(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"node", "pytorch-converted", "pytorch-operator", "simple"} {
		matches, _ := filepath.Glob(filepath.Join(conformanceDir, sub, "*", "model.onnx"))
		for _, m := range matches {
			rel, _ := filepath.Rel(conformanceDir, m)
			out = append(out, rel)
		}
	}
	if len(out) == 0 {
		msg := "ONNX backend test data not found under " + conformanceDir + " (apt-get install -y libonnx-testdata)"
		if os.Getenv("DCCONVERT_REQUIRE_PEERS") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	sort.Strings(out)
	return out
}

// TestConformanceRoundTrip reads every model of ONNX's backend test data,
// writes it back and compares the bytes; then checks it and infers its
// shapes, and compares what was reported with the golden list.
func TestConformanceRoundTrip(t *testing.T) {
	models := conformanceModels(t)
	var report strings.Builder
	var identical, checked, inferred, verified int
	for _, rel := range models {
		b, err := os.ReadFile(filepath.Join(conformanceDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		m, err := Decode(b)
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		out, err := m.Encode()
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			continue
		}
		if !bytes.Equal(out, b) {
			t.Errorf("%s: written model differs from the file (%d bytes, %d written)", rel, len(b), len(out))
			continue
		}
		identical++
		name := filepath.Dir(rel)
		m.dir = filepath.Dir(filepath.Join(conformanceDir, rel))
		if err := m.Check(); err != nil {
			fmt.Fprintf(&report, "%s: check: %s\n", name, firstLine(err))
			continue
		}
		checked++
		shapes, err := m.InferShapes()
		if err != nil {
			fmt.Fprintf(&report, "%s: shapes: %s\n", name, firstLine(err))
			continue
		}
		inferred++
		verified += verifyOutputShapes(t, m, shapes, filepath.Join(conformanceDir, name))
	}
	t.Logf("%d models: %d written back byte-identical, %d pass Check, %d fully shape-inferred; %d inferred output shapes equal the reference outputs' shapes",
		len(models), identical, checked, inferred, verified)
	compareGolden(t, "testdata/conformance.golden", report.String())
}

// verifyOutputShapes compares the inferred shape of each graph output
// with the shape of the reference output tensor in the test case's
// test_data_set_0, and returns how many it compared.
func verifyOutputShapes(t *testing.T, m *Model, shapes Shapes, dir string) int {
	t.Helper()
	n := 0
	for i, out := range m.Graph().GetOutput() {
		if out.GetType().GetTensorType() == nil {
			continue // sequences and optionals have no tensor shape
		}
		b, err := os.ReadFile(filepath.Join(dir, "test_data_set_0", fmt.Sprintf("output_%d.pb", i)))
		if err != nil {
			continue
		}
		ref := &onnxpb.TensorProto{}
		if err := proto.Unmarshal(b, ref); err != nil {
			t.Errorf("%s: output_%d.pb: %v", dir, i, err)
			continue
		}
		got, ok := shapes[out.GetName()]
		if !ok {
			t.Errorf("%s: no shape inferred for output %q", dir, out.GetName())
			continue
		}
		if s, ok := got.Static(); ok {
			if !cmp.Equal(s, ref.GetDims(), cmpopts.EquateEmpty()) {
				t.Errorf("%s: output %q: inferred %v, reference output has %v", dir, out.GetName(), got, ref.GetDims())
			}
			n++
		}
	}
	return n
}

// firstLine returns the first line of an error message.
func firstLine(err error) string {
	s := err.Error()
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// compareGolden compares got with a golden file, or rewrites the file
// under -update.
func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s changed (-want +got; go test -update accepts the change):\n%s", path, diff)
	}
}
