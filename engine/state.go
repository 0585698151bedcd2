package engine

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	G "gorgonia.org/gorgonia"
)

// Running statistics. The engine keeps, outside the Gorgonia graph and in
// float64, every value a training forward pass updates: the running mean
// and variance of each BatchNormalization, the RhoScale of each decoupled
// convolution with a learnable radius, their step counters and the number
// of training batches run. After each training batch (Forward or Step in
// Training mode) it updates them and writes them into the graph's
// constant inputs, which inference-mode graphs read.

// StepKey is the State entry holding the number of training batches the
// engine has run, a scalar. Dropout masks derive from it.
const StepKey = "#step"

// CounterSuffix ends the State entry of a decoupled convolution's
// running-average step count t: "<RhoScale initializer>#t", a scalar
// (see State).
const CounterSuffix = "#t"

// rhoDecay is the decay of the RhoScale running average (DCNET.md
// section 2).
const rhoDecay = 0.999

// stateSlot is one running statistic: an initializer at one of its uses,
// held in float64 and copied into the graph's constant input.
type stateSlot struct {
	name  string
	shape []int
	data  []float64
	node  *G.Node
	value G.Value
}

// store copies the slot's data into the graph.
func (s *stateSlot) store() error { return storeF64(s.value, s.data) }

// bnUpdate updates the running statistics of one BatchNormalization from
// the batch statistics of the last training forward pass:
// running = momentum*running + (1-momentum)*batch.
type bnUpdate struct {
	node           string
	momentum       float64
	mean, variance *stateSlot
	stat           *bnStat
}

// rhoUpdate updates the RhoScale of one decoupled convolution from the
// batch mean m of the patch norm of the last training forward pass
// (DCNET.md section 2). A calibrated layer keeps the plain running
// average RhoScale <- 0.999 RhoScale + 0.001 m; an uncalibrated one (listed
// in the ai.dcnet.uncalibrated metadata) keeps the bias-corrected average
// S_t = 0.999 S_(t-1) + 0.001 m_t, S_0 = 0, RhoScale = S_t / (1 - 0.999^t),
// where S_(t-1) is recovered from RhoScale and t, so t is all it stores
// besides RhoScale.
type rhoUpdate struct {
	node         string
	scale        *stateSlot
	stat         *rhoStat
	uncalibrated bool
	t            uint64
}

// counterName is the State entry of the update's step count.
func (r *rhoUpdate) counterName() string { return r.scale.name + CounterSuffix }

// apply performs one update with batch mean m.
func (r *rhoUpdate) apply(m float64) {
	old := r.scale.data[0]
	r.t++
	if !r.uncalibrated {
		r.scale.data[0] = rhoDecay*old + (1-rhoDecay)*m
		return
	}
	t := float64(r.t)
	prev := old * (1 - math.Pow(rhoDecay, t-1)) // S_(t-1); 0 at t = 1
	s := rhoDecay*prev + (1-rhoDecay)*m
	r.scale.data[0] = s / (1 - math.Pow(rhoDecay, t))
}

// dropMask is the mask input of one Dropout node in Training mode.
type dropMask struct {
	index int // the node's index in the graph
	ratio float64
	node  *G.Node
	value G.Value
}

// fill draws the mask of a training step: each element is 0 with
// probability ratio, else 1/(1-ratio), from a PCG generator seeded with
// (seed, mix(step, node index)) only.
func (d *dropMask) fill(seed, step uint64) error {
	r := rand.New(rand.NewPCG(seed, splitmix(splitmix(step)^uint64(d.index))))
	keep := 1 / (1 - d.ratio)
	n := 1
	if t, ok := d.value.(interface{ Size() int }); ok {
		n = t.Size()
	}
	return storeFunc(d.value, n, func(int) float64 {
		if r.Float64() < d.ratio {
			return 0
		}
		return keep
	})
}

// splitmix is the SplitMix64 finaliser, mixing a counter into a seed.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// beforeTraining prepares a training forward pass: it draws the dropout
// masks of the current step and clears the statistics of the last pass.
func (e *Engine) beforeTraining() {
	for _, d := range e.drops {
		// The mask value is allocated by the builder with the right
		// size, so filling it cannot fail.
		_ = d.fill(e.opts.Seed, e.steps)
	}
	for _, u := range e.bns {
		u.stat.Valid = false
	}
	for _, u := range e.rhos {
		u.stat.Valid = false
	}
}

