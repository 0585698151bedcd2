package export

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/export/exporttest"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// initializerValues decodes every float initializer of m.
func initializerValues(t *testing.T, m *onnximport.Model) map[string]*onnximport.Tensor {
	t.Helper()
	out := map[string]*onnximport.Tensor{}
	for _, init := range m.Graph().GetInitializer() {
		v, err := m.Tensor(init)
		if err != nil {
			t.Fatal(err)
		}
		out[init.GetName()] = v
	}
	return out
}

// TestModel checks the fine-tuned model: every parameter and running
// statistic holds the checkpoint's value, the learnable radii count as
// calibrated, and the metadata holds the preprocessing.
func TestModel(t *testing.T) {
	mean, std := []float32{0.5}, []float32{0.25}
	r := makeRun(t, exporttest.Options{Decoupled: ballLearn(), BN: true, Mean: mean, Std: std})
	tr := load(t, r, Last)
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	f := readCheckpoint(t, tr.Checkpoint)
	got := initializerValues(t, m)
	n := 0
	for name, v := range f.Tensors {
		if strings.Contains(name, "#") || finetune.IsOptimizerState(name) {
			continue
		}
		want := checkpointValues(v)
		g, ok := got[name]
		if !ok {
			t.Errorf("the model has no initializer %q", name)
			continue
		}
		if !slices.Equal(g.Float, want) {
			t.Errorf("initializer %q differs from the checkpoint", name)
		}
		n++
	}
	if n != len(tr.params)+len(tr.stats) || len(tr.stats) == 0 {
		t.Errorf("compared %d initializers; the model has %d parameters and %d running statistics", n, len(tr.params), len(tr.stats))
	}

	if v, ok := rewrite.Metadata(m.Proto, dcnet.MetaUncalibrated); ok {
		t.Errorf("metadata %s = %q after training, want it removed", dcnet.MetaUncalibrated, v)
	}
	src, _ := rewrite.Metadata(tr.source.Proto, dcnet.MetaLayers)
	if got, _ := rewrite.Metadata(m.Proto, dcnet.MetaLayers); got != src || got == "" {
		t.Errorf("metadata %s = %q, want the run model's %q", dcnet.MetaLayers, got, src)
	}
	pre, ok, err := data.ReadPreprocessing(m.Proto)
	if err != nil || !ok {
		t.Fatalf("reading the preprocessing: %v (found %v)", err, ok)
	}
	if diff := cmp.Diff(tr.Run.Preprocess, pre); diff != "" || !slices.Equal(pre.Mean, mean) {
		t.Errorf("preprocessing (-run.json +model):\n%s", diff)
	}
	if m.Proto.GetProducerName() != "dcconvert" {
		t.Errorf("producer %q, want dcconvert", m.Proto.GetProducerName())
	}
	if err := m.Check(); err != nil {
		t.Error(err)
	}
}

// TestModelUncalibrated checks that a layer whose radius scale has not
// been updated yet stays in the ai.dcnet.uncalibrated list.
func TestModelUncalibrated(t *testing.T) {
	r := makeRun(t, exporttest.Options{Decoupled: tanhLearn(), Steps: 2})
	d := r.Copy(t)
	editCheckpoint(t, d.Path(checkpoint.LastFile), func(f *checkpoint.File) {
		for _, layer := range []string{"/features/features.2/Conv", "/features/features.7/Conv"} {
			f.Tensors[layer+".rho_scale#t"] = checkpoint.Tensor{Shape: []int{}, I64: []int64{0}}
		}
	})
	tr, err := Load(d, Last)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := rewrite.Metadata(m.Proto, dcnet.MetaUncalibrated)
	if want := "/features/features.2/Conv,/features/features.7/Conv"; got != want {
		t.Errorf("metadata %s = %q, want %q", dcnet.MetaUncalibrated, got, want)
	}
}

