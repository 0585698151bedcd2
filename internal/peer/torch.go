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

// TorchTrainResult is the result of a training-mode reference run
// ([TorchRunner.Train]).
type TorchTrainResult struct {
	// Loss is the batch mean of the (label-smoothed) cross-entropy.
	Loss float64
	// Grads holds d Loss / d parameter for every use of a trainable float
	// initializer: Conv W and B; Gemm A, B and C; MatMul A and B;
	// BatchNormalization scale and B; decoupled W, B, Alpha and RhoV; an
	// Add operand whose other operand is computed from the inputs (a
	// bias); directly or through Identity nodes. The first use in node
	// order is keyed by the initializer's name, each later use by
	// "INITIALIZER@NODE", NODE the consuming node's name, or "#I" for an
	// unnamed node, I its 0-based index in the graph.
	Grads map[string]Tensor
	// Running holds each BatchNormalization's updated running mean and
	// variance, momentum * running + (1 - momentum) * batch statistic
	// (population variance), keyed by the running statistic's initializer
	// name, later uses as for Grads.
	Running map[string]Tensor
	// RhoBatch holds, per decoupled node with a learnable radius (by node
	// name as in TorchResult.Stats), the mean m of the patch norm N over
	// the batch and every output location, padded borders included.
	RhoBatch map[string]float64
	// Outputs holds every graph output of the training-mode forward pass,
	// converted to float32.
	Outputs map[string]Tensor
	// Stats holds the decoupled nodes' statistics of the training-mode
	// forward pass (rho from the batch mean m where the radius is
	// learnable).
	Stats map[string]DecoupledStats
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

// Train runs the model at path in training mode on one batch with integer
// labels (one per sample, in [0, classes)) and label smoothing eps in
// [0, 1], in float64, and returns the loss, the gradient of every
// parameter, the updated running statistics and the batch radius scales.
//
// Training mode differs from [TorchRunner.Run] in three places:
// BatchNormalization normalises with the batch mean and population
// variance (gradients flow through them); a decoupled convolution with a
// learnable radius uses rho_c = (RhoV_c^2 + 1e-4) * m with m the batch mean
// of N (gradients flow through m; RhoScale is not used); Dropout is the
// identity whatever its ratio. The logits are the first graph output, or
// the input of the Softmax node computing it; the loss is the batch mean of
// (1 - eps) * -log softmax(logits)[label] + eps * mean over classes of
// -log softmax(logits). Errors name the model file.
func (r *TorchRunner) Train(modelPath string, inputs map[string]Tensor, labels []int, labelSmoothing float64) (*TorchTrainResult, error) {
	res, err := r.runJobs([]torchJob{{model: modelPath, inputs: inputs,
		train: &torchTrain{labels: labels, smoothing: labelSmoothing}}})
	if err != nil {
		return nil, err
	}
	return res[0].train, res[0].err
}

// torchJob is one model evaluation of a request: inference, or training
// when train is set.
type torchJob struct {
	model  string
	inputs map[string]Tensor
	opts   TorchOptions
	train  *torchTrain
}

// torchTrain is what a training job adds: labels, label smoothing and the
// initializer entries to take finite differences of the loss for.
type torchTrain struct {
	labels    []int
	smoothing float64
	fdStep    float64
	probes    []fdProbe
}

// fdProbe names one initializer entry (flat index) for a central finite
// difference of the training loss; the entry moves wherever the
// initializer is used.
type fdProbe struct {
	Init  string `json:"init"`
	Index int    `json:"index"`
}

// torchJobResult is the outcome of one job: a result (result for
// inference, train and fd for training) or the job's error.
type torchJobResult struct {
	result *TorchResult
	train  *TorchTrainResult
	fd     []float64 // one finite difference per probe
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
		Model          string       `json:"model"`
		DType          string       `json:"dtype"`
		Mode           string       `json:"mode"`
		Intermediates  bool         `json:"intermediates"`
		Labels         []int        `json:"labels,omitempty"`
		LabelSmoothing float64      `json:"label_smoothing,omitempty"`
		FDStep         float64      `json:"fd_step,omitempty"`
		FDProbes       []fdProbe    `json:"fd_probes,omitempty"`
		Inputs         []tensorFile `json:"inputs"`
	}
	var req struct {
		Jobs []jobJSON `json:"jobs"`
	}
	for j, job := range jobs {
		abs, err := filepath.Abs(job.model)
		if err != nil {
			return nil, fmt.Errorf("torch reference: %s: %w", job.model, err)
		}
		jj := jobJSON{Model: abs, DType: "float64", Mode: "run", Intermediates: job.opts.Intermediates, Inputs: []tensorFile{}}
		if job.opts.Float32 {
			jj.DType = "float32"
		}
		if tr := job.train; tr != nil {
			if len(tr.labels) == 0 {
				return nil, fmt.Errorf("torch reference: %s: training needs labels, one per sample", job.model)
			}
			if !(tr.smoothing >= 0 && tr.smoothing <= 1) {
				return nil, fmt.Errorf("torch reference: %s: label smoothing %g is not in [0, 1]", job.model, tr.smoothing)
			}
			jj.Mode, jj.Labels, jj.LabelSmoothing = "train", tr.labels, tr.smoothing
			jj.FDStep, jj.FDProbes = tr.fdStep, tr.probes
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
			Error    string                    `json:"error"`
			Outputs  []tensorFile              `json:"outputs"`
			Values   []tensorFile              `json:"values"`
			Stats    map[string]torchStatsJSON `json:"stats"`
			Loss     float64                   `json:"loss"`
			Grads    []tensorFile              `json:"grads"`
			Running  []tensorFile              `json:"running"`
			RhoBatch map[string]float64        `json:"rho_batch"`
			FD       []float64                 `json:"fd"`
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
		stats := make(map[string]DecoupledStats, len(rj.Stats))
		for name, s := range rj.Stats {
			stats[name] = DecoupledStats(s)
		}
		outputs, err := readTensorFiles(dir, rj.Outputs)
		if err != nil {
			results[j].err = fmt.Errorf("torch reference: %s: output %w", model, err)
			continue
		}
		if jobs[j].train != nil {
			tr := &TorchTrainResult{Loss: rj.Loss, RhoBatch: rj.RhoBatch, Outputs: outputs, Stats: stats}
			if tr.RhoBatch == nil {
				tr.RhoBatch = map[string]float64{}
			}
			if tr.Grads, err = readTensorFiles(dir, rj.Grads); err != nil {
				results[j].err = fmt.Errorf("torch reference: %s: gradient %w", model, err)
				continue
			}
			if tr.Running, err = readTensorFiles(dir, rj.Running); err != nil {
				results[j].err = fmt.Errorf("torch reference: %s: running statistic %w", model, err)
				continue
			}
			if len(rj.FD) != len(jobs[j].train.probes) {
				results[j].err = fmt.Errorf("torch reference: %s: %d finite differences for %d probes",
					model, len(rj.FD), len(jobs[j].train.probes))
				continue
			}
			results[j].train, results[j].fd = tr, rj.FD
			continue
		}
		res := &TorchResult{Outputs: outputs, Stats: stats}
		if rj.Values != nil {
			if res.Values, err = readTensorFiles(dir, rj.Values); err != nil {
				results[j].err = fmt.Errorf("torch reference: %s: value %w", model, err)
				continue
			}
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
