package finetune

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/engine"
)

// Metadata keys of a snapshot.
const (
	// MetaStep is the number of optimisation steps done.
	MetaStep = "dcconvert.step"
	// MetaOptimizer is the optimiser whose state the snapshot holds.
	MetaOptimizer = "dcconvert.optimizer"
)

// Snapshot returns the trainer's whole state as the tensors of a
// checkpoint file, so that Restore continues the run exactly:
//
//   - every parameter of the engine, trained or frozen, under its name
//     (the initializer's; "<initializer>@<node>" for a later use of a
//     shared one), float32;
//   - the optimiser state of each trained parameter under
//     "<slot>/<parameter>" (SlotMomentum, SlotAdamM, SlotAdamV), float32;
//   - the running statistics (BatchNormalization mean and variance,
//     RhoScale) under their initializer names in the engine's float64,
//     and the counters (each RhoScale's running-average step count
//     "<RhoScale>#t" and the engine's batch count "#step") as int64.
//
// The metadata holds MetaStep and MetaOptimizer. The sample order,
// augmentation and dropout masks derive from the seed and these counts,
// so they are the random state.
func (t *Trainer) Snapshot() (checkpoint.File, error) {
	f := checkpoint.File{Tensors: map[string]checkpoint.Tensor{}, Metadata: map[string]string{
		MetaStep:      strconv.FormatInt(t.step, 10),
		MetaOptimizer: string(t.cfg.Optimizer),
	}}
	for _, p := range t.params {
		f.Tensors[p.name] = checkpoint.Tensor{Shape: slices.Clone(p.shape), F32: slices.Clone(p.value)}
		for slot, v := range p.slots {
			f.Tensors[slot+"/"+p.name] = checkpoint.Tensor{Shape: slices.Clone(p.shape), F32: slices.Clone(v)}
		}
	}
	for _, name := range t.frozen {
		v, err := t.eng.Param(name)
		if err != nil {
			return checkpoint.File{}, err
		}
		f.Tensors[name] = checkpoint.Tensor{Shape: v.Shape, F32: v.Data}
	}
	for name, s := range t.eng.Stats() {
		if isCounter(name) {
			f.Tensors[name] = checkpoint.Tensor{Shape: s.Shape, I64: []int64{int64(s.Data[0])}}
			continue
		}
		f.Tensors[name] = checkpoint.Tensor{Shape: s.Shape, F64: s.Data}
	}
	return f, nil
}

// IsOptimizerState reports whether a snapshot tensor is optimiser state,
// "<slot>/<parameter>" with slot one of SlotMomentum, SlotAdamM and
// SlotAdamV.
func IsOptimizerState(name string) bool {
	slot, _, ok := strings.Cut(name, "/")
	return ok && (slot == SlotMomentum || slot == SlotAdamM || slot == SlotAdamV)
}

// isCounter reports whether a state name is one of the engine's counters.
func isCounter(name string) bool {
	return name == engine.StepKey || strings.HasSuffix(name, engine.CounterSuffix)
}

// Restore sets the trainer's state from a snapshot of the same model and
// configuration (see Snapshot). A snapshot that does not fit (a missing
// or extra tensor, another shape or element type, another optimiser) is
// an error listing every problem, and then nothing is changed.
func (t *Trainer) Restore(f checkpoint.File) error {
	var errs []error
	if o := f.Metadata[MetaOptimizer]; o != string(t.cfg.Optimizer) {
		errs = append(errs, fmt.Errorf("the checkpoint holds the state of optimiser %q, the run uses %q", o, t.cfg.Optimizer))
	}
	step, err := strconv.ParseInt(f.Metadata[MetaStep], 10, 64)
	if err != nil || step < 0 {
		errs = append(errs, fmt.Errorf("metadata %s = %q is not a step count", MetaStep, f.Metadata[MetaStep]))
	}
	used := map[string]bool{}
	take := func(name string, shape []int, dt checkpoint.DType) (checkpoint.Tensor, bool) {
		v, ok := f.Tensors[name]
		used[name] = true
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("tensor %q is missing", name))
		case v.DType() != dt:
			errs = append(errs, fmt.Errorf("tensor %q is %s, want %s", name, v.DType(), dt))
		case !slices.Equal(v.Shape, shape):
			errs = append(errs, fmt.Errorf("tensor %q has shape %v, the model's is %v", name, v.Shape, shape))
		default:
			return v, true
		}
		return checkpoint.Tensor{}, false
	}
	var apply []func() error
	for _, p := range t.params {
		if v, ok := take(p.name, p.shape, checkpoint.F32); ok {
			apply = append(apply, func() error {
				copy(p.value, v.F32)
				return t.eng.SetParam(p.name, engine.Tensor{Shape: p.shape, Data: p.value})
			})
		}
		for slot, dst := range p.slots {
			if v, ok := take(slot+"/"+p.name, p.shape, checkpoint.F32); ok {
				apply = append(apply, func() error { copy(dst, v.F32); return nil })
			}
		}
	}
	for _, name := range t.frozen {
		cur, err := t.eng.Param(name)
		if err != nil {
			return err
		}
		if v, ok := take(name, cur.Shape, checkpoint.F32); ok {
			apply = append(apply, func() error { return t.eng.SetParam(name, engine.Tensor{Shape: cur.Shape, Data: v.F32}) })
		}
	}
	stats := map[string]engine.Stat{}
	for name, s := range t.eng.Stats() {
		dt := checkpoint.F64
		if isCounter(name) {
			dt = checkpoint.I64
		}
		v, ok := take(name, s.Shape, dt)
		if !ok {
			continue
		}
		if dt == checkpoint.I64 {
			stats[name] = engine.Stat{Shape: s.Shape, Data: []float64{float64(v.I64[0])}}
		} else {
			stats[name] = engine.Stat{Shape: s.Shape, Data: v.F64}
		}
	}
	var extra []string
	for name := range f.Tensors {
		if !used[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		if len(extra) > 5 {
			extra = append(extra[:5], fmt.Sprintf("and %d more", len(extra)-5))
		}
		errs = append(errs, fmt.Errorf("tensors the run does not have: %s", strings.Join(extra, ", ")))
	}
	if len(errs) > 0 {
		return fmt.Errorf("the checkpoint does not fit the model and configuration: %w", errors.Join(errs...))
	}
	if err := t.eng.SetStats(stats); err != nil {
		return err
	}
	for _, f := range apply {
		if err := f(); err != nil {
			return err
		}
	}
	t.step = step
	return nil
}

// Weights returns the values of every engine parameter, trained or
// frozen, by name, and the running statistics rounded to float32
// (without the counters): what an exported model holds.
func (t *Trainer) Weights() (map[string]engine.Tensor, error) {
	out := map[string]engine.Tensor{}
	for _, p := range t.params {
		out[p.name] = engine.Tensor{Shape: slices.Clone(p.shape), Data: slices.Clone(p.value)}
	}
	for _, name := range t.frozen {
		v, err := t.eng.Param(name)
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	for name, s := range t.eng.State() {
		if !isCounter(name) {
			out[name] = s
		}
	}
	return out, nil
}
