package finetune

import (
	"fmt"
	"time"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/engine"
)

// Evaluator feeds every batch of a data set through an inference engine
// and accumulates the classification metrics of one graph output.
type Evaluator struct {
	// Engine is an inference engine built for a fixed batch size.
	Engine *engine.Engine
	// Input is the graph input fed with images; Output the output holding
	// the class scores, of width Classes, which hold Scores.
	Input, Output string
	Classes       int
	Scores        engine.Scores
	// Progress, when not nil, is called after each batch with the number
	// of its samples.
	Progress func(n int)
}

// Run evaluates every batch of epoch 0 of the loader and returns the
// metrics and the time spent in forward passes. A last batch smaller
// than the engine's batch is padded with zeros, and the padded rows are
// left out of the metrics.
func (ev *Evaluator) Run(loader *data.Loader) (engine.Metrics, time.Duration, error) {
	var metrics engine.Metrics
	var inference time.Duration
	shape, ok := ev.Engine.InputShape(ev.Input)
	if !ok || len(shape) == 0 {
		return metrics, 0, fmt.Errorf("%q is not an input of the engine", ev.Input)
	}
	batch := shape[0]
	var padded []float32
	for b, err := range loader.Epoch(0) {
		if err != nil {
			return metrics, inference, err
		}
		n := b.Shape[0]
		x := b.X
		if n < batch {
			if padded == nil {
				padded = make([]float32, numel(shape))
			}
			copy(padded, b.X)
			clear(padded[len(b.X):])
			x = padded
		}
		t0 := time.Now()
		out, err := ev.Engine.Forward(map[string]engine.Tensor{ev.Input: {Shape: shape, Data: x}})
		inference += time.Since(t0)
		if err != nil {
			return metrics, inference, err
		}
		y, ok := out[ev.Output]
		if !ok || len(y.Shape) != 2 || y.Shape[0] != batch || y.Shape[1] != ev.Classes {
			return metrics, inference, fmt.Errorf("output %q has shape %v, want [%d %d]", ev.Output, y.Shape, batch, ev.Classes)
		}
		if err := metrics.Add(y.Data[:n*ev.Classes], ev.Classes, b.Labels, ev.Scores); err != nil {
			return metrics, inference, fmt.Errorf("images %d to %d: %w", metrics.Samples, metrics.Samples+n-1, err)
		}
		if ev.Progress != nil {
			ev.Progress(n)
		}
	}
	return metrics, inference, nil
}

// numel returns the number of elements of a shape.
func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
