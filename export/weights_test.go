package export

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/export/exporttest"
	"github.com/dcconvert/dcconvert/internal/peer"
)

// TestEncodeNPY checks the NPY header of arrays of several ranks.
func TestEncodeNPY(t *testing.T) {
	for _, c := range []struct {
		dims  []int64
		shape string
	}{
		{nil, "()"},
		{[]int64{3}, "(3,)"},
		{[]int64{2, 3}, "(2, 3)"},
		{[]int64{16, 1, 3, 3}, "(16, 1, 3, 3)"},
	} {
		n := 1
		for _, d := range c.dims {
			n *= int(d)
		}
		f := make([]float32, n)
		for i := range f {
			f[i] = float32(i) + 0.5
		}
		b := encodeNPY(c.dims, f)
		if !bytes.HasPrefix(b, []byte("\x93NUMPY\x01\x00")) {
			t.Fatalf("%v: magic %q", c.dims, b[:8])
		}
		hl := int(binary.LittleEndian.Uint16(b[8:]))
		header := string(b[10 : 10+hl])
		if (10+hl)%64 != 0 || !strings.HasSuffix(header, "\n") {
			t.Errorf("%v: header of %d bytes %q is not padded to 64 with a newline", c.dims, hl, header)
		}
		if want := "{'descr': '<f4', 'fortran_order': False, 'shape': " + c.shape + ", }"; strings.TrimRight(header, " \n") != want {
			t.Errorf("%v: header %q, want %q", c.dims, header, want)
		}
		if len(b) != 10+hl+4*n || math.Float32frombits(binary.LittleEndian.Uint32(b[10+hl:])) != 0.5 {
			t.Errorf("%v: %d bytes of data, want %d starting with 0.5", c.dims, len(b)-10-hl, 4*n)
		}
	}
}

// readerScript reads a .npz with numpy and a safetensors file with a
// reader of its own (json, struct, numpy) and prints every array as its
// shape and the base64 of its little-endian float32 bytes, and the
// safetensors metadata.
const readerScript = `
import base64, json, struct, sys
import numpy as np

def enc(a):
    assert a.dtype == np.dtype('<f4'), a.dtype
    return [list(a.shape), base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()]

out = {"npz": {}, "safetensors": {}, "metadata": {}}
with np.load(sys.argv[1]) as z:
    for k in z.files:
        out["npz"][k] = enc(z[k])
if len(sys.argv) > 2:
    with open(sys.argv[2], "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
        body = f.read()
    for k, v in header.items():
        if k == "__metadata__":
            out["metadata"] = v
            continue
        assert v["dtype"] == "F32", v
        b, e = v["data_offsets"]
        out["safetensors"][k] = enc(np.frombuffer(body[b:e], dtype="<f4").reshape(v["shape"]))
json.dump(out, sys.stdout)
`

// readerOutput is what readerScript prints.
type readerOutput struct {
	NPZ         map[string]readArray `json:"npz"`
	Safetensors map[string]readArray `json:"safetensors"`
	Metadata    map[string]string    `json:"metadata"`
}

// readArray is one array as readerScript prints it: [shape, base64].
type readArray [2]json.RawMessage

