package peer

import (
	"bytes"
	_ "embed" // ort_run.js is embedded and written next to each request
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// ortVersion is the onnxruntime-node release the tests compare against.
const ortVersion = "1.30.0"

// ortDirEnv names the environment variable that points at a node_modules
// directory holding onnxruntime-node, instead of the repository's.
const ortDirEnv = "DCCONVERT_ORT_DIR"

//go:embed ort_run.js
var ortScript []byte

// Tensor is a dense float32 tensor exchanged with peers.
type Tensor struct {
	// Dims is the shape, outermost dimension first.
	Dims []int64
	// Data holds the values in row-major order; its length is the product
	// of Dims.
	Data []float32
}

// Runtime runs models in ONNX Runtime 1.30 (onnxruntime-node under the repo's
// node_modules, or DCCONVERT_ORT_DIR pointing at a node_modules dir).
type Runtime struct {
	node    string // path of the node executable
	modules string // node_modules directory holding onnxruntime-node
}

// ortCache remembers the outcome of the first ORT probe of a test binary.
var ortCache struct {
	once sync.Once
	rt   *Runtime
	err  error
}

// ORT returns a Runtime, or skips (fails when Require()) when node or
// onnxruntime-node is missing.
func ORT(t testing.TB) *Runtime {
	t.Helper()
	ortCache.once.Do(func() { ortCache.rt, ortCache.err = findORT() })
	if ortCache.err != nil {
		missing(t, "onnx runtime: %v", ortCache.err)
		return nil
	}
	return ortCache.rt
}

// findORT locates node and onnxruntime-node and checks that node loads it.
func findORT() (*Runtime, error) {
	const install = "ONNXRUNTIME_NODE_INSTALL=skip npm ci"
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("node not found (install Node.js 20, then run %q at the repository root): %w", install, err)
	}
	modules := os.Getenv(ortDirEnv)
	if modules == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		modules = filepath.Join(root, "node_modules")
	}
	modules, err = filepath.Abs(modules)
	if err != nil {
		return nil, err
	}
	pkgFile := filepath.Join(modules, "onnxruntime-node", "package.json")
	raw, err := os.ReadFile(pkgFile)
	if err != nil {
		return nil, fmt.Errorf("onnxruntime-node not found in %s (run %q at the repository root, or set %s): %w", modules, install, ortDirEnv, err)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		return nil, fmt.Errorf("reading %s: %w", pkgFile, err)
	}
	if pkg.Version != ortVersion {
		return nil, fmt.Errorf("%s: onnxruntime-node %s, want %s (run %q)", modules, pkg.Version, ortVersion, install)
	}
	rt := &Runtime{node: node, modules: modules}
	dir, err := os.MkdirTemp("", "dcconvert-ort-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out, err := rt.runScript(dir, "version")
	if err != nil {
		return nil, fmt.Errorf("loading onnxruntime-node from %s: %w", modules, err)
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		return nil, fmt.Errorf("loading onnxruntime-node from %s: reading its version %q: %w", modules, out, err)
	}
	if v.Version != ortVersion {
		return nil, fmt.Errorf("%s: onnxruntime-node reports version %s, want %s", modules, v.Version, ortVersion)
	}
	return rt, nil
}

// node_ writes the script into dir and runs it with args, returning stdout,
// or an error carrying the script's stderr.
func (r *Runtime) runScript(dir string, args ...string) ([]byte, error) {
	script := filepath.Join(dir, "ort_run.js")
	if err := os.WriteFile(script, ortScript, 0o644); err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(r.node, append([]string{script, r.modules}, args...)...)
	cmd.Dir = dir
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, err
		}
		return nil, errors.New(msg)
	}
	return stdout.Bytes(), nil
}

// tensorFile is one tensor's entry in the request and response documents.
type tensorFile struct {
	Name string  `json:"name"`
	Type string  `json:"type,omitempty"`
	Dims []int64 `json:"dims"`
	File string  `json:"file"`
}

