package export

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/dcconvert/dcconvert/export/exporttest"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/internal/peer"
	"github.com/dcconvert/dcconvert/onnximport"
)

// TestExternalData writes models over a lowered size limit, as models
// over 2 GiB are written: the large initializers go to an aligned data
// file next to the model, the model reads back with the same values
// and computes the same logits, the writes are deterministic and leave
// the model in memory as it was; the ONNX checker and ONNX Runtime read
// both forms.
func TestExternalData(t *testing.T) {
	defer func(size, min int) { maxModelSize, minExternalSize = size, min }(maxModelSize, minExternalSize)
	maxModelSize, minExternalSize = 64<<10, 256

	r := makeRun(t, exporttest.Options{Decoupled: ballLearn(), Steps: 4})
	tr := load(t, r, Best)
	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	before, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	paths := map[bool]string{false: filepath.Join(dir, "function.onnx"), true: filepath.Join(dir, "inline.onnx")}
	for _, inline := range []bool{false, true} {
		path := paths[inline]
		var first [2][]byte
		for k := range 2 {
			if err := WriteONNX(path, m, inline); err != nil {
				t.Fatal(err)
			}
			b, d := readBytes(t, path), readBytes(t, path+".data")
			if k == 0 {
				first = [2][]byte{b, d}
			} else if !bytes.Equal(b, first[0]) || !bytes.Equal(d, first[1]) {
				t.Errorf("%s: two writes differ", path)
			}
		}
		if after, _ := m.Encode(); !bytes.Equal(before, after) {
			t.Fatal("WriteONNX changed the model")
		}
		back, err := onnximport.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want := m
		if inline {
			if want, err = Inline(m); err != nil {
				t.Fatal(err)
			}
		}
		moved := 0
		wantValues := initializerValues(t, want)
		for _, init := range back.Graph().GetInitializer() {
			v, err := back.Tensor(init)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(v.Float, wantValues[init.GetName()].Float) || !slices.Equal(v.Int, wantValues[init.GetName()].Int) {
				t.Errorf("%s: initializer %q reads back other values", path, init.GetName())
			}
			if init.GetDataLocation() != onnxpb.TensorProto_EXTERNAL {
				if 4*v.NumElements() >= int64(minExternalSize) {
					t.Errorf("%s: initializer %q of %d elements is not external", path, init.GetName(), v.NumElements())
				}
				continue
			}
			moved++
			ext := map[string]string{}
			for _, kv := range init.GetExternalData() {
				ext[kv.GetKey()] = kv.GetValue()
			}
			offset, _ := strconv.Atoi(ext["offset"])
			if ext["location"] != filepath.Base(path)+".data" || offset%externalAlign != 0 || ext["length"] == "" {
				t.Errorf("%s: initializer %q has external data %v", path, init.GetName(), ext)
			}
		}
		if moved == 0 {
			t.Errorf("%s: no initializer is external", path)
		}
		if info, err := os.Stat(path); err != nil || info.Size() > int64(maxModelSize) {
			t.Errorf("%s: %v bytes, over the limit of %d", path, info.Size(), maxModelSize)
		}
		t.Logf("%s: %d initializers in %s", filepath.Base(path), moved, filepath.Base(path)+".data")
	}

	x, _ := exporttest.Images(t, r.Data.Val, r.Data.Pre, 16)
	want := forward(t, exporttest.Reference(t, r, tr.Checkpoint, 16), r, x)
	if d, ok := maxRelDiff(forward(t, exporttest.Engine(t, paths[false], 16), r, x), want); !ok || d > 1e-6 {
		t.Errorf("the engine's logits of the model with external data differ by %.3g", d)
	}
	t.Run("peers", func(t *testing.T) {
		ort := peer.ORT(t)
		for _, path := range paths {
			peer.CheckModel(t, path)
			out, err := ort.Run(path, map[string]peer.Tensor{r.Input: {Dims: []int64{16, 1, exporttest.Size, exporttest.Size}, Data: x}})
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := maxRelDiff(out[r.Output].Data, want); !ok || d > logitTol {
				t.Errorf("%s: ONNX Runtime's logits differ by %.3g", path, d)
			}
		}
		t.Logf("checked %d models with external data against ONNX Runtime and the ONNX checker", len(paths))
	})
}

// TestWriteONNXNoPartialFile checks that a failed write leaves nothing.
func TestWriteONNXNoPartialFile(t *testing.T) {
	r := makeRun(t, exporttest.Options{Steps: 2})
	m, err := load(t, r, Last).Model()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	err = WriteONNX(filepath.Join(dir, "missing", "out.onnx"), m, false)
	if want := "writing " + filepath.Join(dir, "missing", "out.onnx") + ": no such file or directory"; err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Errorf("the directory holds %d entries after a failed write", len(es))
	}
}