// values decodes a readArray.
func (a readArray) values(t *testing.T) ([]int64, []float32) {
	t.Helper()
	var dims []int64
	var b64 string
	if err := json.Unmarshal(a[0], &dims); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(a[1], &b64); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	f := make([]float32, len(raw)/4)
	for i := range f {
		f[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return dims, f
}

// runReader runs readerScript on the files.
func runReader(t *testing.T, files ...string) readerOutput {
	t.Helper()
	py := peer.Python(t, "numpy")
	cmd := exec.Command(py, append([]string{"-c", readerScript}, files...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	var out readerOutput
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWeightsReadByPython writes the weight files of a fine-tuned model
// and reads them with numpy and an independent safetensors reader: every
// float initializer is there, under its name and shape, holding exactly
// the checkpoint's values (running statistics rounded to float32), and
// the safetensors metadata holds the configuration and preprocessing.
func TestWeightsReadByPython(t *testing.T) {
	r := makeRun(t, exporttest.Options{Decoupled: tanhLearn(), BN: true, Tie: true, Steps: 6, Mean: []float32{0.5}, Std: []float32{0.25}})
	tr := load(t, r, Best)
	dir := t.TempDir()
	npz, st := filepath.Join(dir, "w.npz"), filepath.Join(dir, "w.safetensors")
	if err := WriteNPZ(npz, tr); err != nil {
		t.Fatal(err)
	}
	if err := WriteSafetensors(st, tr); err != nil {
		t.Fatal(err)
	}
	got := runReader(t, npz, st)

	m, err := tr.Model()
	if err != nil {
		t.Fatal(err)
	}
	f := readCheckpoint(t, tr.Checkpoint)
	want := initializerValues(t, m)
	var names []string
	for name, v := range want {
		if v.Float != nil {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	checked := 0
	for form, arrays := range map[string]map[string]readArray{"npz": got.NPZ, "safetensors": got.Safetensors} {
		if keys := sortedKeys(arrays); !slices.Equal(keys, names) {
			t.Errorf("%s holds %q, want the float initializers %q", form, keys, names)
		}
		for _, name := range names {
			a, ok := arrays[name]
			if !ok {
				continue
			}
			dims, values := a.values(t)
			if !slices.Equal(dims, want[name].Dims) {
				t.Errorf("%s: %q has shape %v, want %v", form, name, dims, want[name].Dims)
			}
			exact := want[name].Float
			if v, ok := f.Tensors[name]; ok {
				exact = checkpointValues(v)
				checked++
			}
			if !slices.Equal(values, exact) {
				t.Errorf("%s: %q differs from the checkpoint", form, name)
			}
		}
	}
	if checked != 2*(len(tr.params)+len(tr.stats)) {
		t.Errorf("compared %d arrays with the checkpoint, want %d", checked, 2*(len(tr.params)+len(tr.stats)))
	}
	if v, ok := got.Metadata[dcnet.MetaLayers]; !ok || !strings.Contains(v, `"magnitude":"tanh"`) {
		t.Errorf("safetensors metadata %s = %q", dcnet.MetaLayers, v)
	}
	if v := got.Metadata[data.MetaPreprocess]; !strings.Contains(v, `"mean":[0.5]`) {
		t.Errorf("safetensors metadata %s = %q", data.MetaPreprocess, v)
	}
	t.Logf("numpy and a Python safetensors reader read %d arrays each; %d compared bit for bit with the checkpoint", len(names), checked)
}

// TestNPZNames checks with numpy that array names holding slashes and
// dots, and scalars, survive an .npz archive.
func TestNPZNames(t *testing.T) {
	arr := []array{
		{name: "features/0/Conv.weight", dims: []int64{2, 1}, f: []float32{1, -2}},
		{name: "a.npy", dims: []int64{3}, f: []float32{0.25, 0.5, 0.75}},
		{name: "scale", dims: nil, f: []float32{3}},
	}
	b, err := encodeNPZ(arr)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "names.npz")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	got := runReader(t, path)
	for _, a := range arr {
		r, ok := got.NPZ[a.name]
		if !ok {
			t.Errorf("numpy finds no %q in %q", a.name, sortedKeys(got.NPZ))
			continue
		}
		dims, values := r.values(t)
		if !slices.Equal(dims, a.dims) || !slices.Equal(values, a.f) {
			t.Errorf("%q reads back as %v %v, want %v %v", a.name, dims, values, a.dims, a.f)
		}
	}
	if _, err := encodeNPZ(append(arr, arr[0])); err == nil {
		t.Error("an archive with two arrays of one name was written")
	}
}