// Run executes the model at path on the CPU provider with the given float32
// inputs and returns every graph output by name. Errors (model rejected by
// ORT, etc.) are returned, not fatal, so tests can assert on them. Outputs of
// other numeric types are converted to float32.
func (r *Runtime) Run(modelPath string, inputs map[string]Tensor) (map[string]Tensor, error) {
	if r == nil {
		return nil, errors.New("onnx runtime: nil Runtime")
	}
	abs, err := filepath.Abs(modelPath)
	if err != nil {
		return nil, fmt.Errorf("onnx runtime: %s: %w", modelPath, err)
	}
	dir, err := os.MkdirTemp("", "dcconvert-ort-")
	if err != nil {
		return nil, fmt.Errorf("onnx runtime: %s: %w", modelPath, err)
	}
	defer os.RemoveAll(dir)

	names := make([]string, 0, len(inputs))
	for name := range inputs {
		names = append(names, name)
	}
	sort.Strings(names)
	req := struct {
		Model  string       `json:"model"`
		Inputs []tensorFile `json:"inputs"`
	}{Model: abs, Inputs: []tensorFile{}}
	for i, name := range names {
		// A scalar's dims are [], not null.
		dims := append([]int64{}, inputs[name].Dims...)
		f := tensorFile{Name: name, Dims: dims, File: fmt.Sprintf("in_%d.bin", i)}
		if err := writeTensor(filepath.Join(dir, f.File), inputs[name]); err != nil {
			return nil, fmt.Errorf("onnx runtime: %s: input %q: %w", modelPath, name, err)
		}
		req.Inputs = append(req.Inputs, f)
	}
	reqJSON, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("onnx runtime: %s: %w", modelPath, err)
	}
	reqPath := filepath.Join(dir, "request.json")
	if err := os.WriteFile(reqPath, reqJSON, 0o644); err != nil {
		return nil, fmt.Errorf("onnx runtime: %s: %w", modelPath, err)
	}
	if _, err := r.runScript(dir, "run", reqPath); err != nil {
		return nil, fmt.Errorf("onnx runtime: running %s: %w", modelPath, err)
	}

	respJSON, err := os.ReadFile(filepath.Join(dir, "response.json"))
	if err != nil {
		return nil, fmt.Errorf("onnx runtime: %s: reading the response: %w", modelPath, err)
	}
	var resp struct {
		Outputs []tensorFile `json:"outputs"`
	}
	if err := json.Unmarshal(respJSON, &resp); err != nil {
		return nil, fmt.Errorf("onnx runtime: %s: reading the response: %w", modelPath, err)
	}
	outputs := make(map[string]Tensor, len(resp.Outputs))
	for _, f := range resp.Outputs {
		t, err := readTensor(filepath.Join(dir, f.File), f.Dims)
		if err != nil {
			return nil, fmt.Errorf("onnx runtime: %s: output %q: %w", modelPath, f.Name, err)
		}
		outputs[f.Name] = t
	}
	return outputs, nil
}

// numElements returns the product of dims, or an error for a negative
// dimension or an overflowing product.
func numElements(dims []int64) (int, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d in %v is negative", d, dims)
		}
		if d != 0 && n > math.MaxInt/d {
			return 0, fmt.Errorf("shape %v is too large", dims)
		}
		n *= d
	}
	return int(n), nil
}

// writeTensor writes t's values as little-endian float32 after checking that
// their count matches the shape.
func writeTensor(path string, t Tensor) error {
	n, err := numElements(t.Dims)
	if err != nil {
		return err
	}
	if n != len(t.Data) {
		return fmt.Errorf("shape %v holds %d values, data has %d", t.Dims, n, len(t.Data))
	}
	buf := make([]byte, 4*len(t.Data))
	for i, v := range t.Data {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	return os.WriteFile(path, buf, 0o644)
}

// readTensor reads little-endian float32 values of the given shape.
func readTensor(path string, dims []int64) (Tensor, error) {
	n, err := numElements(dims)
	if err != nil {
		return Tensor{}, err
	}
	buf, err := os.ReadFile(path)
	if err != nil {
		return Tensor{}, err
	}
	if len(buf) != 4*n {
		return Tensor{}, fmt.Errorf("%s: %d bytes, shape %v needs %d", path, len(buf), dims, 4*n)
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:]))
	}
	return Tensor{Dims: dims, Data: data}, nil
}
