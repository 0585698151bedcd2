package finetune

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/engine"
)

// Reason says why Run asks for a checkpoint.
type Reason int

// The reasons for a checkpoint.
const (
	// ReasonEval follows a validation (at the end of an epoch, or every
	// Config.EvalEvery steps).
	ReasonEval Reason = iota
	// ReasonEnd follows the last step (and its validation).
	ReasonEnd
	// ReasonInterrupt follows the step in progress when the context was
	// cancelled.
	ReasonInterrupt
)

// String names the reason.
func (r Reason) String() string {
	switch r {
	case ReasonEnd:
		return "end"
	case ReasonInterrupt:
		return "interrupt"
	}
	return "eval"
}

// EvalInfo is the result of one validation.
type EvalInfo struct {
	// Step is the number of steps done; Epoch the fractional epochs done.
	Step  int64
	Epoch float64
	// Metrics holds the validation metrics.
	Metrics engine.Metrics
	// Duration is the wall time of the validation.
	Duration time.Duration
}

// CheckpointInfo asks a Checkpoint hook to save the trainer's state.
type CheckpointInfo struct {
	Step   int64
	Epoch  float64
	Reason Reason
	// Val is the validation that came just before, or nil.
	Val *EvalInfo
}

// Hooks are the callbacks through which Run reports (on step, on
// validation, on epoch, on checkpoint); each may be nil. An
// error returned by a hook stops the run and is returned by Run.
type Hooks struct {
	// Step follows every optimisation step.
	Step func(StepInfo) error
	// Eval follows every validation.
	Eval func(EvalInfo) error
	// Epoch follows the end of every epoch, after its validation and
	// checkpoint, with the number of epochs done (1 after the first).
	Epoch func(epochs int) error
	// Checkpoint is called when the state should be saved (see Reason);
	// Snapshot gives the state.
	Checkpoint func(CheckpointInfo) error
}

// ErrInterrupted is returned by Run when its context was cancelled: the
// step in progress was finished and the Checkpoint hook called.
var ErrInterrupted = errors.New("training interrupted")

// Data is what Run trains and validates on.
type Data struct {
	// Train is the training set; Val, when not nil, the validation set.
	Train, Val data.Set
	// Pre converts the images to the model's input.
	Pre data.Preprocess
}