// afterTraining applies the batch statistics of a training forward pass
// to the running statistics and counts the step.
func (e *Engine) afterTraining() {
	for _, u := range e.bns {
		if !u.stat.Valid {
			continue
		}
		for _, p := range []struct {
			slot  *stateSlot
			batch []float64
		}{{u.mean, u.stat.Mean}, {u.variance, u.stat.Var}} {
			if len(p.batch) != len(p.slot.data) {
				continue
			}
			for c, x := range p.batch {
				p.slot.data[c] = u.momentum*p.slot.data[c] + (1-u.momentum)*x
			}
			_ = p.slot.store()
		}
	}
	for _, u := range e.rhos {
		if !u.stat.Valid {
			continue
		}
		u.apply(u.stat.Batch)
		_ = u.scale.store()
	}
	e.steps++
}

// Stat is a running statistic or counter in the engine's own float64
// precision, as Stats returns it: a checkpoint that stores these restores
// the engine exactly.
type Stat struct {
	Shape []int
	Data  []float64
}

// Stats returns the running statistics by name: for every
// BatchNormalization its running mean and variance, and for every
// decoupled convolution with a learnable radius its RhoScale, each under
// the initializer's name (its second and later uses as
// "<initializer>@<node>", as for Params); for each RhoScale its
// running-average step count under "<initializer>#t" (CounterSuffix);
// and the number of training batches run under StepKey. Counters are
// scalars (shape []). The map is a copy.
func (e *Engine) Stats() map[string]Stat {
	out := make(map[string]Stat, len(e.slots)+len(e.rhos)+1)
	for _, s := range e.slots {
		out[s.name] = Stat{Shape: slices.Clone(s.shape), Data: slices.Clone(s.data)}
	}
	for _, r := range e.rhos {
		out[r.counterName()] = Stat{Shape: []int{}, Data: []float64{float64(r.t)}}
	}
	out[StepKey] = Stat{Shape: []int{}, Data: []float64{float64(e.steps)}}
	return out
}

// State returns Stats rounded to float32.
func (e *Engine) State() map[string]Tensor {
	stats := e.Stats()
	out := make(map[string]Tensor, len(stats))
	for name, s := range stats {
		out[name] = Tensor{Shape: s.Shape, Data: convertSlice[float32](s.Data)}
	}
	return out
}

// SetState restores running statistics and counters saved by State; see
// SetStats.
func (e *Engine) SetState(st map[string]Tensor) error {
	stats := make(map[string]Stat, len(st))
	for name, t := range st {
		if err := t.check(t.Shape); err != nil {
			return fmt.Errorf("state %q: %w", name, err)
		}
		stats[name] = Stat{Shape: t.Shape, Data: convertSlice[float64](t.Data)}
	}
	return e.SetStats(stats)
}

// SetStats restores running statistics and counters saved by Stats (from
// a checkpoint). Entries not given keep their values; an unknown name, a
// wrong shape or a counter that is not a non-negative integer is an
// error, and then nothing is changed.
func (e *Engine) SetStats(st map[string]Stat) error {
	if e.closed {
		return errClosed
	}
	counters := map[string]*rhoUpdate{}
	for _, r := range e.rhos {
		counters[r.counterName()] = r
	}
	names := make([]string, 0, len(st))
	for name := range st {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	var apply []func()
	for _, name := range names {
		t := st[name]
		if s, ok := e.slotBy[name]; ok {
			if err := checkStat(t, s.shape); err != nil {
				errs = append(errs, fmt.Errorf("state %q: %w", name, err))
				continue
			}
			apply = append(apply, func() {
				copy(s.data, t.Data)
				_ = s.store()
			})
			continue
		}
		r, isCounter := counters[name]
		if !isCounter && name != StepKey {
			errs = append(errs, fmt.Errorf("state %q: no such running statistic or counter", name))
			continue
		}
		n, err := counterValue(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("state %q: %w", name, err))
			continue
		}
		if isCounter {
			apply = append(apply, func() { r.t = n })
		} else {
			apply = append(apply, func() { e.steps = n })
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, f := range apply {
		f()
	}
	return nil
}

// checkStat checks a statistic's shape and length.
func checkStat(t Stat, want []int) error {
	if !slices.Equal(t.Shape, want) {
		return fmt.Errorf("shape %v, want %v", t.Shape, want)
	}
	if len(t.Data) != numElements(want) {
		return fmt.Errorf("%d values for shape %v (%d elements)", len(t.Data), want, numElements(want))
	}
	return nil
}

// counterValue reads a scalar counter.
func counterValue(t Stat) (uint64, error) {
	if err := checkStat(t, []int{}); err != nil {
		return 0, err
	}
	x := t.Data[0]
	if x < 0 || x != math.Trunc(x) {
		return 0, fmt.Errorf("counter %v is not a non-negative integer", x)
	}
	return uint64(x), nil
}
