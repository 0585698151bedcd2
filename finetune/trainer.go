package finetune

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/onnximport"
)

// param is one parameter of the engine that trains: its value (the
// master copy the optimiser updates and copies into the engine), its
// optimiser state and what the training rules need to know of it.
type param struct {
	name  string // the engine's name: the initializer's, "<init>@<node>" for a later use
	init  string
	role  Role
	shape []int
	value []float32
	slots map[string][]float32
	decay bool
	// filter is the layer's configuration for a decoupled filter, and
	// rowLen the length of one output channel's filter.
	filter *dcnet.Config
	rowLen int
}

// Trainer fine-tunes one model: it owns a training engine built for the
// configuration's batch size, the trained parameters and the optimiser
// state, and counts the steps done. It never prints: Run reports through
// Hooks.
type Trainer struct {
	cfg     Config
	model   *onnximport.Model
	eng     *engine.Engine
	input   string // the graph input fed with images
	output  string // the first graph output, the class scores
	classes int
	scores  engine.Scores
	params  []*param // the trained parameters, in engine order
	frozen  []string // the engine parameters that do not train
	opt     optimizer
	step    int64 // optimisation steps done
	evalEng *engine.Engine
	// live says the parameters' values are the engine's own storage
	// (engine.ParamData), so updates need no copy into the engine.
	live bool
}

// New prepares the fine-tuning of m on data of the given number of
// classes. With cfg.NewHead the classifier of m is replaced first (m is
// changed); otherwise a classifier of another width is an error. m must
// have one image input and class scores as its first output.
func New(m *onnximport.Model, cfg Config, classes int) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.NewHead {
		if err := NewHead(m, classes, cfg.Seed); err != nil {
			return nil, err
		}
	} else {
		have, err := Classes(m)
		if err != nil {
			return nil, err
		}
		if have != classes {
			return nil, &FlagError{Flag: "--new-head", Err: fmt.Errorf(
				"the model's classifier has %d outputs but the data has %d classes; add --new-head to replace the classifier with one of %d outputs",
				have, classes, classes)}
		}
	}
	if err := engine.Check(m); err != nil {
		return nil, err
	}
	t := &Trainer{cfg: cfg, model: m, classes: classes, scores: engine.ScoresOf(m), opt: newOptimizer(cfg)}
	var err error
	t.input, t.output, err = imageIO(m)
	if err != nil {
		return nil, err
	}
	t.eng, err = engine.Build(m, engine.Options{Mode: engine.Training, Batch: cfg.Batch, Seed: cfg.Seed, LabelSmoothing: cfg.LabelSmoothing})
	if err != nil {
		return nil, err
	}
	t.live = t.eng.Options().DType == engine.Float32
	if err := t.selectParams(); err != nil {
		t.eng.Close()
		return nil, err
	}
	return t, nil
}

// imageIO returns the one graph input that is not an initializer and the
// first graph output.
func imageIO(m *onnximport.Model) (string, string, error) {
	g := m.Graph()
	var inputs []string
	for _, vi := range g.GetInput() {
		if _, ok := m.Initializer(vi.GetName()); !ok {
			inputs = append(inputs, vi.GetName())
		}
	}
	if len(inputs) != 1 {
		return "", "", fmt.Errorf("the graph has %d inputs %v; fine-tuning feeds images to a model with one input", len(inputs), inputs)
	}
	if len(g.GetOutput()) == 0 {
		return "", "", errors.New("the graph has no output")
	}
	return inputs[0], g.GetOutput()[0].GetName(), nil
}

// selectParams sorts the engine's parameters into trained and frozen and
// allocates the optimiser state.
func (t *Trainer) selectParams() error {
	rs, filters, err := roles(t.model)
	if err != nil {
		return err
	}
	for _, name := range t.eng.Params() {
		init := initOf(t.model, name)
		r := rs[init]
		if !t.cfg.trains(r, init) {
			t.frozen = append(t.frozen, name)
			continue
		}
		v, err := t.eng.Param(name)
		if err != nil {
			return err
		}
		if t.live {
			if v.Data, err = t.eng.ParamData(name); err != nil {
				return err
			}
		}
		p := &param{name: name, init: init, role: r, shape: v.Shape, value: v.Data, slots: map[string][]float32{}}
		p.decay = t.cfg.decays(r)
		if r == RoleFilter {
			c := filters[init]
			p.filter = &c
			p.rowLen = numel(v.Shape[1:])
		}
		for _, s := range t.opt.slots() {
			p.slots[s] = make([]float32, len(v.Data))
		}
		t.params = append(t.params, p)
	}
	if len(t.params) == 0 {
		return &FlagError{Flag: "--train", Err: fmt.Errorf("no parameter trains: --train %s with --freeze %v leaves nothing", t.cfg.Train, t.cfg.Freeze)}
	}
	return nil
}

// Close releases the engines.
func (t *Trainer) Close() error {
	errs := []error{t.eng.Close()}
	if t.evalEng != nil {
		errs = append(errs, t.evalEng.Close())
	}
	return errors.Join(errs...)
}