// Loader returns the loader of the training set: batches of Config.Batch
// in the seeded, optionally shuffled order, augmented, a last smaller
// batch left out.
func (t *Trainer) Loader(d Data) (*data.Loader, error) {
	if n := d.Train.Len(); n < t.cfg.Batch {
		return nil, &FlagError{Flag: "--batch", Err: fmt.Errorf("%d: the training data has only %d samples, fewer than one batch", t.cfg.Batch, n)}
	}
	l, err := data.NewLoader(d.Train, data.LoaderOptions{Batch: t.cfg.Batch, Shuffle: t.cfg.Shuffle,
		Augment: t.cfg.Augment, Seed: t.cfg.Seed, DropLast: true, Pre: d.Pre})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// TotalSteps returns the number of steps of the run for the given number
// of batches per epoch: Config.Steps, or Config.Epochs epochs.
func (t *Trainer) TotalSteps(perEpoch int) int64 {
	if t.cfg.Steps > 0 {
		return int64(t.cfg.Steps)
	}
	return int64(t.cfg.Epochs) * int64(perEpoch)
}

// Run trains from the current step (0, or that of a restored snapshot) to
// the end of the run. Epoch e's batches come from the training loader's
// order for e, so a run resumed at any step sees the same batches as one
// that was not interrupted. It validates on d.Val at the end of every
// epoch, every Config.EvalEvery steps and after the last step, and calls
// the hooks. When ctx is cancelled, Run finishes the step in progress,
// calls the Checkpoint hook and returns ErrInterrupted.
func (t *Trainer) Run(ctx context.Context, d Data, hooks Hooks) error {
	loader, err := t.Loader(d)
	if err != nil {
		return err
	}
	var val *data.Loader
	if d.Val != nil {
		val, err = data.NewLoader(d.Val, data.LoaderOptions{Batch: t.cfg.Batch, Pre: d.Pre})
		if err != nil {
			return fmt.Errorf("validation data: %w", err)
		}
	}
	per := loader.BatchesPerEpoch()
	total := t.TotalSteps(per)
	epochs := func() float64 { return float64(t.step) / float64(per) }
	checkpoint := func(r Reason, v *EvalInfo) error {
		if hooks.Checkpoint == nil {
			return nil
		}
		return hooks.Checkpoint(CheckpointInfo{Step: t.step, Epoch: epochs(), Reason: r, Val: v})
	}
	for t.step < total {
		if ctx.Err() != nil {
			if err := checkpoint(ReasonInterrupt, nil); err != nil {
				return err
			}
			return ErrInterrupted
		}
		epoch, from := int(t.step/int64(per)), int(t.step%int64(per))
		i := from
		for b, err := range loader.Batches(epoch, from) {
			if err != nil {
				return fmt.Errorf("training data: %w", err)
			}
			info, err := t.TrainStep(b, total)
			if err != nil {
				return err
			}
			info.Epoch, info.Batch, info.BatchesPerEpoch = epoch, i, per
			i++
			if hooks.Step != nil {
				if err := hooks.Step(info); err != nil {
					return err
				}
			}
			last := t.step == total
			if last || t.step%int64(per) == 0 || (t.cfg.EvalEvery > 0 && t.step%int64(t.cfg.EvalEvery) == 0) {
				var v *EvalInfo
				if val != nil {
					start := time.Now()
					m, err := t.Evaluate(val)
					if err != nil {
						return fmt.Errorf("validation after step %d: %w", t.step, err)
					}
					v = &EvalInfo{Step: t.step, Epoch: epochs(), Metrics: m, Duration: time.Since(start)}
					if hooks.Eval != nil {
						if err := hooks.Eval(*v); err != nil {
							return err
						}
					}
				}
				r := ReasonEval
				if last {
					r = ReasonEnd
				}
				if err := checkpoint(r, v); err != nil {
					return err
				}
			}
			if t.step%int64(per) == 0 && hooks.Epoch != nil {
				if err := hooks.Epoch(int(t.step / int64(per))); err != nil {
					return err
				}
			}
			if last {
				return nil
			}
			if ctx.Err() != nil {
				break // checkpointed at the top of the loop
			}
		}
	}
	return nil
}

// Evaluate runs the model with the current weights and running
// statistics in inference mode over every batch of loader (whose batch
// size must be Config.Batch) and returns the metrics.
func (t *Trainer) Evaluate(loader *data.Loader) (engine.Metrics, error) {
	if t.evalEng == nil {
		e, err := engine.Build(t.model, engine.Options{Mode: engine.Inference, Batch: t.cfg.Batch})
		if err != nil {
			return engine.Metrics{}, err
		}
		t.evalEng = e
		for _, name := range t.frozen {
			if err := copyParam(e, t.eng, name); err != nil {
				return engine.Metrics{}, err
			}
		}
	}
	for _, p := range t.params {
		if err := t.evalEng.SetParam(p.name, engine.Tensor{Shape: p.shape, Data: p.value}); err != nil {
			return engine.Metrics{}, err
		}
	}
	// The inference engine keeps the running statistics, not the
	// training-only counters.
	stats, trained := t.evalEng.Stats(), t.eng.Stats()
	for name := range stats {
		stats[name] = trained[name]
	}
	if err := t.evalEng.SetStats(stats); err != nil {
		return engine.Metrics{}, err
	}
	ev := Evaluator{Engine: t.evalEng, Input: t.input, Output: t.output, Classes: t.classes, Scores: t.scores}
	m, _, err := ev.Run(loader)
	return m, err
}

// copyParam copies a parameter's value from one engine to another.
func copyParam(dst, src *engine.Engine, name string) error {
	v, err := src.Param(name)
	if err != nil {
		return err
	}
	return dst.SetParam(name, v)
}
