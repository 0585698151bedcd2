package main

import (
	"fmt"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// calibBatch is the batch size calibration runs the engine with.
const calibBatch = 64

// engineCalibrator is the rewrite.Calibrator of the command line: the
// engine computes a layer's inputs and its statistics on the first batches
// of the calibration data's training split, in a seeded order. The data's
// preprocessing is the model's (metadata, else mean 0 and std 1), as eval
// does it.
type engineCalibrator struct {
	set     data.Set
	pre     data.Preprocess
	input   string // the graph input images go to
	batch   int
	batches int
}

// newEngineCalibrator opens the calibration data for the model at path.
func newEngineCalibrator(path string, m *onnximport.Model, dir string, batches int) (*engineCalibrator, error) {
	opts := &evalOptions{Model: path, Data: dir, Split: data.SplitTrain, Batch: calibBatch}
	plan, err := planEval(opts, m)
	if err != nil {
		return nil, err
	}
	set, _, err := openEvalData(opts, plan)
	if err != nil {
		return nil, fmt.Errorf("calibration data: %w", err)
	}
	in := plan.pre.Input
	return &engineCalibrator{
		set:     set,
		pre:     data.Preprocess{C: in[0], H: in[1], W: in[2], Mean: plan.pre.Mean, Std: plan.pre.Std},
		input:   plan.input,
		batch:   min(calibBatch, set.Len()),
		batches: batches,
	}, nil
}

// MeanPatchNorm implements rewrite.Calibrator with the engine's kernel.
func (c *engineCalibrator) MeanPatchNorm(m *onnximport.Model, node string) (float64, error) {
	lc, err := c.layer(m, node)
	if err != nil {
		return 0, err
	}
	if err := c.inputs(m, node, lc.AddPatchNorms); err != nil {
		return 0, err
	}
	return lc.MeanPatchNorm(), nil
}

// ScaleSums implements rewrite.Calibrator with the engine's kernel.
func (c *engineCalibrator) ScaleSums(m *onnximport.Model, node string) ([]float64, []float64, error) {
	lc, err := c.layer(m, node)
	if err != nil {
		return nil, nil, err
	}
	if err := c.inputs(m, node, lc.AddScale); err != nil {
		return nil, nil, err
	}
	num, den := lc.ScaleSums()
	return num, den, nil
}

// layer starts the calibration of the node named node.
func (c *engineCalibrator) layer(m *onnximport.Model, node string) (*engine.LayerCalibration, error) {
	l, err := rewrite.ReadLayer(m, node)
	if err != nil {
		return nil, err
	}
	return engine.NewLayerCalibration(l.Config, l.Window, l.W, l.WShape, l.RhoV, l.RhoScale), nil
}

// inputs runs m on the calibration batches and hands fn the input of the
// node named node.
func (c *engineCalibrator) inputs(m *onnximport.Model, node string, fn func([]float64, [4]int) error) error {
	var x string
	for _, n := range m.Graph().GetNode() {
		if n.GetName() == node && len(n.GetInput()) > 0 {
			x = n.GetInput()[0]
		}
	}
	if x == "" {
		return fmt.Errorf("no node %q", node)
	}
	e, err := engine.Build(m, engine.Options{Mode: engine.Inference, Batch: c.batch, Taps: []string{x}})
	if err != nil {
		return err
	}
	defer e.Close()
	loader, err := data.NewLoader(c.set, data.LoaderOptions{Batch: c.batch, Shuffle: true, Seed: 1, DropLast: true, Pre: c.pre})
	if err != nil {
		return err
	}
	done := 0
	for b, err := range loader.Epoch(0) {
		if err != nil {
			return err
		}
		if done == c.batches {
			break
		}
		out, err := e.Forward(map[string]engine.Tensor{c.input: {Shape: b.Shape, Data: b.X}})
		if err != nil {
			return err
		}
		t := out[x]
		if len(t.Shape) != 4 {
			return fmt.Errorf("the input %q of %q has shape %v, want 4 dimensions", x, node, t.Shape)
		}
		v := make([]float64, len(t.Data))
		for i, f := range t.Data {
			v[i] = float64(f)
		}
		if err := fn(v, [4]int{t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]}); err != nil {
			return err
		}
		done++
	}
	return nil
}
