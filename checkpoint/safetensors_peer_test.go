package checkpoint

import (
	"bytes"
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dcconvert/dcconvert/internal/peer"
)

// peerScript reads and writes safetensors files in Python, independently
// of the Go code: the header with struct and json, the data with
// numpy.frombuffer and ndarray.tobytes. "read PATH" prints what the file
// holds; "write PATH" writes a file the way other tools do (no checksum,
// no padding, keys in insertion order) and prints what it wrote. Both
// print one JSON object: metadata, the offset of the data section, the
// SHA-256 of the data section, and per tensor its dtype, shape and values
// (floats as float.hex() strings, exact for every value; integers as JSON
// integers).
const peerScript = `
import hashlib, json, struct, sys
import numpy as np

DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8"}

def describe(header, data, data_start):
    meta = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        a = np.frombuffer(data[begin:end], dtype=DTYPES[e["dtype"]]).reshape(e["shape"])
        flat = a.ravel().tolist()
        if e["dtype"] != "I64":
            flat = [float(v).hex() for v in flat]
        tensors[name] = {"dtype": e["dtype"], "shape": list(a.shape), "values": flat}
    return {"metadata": meta, "data_start": data_start,
            "sha256": hashlib.sha256(data).hexdigest(), "tensors": tensors}

def read(path):
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    header = json.loads(b[8:8 + n].decode("utf-8"))
    return describe(header, b[8 + n:], 8 + n)

def write(path):
    arrays = [
        ("features.0.weight", "F32", (np.arange(6, dtype="<f4").reshape(2, 3) - 2.5) / np.float32(3)),
        ("features.0.bias", "F64", np.array([np.pi, -np.e, 1e-300, -0.0], dtype="<f8")),
        ("num_batches_tracked", "I64", np.array([[-2**63, 2**63 - 1], [0, 42]], dtype="<i8")),
        ("scale", "F32", np.array(1.5, dtype="<f4")),
        ("unused", "F64", np.zeros((0, 4), dtype="<f8")),
    ]
    header, data = {}, b""
    for name, dtype, a in arrays:
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + a.nbytes]}
        data += a.tobytes()
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
    return read(path)

mode, path = sys.argv[1], sys.argv[2]
print(json.dumps(read(path) if mode == "read" else write(path)))
`

// peerView is what peerScript prints.
type peerView struct {
	Metadata  map[string]string `json:"metadata"`
	DataStart int               `json:"data_start"`
	SHA256    string            `json:"sha256"`
	Tensors   map[string]struct {
		DType  DType             `json:"dtype"`
		Shape  []int             `json:"shape"`
		Values []json.RawMessage `json:"values"`
	} `json:"tensors"`
}

// runPeer runs peerScript in mode on path and returns what it printed.
func runPeer(t *testing.T, mode, path string) peerView {
	t.Helper()
	py := peer.Python(t, "numpy")
	var stderr bytes.Buffer
	cmd := exec.Command(py, "-c", peerScript, mode, path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python %s %s: %v\n%s", mode, path, err, stderr.String())
	}
	var v peerView
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("decoding what python printed: %v\n%s", err, out)
	}
	return v
}

// tensors converts the tensors of a peerView.
func (v peerView) tensors(t *testing.T) map[string]Tensor {
	t.Helper()
	out := make(map[string]Tensor, len(v.Tensors))
	for name, pt := range v.Tensors {
		tt := Tensor{Shape: pt.Shape}
		switch pt.DType {
		case F32:
			tt.F32 = []float32{}
		case F64:
			tt.F64 = []float64{}
		case I64:
			tt.I64 = []int64{}
		default:
			t.Fatalf("python reports dtype %q for %q", pt.DType, name)
		}
		for _, raw := range pt.Values {
			if pt.DType == I64 {
				var n int64
				if err := json.Unmarshal(raw, &n); err != nil {
					t.Fatalf("tensor %q: %v", name, err)
				}
				tt.I64 = append(tt.I64, n)
				continue
			}
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("tensor %q: %v", name, err)
			}
			f, err := strconv.ParseFloat(s, 64) // Go reads float.hex(), "inf" and "nan"
			if err != nil {
				t.Fatalf("tensor %q: %v", name, err)
			}
			if pt.DType == F32 {
				tt.F32 = append(tt.F32, float32(f))
			} else {
				tt.F64 = append(tt.F64, f)
			}
		}
		out[name] = tt
	}
	return out
}

// TestPeerReadsEncode checks a file Encode wrote against Python's reading
// of it: names, dtypes, shapes, values, metadata and the checksum.
func TestPeerReadsEncode(t *testing.T) {
	f := sampleFile()
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
	v := runPeer(t, "read", path)
	if diff := diffTensors(f.Tensors, v.tensors(t)); diff != "" {
		t.Errorf("tensors as python reads them (-go +python):\n%s", diff)
	}
	if got := v.Metadata[MetaChecksum]; got != v.SHA256 {
		t.Errorf("metadata checksum %s, but python hashes the data section to %s", got, v.SHA256)
	}
	delete(v.Metadata, MetaChecksum)
	if diff := cmp.Diff(f.Metadata, v.Metadata); diff != "" {
		t.Errorf("metadata as python reads it (-go +python):\n%s", diff)
	}
	if v.DataStart%8 != 0 {
		t.Errorf("the data section starts at byte %d, not a multiple of 8", v.DataStart)
	}
}

// TestDecodeReadsPeer decodes a file Python wrote by hand, without a
// checksum.
func TestDecodeReadsPeer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "foreign.safetensors")
	v := runPeer(t, "write", path)
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := v.tensors(t)
	if diff := diffTensors(want, got.Tensors); diff != "" {
		t.Errorf("tensors as Go reads them (-python +go):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"format": "pt"}, got.Metadata); diff != "" {
		t.Errorf("metadata (-want +got):\n%s", diff)
	}
	// Spot checks that do not depend on the script's own reading.
	if w := got.Tensors["num_batches_tracked"].I64; len(w) != 4 || w[0] != math.MinInt64 || w[1] != math.MaxInt64 {
		t.Errorf("num_batches_tracked = %v", w)
	}
	if s := got.Tensors["scale"]; len(s.Shape) != 0 || len(s.F32) != 1 || s.F32[0] != 1.5 {
		t.Errorf("scale = %+v, want a scalar 1.5", s)
	}
}