// TestModelShared checks a model whose convolution weight and bias are
// shared by a second convolution (once through an Identity node): the
// second use, trained apart, becomes an initializer of its own that the
// second convolution reads, also before IR 4 where initializers are
// graph inputs, and the engine computes from the exported model what it
// computes from the checkpoint.
func TestModelShared(t *testing.T) {
	for _, opset := range []int64{7, 13} {
		r := makeRun(t, exporttest.Options{Opset: opset, Tie: true, Steps: 10})
		tr := load(t, r, Last)
		m, err := tr.Model()
		if err != nil {
			t.Fatal(err)
		}
		var tied *onnxpb.NodeProto
		for _, n := range m.Graph().GetNode() {
			if n.GetName() == exporttest.TiedNode {
				tied = n
			}
		}
		want := []string{"features.2.weight@" + exporttest.TiedNode, "features.2.bias@" + exporttest.TiedNode}
		if got := tied.GetInput()[1:]; !slices.Equal(got, want) {
			t.Errorf("opset %d: the tied convolution reads %q, want %q", opset, got, want)
		}
		values := initializerValues(t, m)
		f := readCheckpoint(t, tr.Checkpoint)
		for _, name := range want {
			if !slices.Equal(values[name].Float, f.Tensors[name].F32) {
				t.Errorf("opset %d: initializer %q differs from the checkpoint", opset, name)
			}
		}
		inputs := 0
		for _, in := range m.Graph().GetInput() {
			if slices.Contains(want, in.GetName()) {
				inputs++
			}
		}
		if wantInputs := map[int64]int{7: 2, 13: 0}[opset]; inputs != wantInputs {
			t.Errorf("opset %d (IR %d): %d of the new initializers are graph inputs, want %d", opset, m.Proto.GetIrVersion(), inputs, wantInputs)
		}
		path := filepath.Join(t.TempDir(), "tied.onnx")
		if err := WriteONNX(path, m, false); err != nil {
			t.Fatal(err)
		}
		x, _ := exporttest.Images(t, r.Data.Val, r.Data.Pre, 16)
		got := forward(t, exporttest.Engine(t, path, 16), r, x)
		ref := forward(t, exporttest.Reference(t, r, tr.Checkpoint, 16), r, x)
		if d, ok := maxRelDiff(got, ref); !ok || d > 1e-6 {
			t.Errorf("opset %d: the engine's logits of the exported model differ from the checkpoint's by %.3g", opset, d)
		}
	}
}

// TestDeterministic exports every format twice and compares the bytes,
// and reads the ONNX forms back: they encode to the bytes written.
func TestDeterministic(t *testing.T) {
	r := makeRun(t, exporttest.Options{Decoupled: ballLearn(), Steps: 4})
	dir := t.TempDir()
	for _, f := range Formats() {
		var files [2][]byte
		for k := range files {
			tr := load(t, r, Best)
			path := filepath.Join(dir, string(f)+"."+string(rune('a'+k)))
			if err := Write(path, tr, f); err != nil {
				t.Fatal(err)
			}
			files[k] = readBytes(t, path)
		}
		if !bytes.Equal(files[0], files[1]) {
			t.Errorf("%s: two exports of one checkpoint differ", f)
		}
		if f == FormatONNX || f == FormatONNXInline {
			m, err := onnximport.ReadFile(filepath.Join(dir, string(f)+".a"))
			if err != nil {
				t.Fatal(err)
			}
			b, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, files[0]) {
				t.Errorf("%s: reading and encoding the export changes its bytes", f)
			}
		}
	}
}

// TestWriteUnknownFormat checks the error for a format that does not exist.
func TestWriteUnknownFormat(t *testing.T) {
	r := makeRun(t, exporttest.Options{Steps: 2})
	path := filepath.Join(t.TempDir(), "out")
	err := Write(path, load(t, r, Last), "pb")
	if err == nil || !strings.Contains(err.Error(), `unknown export format "pb"`) {
		t.Errorf("error %v, want one naming the format", err)
	}
}
