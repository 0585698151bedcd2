package peer

import (
	"bytes"
	_ "embed" // torch_ref.py is embedded and written next to each request
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

//go:embed torch_ref.py
var torchScript []byte

// torchModules are the Python modules the PyTorch reference imports.
var torchModules = []string{"numpy", "onnx", "torch"}

// TorchRunner evaluates ONNX models with the PyTorch reference
// (torch_ref.py): plain operators from the ONNX specification and decoupled
// convolutions from DCNET.md's formulas, on torch.nn.functional, in float64
// by default. Each call starts one Python process.
type TorchRunner struct {
	python string // interpreter that imports numpy, onnx and torch
}

// TorchResult holds a reference run's outputs by name and per-node
// statistics.
type TorchResult struct {
	// Outputs holds every graph output by name, converted to float32
	// (integer and boolean outputs included).
	Outputs map[string]Tensor
	// Stats holds one entry per decoupled convolution, keyed by node name
	// (by first output name for an unnamed node).
	Stats map[string]DecoupledStats
	// Values holds every node output by name, and each decoupled node's
	// intermediate values as "NODE/NAME" (NAME one of w_norm, N, P, cos,
	// theta, h, m, g, rho; theta and rho only where the configuration uses
	// them). It is nil unless TorchOptions.Intermediates was set.
	Values map[string]Tensor
}

// DecoupledStats describes how one decoupled convolution's inputs spread
// over the branches of its piecewise functions, over every (batch, location,
// output channel) entry of the run.
type DecoupledStats struct {
	// Magnitude, Angular and Weighted are the configuration the reference
	// read from the node's attributes.
	Magnitude, Angular, Weighted string
	// Entries is the number of (batch, location, channel) entries.
	Entries int64
	// BelowRho and AboveRho are the fractions of entries with N <= rho_c
	// and N > rho_c; both are 0 when the magnitude has no rho.
	BelowRho, AboveRho float64
	// CosQuartiles holds the fractions of |cos| values in [0, .25),
	// [.25, .5), [.5, .75) and [.75, 1].
	CosQuartiles [4]float64
	// MinAbsCos and MaxAbsCos bound |cos| over all entries.
	MinAbsCos, MaxAbsCos float64
	// MinN and MaxN bound the patch norm N over all locations.
	MinN, MaxN float64
}

// TorchOptions changes how [TorchRunner.RunWith] evaluates a model.
type TorchOptions struct {
	// Float32 computes in float32 instead of float64.
	Float32 bool
	// Intermediates returns every node output and each decoupled node's
	// intermediate values in TorchResult.Values.
	Intermediates bool
}

// Torch returns a runner for the PyTorch reference, or skips the test (fails
// when Require()) when Debian's python3 with torch and onnx is missing.
func Torch(t testing.TB) *TorchRunner {
	t.Helper()
	py, err := findPython(torchModules)
	if err != nil {
		missing(t, "torch reference: %v", err)
		return nil
	}
	return &TorchRunner{python: py}
}

// Run evaluates the model at path in float64 with the given inputs.
func (r *TorchRunner) Run(modelPath string, inputs map[string]Tensor) (*TorchResult, error) {
	return r.RunWith(modelPath, inputs, TorchOptions{})
}

// RunWith evaluates the model at path with the given inputs and options.
// Each input is converted to the element type the graph declares for it
// (floating types to the computing type, integer types rounded). Errors
// (an unsupported operator, a bad attribute, a missing input) name the model
// file and, where there is one, the node.
func (r *TorchRunner) RunWith(modelPath string, inputs map[string]Tensor, opts TorchOptions) (*TorchResult, error) {
	res, err := r.runJobs([]torchJob{{model: modelPath, inputs: inputs, opts: opts}})
	if err != nil {
		return nil, err
	}
	return res[0].result, res[0].err
}

// torchJob is one model evaluation of a request.
type torchJob struct {
	model  string
	inputs map[string]Tensor
	opts   TorchOptions
}

// torchJobResult is the outcome of one job: a result or the job's error.
type torchJobResult struct {
	result *TorchResult
	err    error
}

// torchStatsJSON is one node's statistics as torch_ref.py writes them.
type torchStatsJSON struct {
	Magnitude    string     `json:"magnitude"`
	Angular      string     `json:"angular"`
	Weighted     string     `json:"weighted"`
	Entries      int64      `json:"entries"`
	BelowRho     float64    `json:"below_rho"`
	AboveRho     float64    `json:"above_rho"`
	CosQuartiles [4]float64 `json:"cos_quartiles"`
	MinAbsCos    float64    `json:"min_abs_cos"`
	MaxAbsCos    float64    `json:"max_abs_cos"`
	MinN         float64    `json:"min_n"`
	MaxN         float64    `json:"max_n"`
}

// runJobs evaluates several models in one Python process (starting torch
// once). The returned error covers the whole request; each job's own
// failure is in its torchJobResult.
func (r *TorchRunner) runJobs(jobs []torchJob) ([]torchJobResult, error) {
	if r == nil {
		return nil, errors.New("torch reference: nil TorchRunner")
	}
	dir, err := os.MkdirTemp("", "dcconvert-torch-")
	if err != nil {
		return nil, fmt.Errorf("torch reference: %w", err)
	}
	defer os.RemoveAll(dir)

	type jobJSON struct {
		Model         string       `json:"model"`
		DType         string       `json:"dtype"`
		Intermediates bool         `json:"intermediates"`
		Inputs        []tensorFile `json:"inputs"`
	}
	var req struct {
		Jobs []jobJSON `json:"jobs"`
	}
	for j, job := range jobs {
		abs, err := filepath.Abs(job.model)
		if err != nil {
			return nil, fmt.Errorf("torch reference: %s: %w", job.model, err)
		}
		jj := jobJSON{Model: abs, DType: "float64", Intermediates: job.opts.Intermediates, Inputs: []tensorFile{}}
		if job.opts.Float32 {
			jj.DType = "float32"
		}
		names := make([]string, 0, len(job.inputs))
		for name := range job.inputs {
			names = append(names, name)
		}
		sort.Strings(names)
		for i, name := range names {
			// A scalar's nil Dims must reach Python as [], not null.
			dims := append([]int64{}, job.inputs[name].Dims...)
			f := tensorFile{Name: name, Dims: dims, File: fmt.Sprintf("job%d_in_%d.bin", j, i)}
			if err := writeTensor(filepath.Join(dir, f.File), job.inputs[name]); err != nil {
				return nil, fmt.Errorf("torch reference: %s: input %q: %w", job.model, name, err)
			}
			jj.Inputs = append(jj.Inputs, f)
		}
		req.Jobs = append(req.Jobs, jj)
	}
	reqJSON, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("torch reference: %w", err)
	}
	reqPath := filepath.Join(dir, "request.json")
	if err := os.WriteFile(reqPath, reqJSON, 0o644); err != nil {
		return nil, fmt.Errorf("torch reference: %w", err)
	}
	if _, err := r.runScript(dir, "run", reqPath); err != nil {
		return nil, fmt.Errorf("torch reference: running %s: %w", jobModels(jobs), err)
	}

	respJSON, err := os.ReadFile(filepath.Join(dir, "response.json"))
	if err != nil {
		return nil, fmt.Errorf("torch reference: %s: reading the response: %w", jobModels(jobs), err)
	}
	var resp struct {
		Jobs []struct {
			Error   string                    `json:"error"`
			Outputs []tensorFile              `json:"outputs"`
			Values  []tensorFile              `json:"values"`
			Stats   map[string]torchStatsJSON `json:"stats"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(respJSON, &resp); err != nil {
		return nil, fmt.Errorf("torch reference: %s: reading the response: %w", jobModels(jobs), err)
	}
	if len(resp.Jobs) != len(jobs) {
		return nil, fmt.Errorf("torch reference: %s: %d results for %d models", jobModels(jobs), len(resp.Jobs), len(jobs))
	}
	results := make([]torchJobResult, len(jobs))
	for j, rj := range resp.Jobs {
		model := jobs[j].model
		if rj.Error != "" {
			results[j].err = fmt.Errorf("torch reference: running %s: %s", model, rj.Error)
			continue
		}
		res := &TorchResult{Stats: make(map[string]DecoupledStats, len(rj.Stats))}
		if res.Outputs, err = readTensorFiles(dir, rj.Outputs); err != nil {
			results[j].err = fmt.Errorf("torch reference: %s: output %w", model, err)
			continue
		}
		if rj.Values != nil {
			if res.Values, err = readTensorFiles(dir, rj.Values); err != nil {
				results[j].err = fmt.Errorf("torch reference: %s: value %w", model, err)
				continue
			}
		}
		for name, s := range rj.Stats {
			res.Stats[name] = DecoupledStats(s)
		}
		results[j].result = res
	}
	return results, nil
}

// readTensorFiles reads the tensors a response lists, keyed by name; an
// error starts with the tensor's quoted name.
func readTensorFiles(dir string, files []tensorFile) (map[string]Tensor, error) {
	out := make(map[string]Tensor, len(files))
	for _, f := range files {
		t, err := readTensor(filepath.Join(dir, f.File), f.Dims)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", f.Name, err)
		}
		out[f.Name] = t
	}
	return out, nil
}

// jobModels names the model files of a request, for error messages.
func jobModels(jobs []torchJob) string {
	names := make([]string, len(jobs))
	for i, j := range jobs {
		names[i] = j.model
	}
	if len(names) > 3 {
		return fmt.Sprintf("%s and %d more models", strings.Join(names[:3], ", "), len(names)-3)
	}
	return strings.Join(names, ", ")
}

// runScript writes torch_ref.py into dir and runs it with args, returning
// stdout, or an error carrying the script's stderr.
func (r *TorchRunner) runScript(dir string, args ...string) ([]byte, error) {
	script := filepath.Join(dir, "torch_ref.py")
	if err := os.WriteFile(script, torchScript, 0o644); err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(r.python, append([]string{script}, args...)...)
	cmd.Dir = dir
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %s", err, msg)
	}
	return stdout.Bytes(), nil
}
