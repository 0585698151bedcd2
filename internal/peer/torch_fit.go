package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// FitBatch is one batch of a [TorchRunner.Fit] run: the graph inputs and
// one label per sample.
type FitBatch struct {
	Inputs map[string]Tensor
	Labels []int
}

// FitOptions configures the optimisation of a [TorchRunner.Fit] run.
type FitOptions struct {
	// Optimizer is "sgd", "adam" or "adamw" (torch.optim's, Adam's betas
	// 0.9 and 0.999, eps 1e-8); LR the learning rate; Momentum and
	// Nesterov configure SGD.
	Optimizer string
	LR        float64
	Momentum  float64
	Nesterov  bool
	// WeightDecay applies to every trained initializer except decoupled
	// filters (unless WDFilters) and RhoV.
	WeightDecay float64
	WDFilters   bool
	// Schedule is "const" (or empty) or "cosine" (CosineAnnealingLR over
	// the batches).
	Schedule string
	// ProjectEvery projects the decoupled filters with weighted = none
	// after every ProjectEvery-th step (0: never).
	ProjectEvery int
	// ClipNorm, when positive, clips the global gradient norm.
	ClipNorm float64
	// LabelSmoothing is the loss's label smoothing.
	LabelSmoothing float64
	// Float32 computes in float32 instead of float64 (to measure how far
	// float32 rounding alone moves the updates).
	Float32 bool
}

// FitResult is the outcome of a [TorchRunner.Fit] run.
type FitResult struct {
	// Losses holds the training loss of each step.
	Losses []float64
	// Updates holds, per trainable initializer, its value after the last
	// step minus its value before the first, computed in float64.
	Updates map[string]Tensor
}

// Fit runs one optimisation step per batch on the model at path with
// PyTorch's optimisers, in float64, and returns the losses and how far
// each trainable initializer moved (torch_ref.py documents the rules:
// DCNET.md section 4's weight decay and projection, one leaf per
// initializer, the training mode of [TorchRunner.Train]).
func (r *TorchRunner) Fit(modelPath string, batches []FitBatch, opts FitOptions) (*FitResult, error) {
	if r == nil {
		return nil, errors.New("torch reference: nil TorchRunner")
	}
	abs, err := filepath.Abs(modelPath)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dcconvert-fit-")
	if err != nil {
		return nil, fmt.Errorf("torch reference: %w", err)
	}
	defer os.RemoveAll(dir)
	type batchJSON struct {
		Inputs []tensorFile `json:"inputs"`
		Labels []int        `json:"labels"`
	}
	req := struct {
		Model          string      `json:"model"`
		DType          string      `json:"dtype"`
		Batches        []batchJSON `json:"batches"`
		Optimizer      string      `json:"optimizer"`
		LR             float64     `json:"lr"`
		Momentum       float64     `json:"momentum"`
		Nesterov       bool        `json:"nesterov"`
		WeightDecay    float64     `json:"weight_decay"`
		WDFilters      bool        `json:"wd_filters"`
		Schedule       string      `json:"schedule"`
		ProjectEvery   int         `json:"project_every"`
		ClipNorm       float64     `json:"clip_norm"`
		LabelSmoothing float64     `json:"label_smoothing"`
	}{Model: abs, DType: "float64", Optimizer: opts.Optimizer, LR: opts.LR, Momentum: opts.Momentum,
		Nesterov: opts.Nesterov, WeightDecay: opts.WeightDecay, WDFilters: opts.WDFilters,
		Schedule: opts.Schedule, ProjectEvery: opts.ProjectEvery, ClipNorm: opts.ClipNorm,
		LabelSmoothing: opts.LabelSmoothing}
	if opts.Float32 {
		req.DType = "float32"
	}
	if req.Schedule == "" {
		req.Schedule = "const"
	}
	for b, batch := range batches {
		bj := batchJSON{Labels: batch.Labels}
		names := make([]string, 0, len(batch.Inputs))
		for name := range batch.Inputs {
			names = append(names, name)
		}
		sort.Strings(names)
		for i, name := range names {
			f := tensorFile{Name: name, Dims: append([]int64{}, batch.Inputs[name].Dims...), File: fmt.Sprintf("batch%d_in%d.bin", b, i)}
			if err := writeTensor(filepath.Join(dir, f.File), batch.Inputs[name]); err != nil {
				return nil, fmt.Errorf("torch reference: %s: batch %d input %q: %w", modelPath, b, name, err)
			}
			bj.Inputs = append(bj.Inputs, f)
		}
		req.Batches = append(req.Batches, bj)
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	reqPath := filepath.Join(dir, "request.json")
	if err := os.WriteFile(reqPath, b, 0o644); err != nil {
		return nil, err
	}
	if _, err := r.runScript(dir, "fit", reqPath); err != nil {
		return nil, fmt.Errorf("torch reference: fitting %s: %w", modelPath, err)
	}
	respJSON, err := os.ReadFile(filepath.Join(dir, "response.json"))
	if err != nil {
		return nil, fmt.Errorf("torch reference: %s: reading the response: %w", modelPath, err)
	}
	var resp struct {
		Error   string       `json:"error"`
		Losses  []float64    `json:"losses"`
		Updates []tensorFile `json:"updates"`
	}
	if err := json.Unmarshal(respJSON, &resp); err != nil {
		return nil, fmt.Errorf("torch reference: %s: reading the response: %w", modelPath, err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("torch reference: fitting %s: %s", modelPath, resp.Error)
	}
	updates, err := readTensorFiles(dir, resp.Updates)
	if err != nil {
		return nil, fmt.Errorf("torch reference: %s: update %w", modelPath, err)
	}
	return &FitResult{Losses: resp.Losses, Updates: updates}, nil
}