// Model returns the model being trained (with its new head, if any). Its
// initializers hold the values it was built from, not the trained ones:
// see Weights.
func (t *Trainer) Model() *onnximport.Model { return t.model }

// Input and Output name the graph input fed with images and the output
// holding the class scores.
func (t *Trainer) Input() string  { return t.input }
func (t *Trainer) Output() string { return t.output }

// Step returns the number of optimisation steps done.
func (t *Trainer) Step() int64 { return t.step }

// Trained returns the names of the trained parameters, and Frozen those
// of the others, in engine order.
func (t *Trainer) Trained() []string {
	out := make([]string, len(t.params))
	for i, p := range t.params {
		out[i] = p.name
	}
	return out
}

// Frozen returns the names of the parameters that do not train.
func (t *Trainer) Frozen() []string { return slices.Clone(t.frozen) }

// StepInfo describes one optimisation step.
type StepInfo struct {
	// Step is the 1-based number of the step, Total the run's steps.
	Step, Total int64
	// Epoch is the 0-based epoch, Batch the 0-based batch of the epoch
	// and BatchesPerEpoch their number (0 outside Run).
	Epoch, Batch, BatchesPerEpoch int
	// Loss is the training loss of the batch (with the orthogonality
	// regulariser); LR the learning rate used.
	Loss, LR float64
	// Correct counts the samples of the batch whose label ranked first,
	// out of Samples.
	Correct, Samples int
	// GradNorm is the global L2 norm of the trained parameters' gradients
	// before clipping.
	GradNorm float64
	// Duration is the wall time of the step.
	Duration time.Duration
}

// grad returns the gradient of the last step for a parameter: the
// engine's own storage when live (zeros when the loss does not depend on
// the parameter), else a copy.
func (t *Trainer) grad(p *param) ([]float32, error) {
	if !t.live {
		g, err := t.eng.Grad(p.name)
		return g.Data, err
	}
	g, err := t.eng.GradData(p.name)
	if err != nil || g != nil {
		return g, err
	}
	return make([]float32, len(p.value)), nil
}

// DivergedError reports a loss or gradient that is not finite. The step
// was not applied.
type DivergedError struct {
	Step  int64
	What  string // "loss" or "gradient norm"
	Value float64
}

// Error says which step diverged.
func (e *DivergedError) Error() string {
	return fmt.Sprintf("step %d: the %s is %v", e.Step, e.What, e.Value)
}

// TrainStep runs one optimisation step on a batch of exactly the
// configured size: the forward and backward pass, the orthogonality
// regulariser, gradient clipping, the optimiser update with weight decay,
// and weight projection when the step is due. total is the run's number
// of steps, for the learning-rate schedule.
func (t *Trainer) TrainStep(b data.Batch, total int64) (StepInfo, error) {
	start := time.Now()
	s := t.step + 1
	info := StepInfo{Step: s, Total: total, Samples: len(b.Labels)}
	loss, err := t.eng.Step(map[string]engine.Tensor{t.input: {Shape: b.Shape, Data: b.X}}, b.Labels)
	if err != nil {
		return info, fmt.Errorf("step %d: %w", s, err)
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return info, &DivergedError{Step: s, What: "loss", Value: loss}
	}
	if out, err := t.eng.Output(t.output); err == nil {
		var m engine.Metrics
		if m.Add(out.Data, t.classes, b.Labels, t.scores) == nil {
			info.Correct = m.Top1
		}
	}
	grads := make([][]float32, len(t.params))
	for i, p := range t.params {
		g, err := t.grad(p)
		if err != nil {
			return info, fmt.Errorf("step %d: %w", s, err)
		}
		grads[i] = g
		if t.cfg.Orth > 0 && p.filter != nil {
			loss += orthPenalty(p.value, p.rowLen, filterEps(*p.filter), t.cfg.Orth, g)
		}
	}
	scale, norm := clipScale(grads, t.cfg.ClipNorm)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return info, &DivergedError{Step: s, What: "gradient norm", Value: norm}
	}
	if scale != 1 {
		for _, g := range grads {
			for i := range g {
				g[i] = float32(float64(g[i]) * scale)
			}
		}
	}
	lr := t.cfg.LearningRate(int(s), int(total))
	for i, p := range t.params {
		decay := 0.0
		if p.decay {
			decay = t.cfg.WD
		}
		t.opt.update(p, grads[i], lr, decay, s)
		if pe := int64(t.cfg.ProjectEvery); pe > 0 && s%pe == 0 && p.filter != nil && p.filter.Weighted == dcnet.WeightNone {
			project(p.value, p.rowLen, filterEps(*p.filter))
		}
		if t.live {
			continue
		}
		if err := t.eng.SetParam(p.name, engine.Tensor{Shape: p.shape, Data: p.value}); err != nil {
			return info, fmt.Errorf("step %d: %w", s, err)
		}
	}
	t.step = s
	info.Loss, info.LR, info.GradNorm, info.Duration = loss, lr, norm, time.Since(start)
	return info, nil
}
