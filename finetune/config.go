package finetune

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"

	"github.com/dcconvert/dcconvert/data"
)

// Optimizer names an update rule.
type Optimizer string

// The optimisers. Their update rules are PyTorch's (torch.optim.SGD, Adam
// and AdamW) so that a run can be checked step by step against it.
const (
	// SGD is stochastic gradient descent with momentum m (dampening 0):
	// buf <- m*buf + g (buf = g at the first step), then p <- p - lr*buf,
	// or p <- p - lr*(g + m*buf) with Nesterov momentum. Weight decay adds
	// wd*p to g.
	SGD Optimizer = "sgd"
	// Adam keeps the moment estimates m <- b1*m + (1-b1)*g and
	// v <- b2*v + (1-b2)*g^2 and steps p <- p - lr/(1-b1^t) * m /
	// (sqrt(v/(1-b2^t)) + eps), with b1 = 0.9, b2 = 0.999, eps = 1e-8.
	// Weight decay adds wd*p to g (L2 regularisation).
	Adam Optimizer = "adam"
	// AdamW is Adam with decoupled weight decay: p <- p*(1 - lr*wd) before
	// the Adam step, which then sees the plain gradient.
	AdamW Optimizer = "adamw"
)

// Optimizers lists the optimisers in the order help texts show them.
func Optimizers() []Optimizer { return []Optimizer{SGD, Adam, AdamW} }

// Schedule names a learning-rate schedule over the steps of a run.
type Schedule string

// The schedules. Each multiplies the base learning rate by a factor of
// the step s = 1..S (S the run's total steps) after the warm-up; during
// the warm-up of W steps the factor is further multiplied by s/W.
const (
	// Const keeps the learning rate.
	Const Schedule = "const"
	// Step divides it by 10 after half of the steps and again after three
	// quarters.
	Step Schedule = "step"
	// Cosine anneals it to 0: 0.5 * (1 + cos(pi * (s-1-W) / (S-W))) after
	// the warm-up, so the first step after the warm-up uses the full rate.
	Cosine Schedule = "cosine"
)

// Schedules lists the schedules in the order help texts show them.
func Schedules() []Schedule { return []Schedule{Const, Step, Cosine} }

// Train names the parameters a run trains.
type Train string

// The parameter sets of Config.Train.
const (
	// TrainAll trains every parameter.
	TrainAll Train = "all"
	// TrainDecoupled trains the decoupled convolutions' inputs only: W, B,
	// Alpha and RhoV.
	TrainDecoupled Train = "decoupled"
	// TrainHead trains the classifier only: the last Gemm or MatMul and
	// the bias added to its output.
	TrainHead Train = "head"
)

// Trains lists the parameter sets in the order help texts show them.
func Trains() []Train { return []Train{TrainAll, TrainDecoupled, TrainHead} }

// Adam's fixed hyper-parameters (PyTorch's defaults).
const (
	AdamBeta1 = 0.9
	AdamBeta2 = 0.999
	AdamEps   = 1e-8
)

// Config is the configuration of a fine-tuning run. Start from
// DefaultConfig; the command line's flags bind to its fields.
type Config struct {
	// Epochs is the number of passes over the training data; Steps, when
	// positive, sets the number of optimisation steps instead.
	Epochs int `json:"epochs"`
	Steps  int `json:"steps"`
	// Batch is the number of samples per step. A last batch smaller than
	// Batch is left out of each epoch.
	Batch int `json:"batch"`
	// LR is the base learning rate.
	LR float64 `json:"lr"`
	// Optimizer is the update rule; Momentum and Nesterov configure SGD.
	Optimizer Optimizer `json:"optimizer"`
	Momentum  float64   `json:"momentum"`
	Nesterov  bool      `json:"nesterov"`
	// WD is the weight decay. It applies to every trained parameter
	// except decoupled filters, RhoV and RhoScale (DCNET.md section 4);
	// WDFilters includes the decoupled filters.
	WD        float64 `json:"wd"`
	WDFilters bool    `json:"wd_filters"`
	// Schedule shapes the learning rate over the run; Warmup is the number
	// of steps of the linear warm-up.
	Schedule Schedule `json:"schedule"`
	Warmup   int      `json:"warmup"`
	// ClipNorm, when positive, rescales the gradients so that their
	// global L2 norm (over every trained parameter) is at most ClipNorm.
	ClipNorm float64 `json:"clip_norm"`
	// LabelSmoothing is the label smoothing of the cross-entropy, in [0, 1).
	LabelSmoothing float64 `json:"label_smoothing"`
	// ProjectEvery projects the filters of the decoupled convolutions
	// with weighted = none onto the unit sphere after every
	// ProjectEvery-th step (0: never).
	ProjectEvery int `json:"project_every"`
	// Orth is the weight of the orthogonality regulariser of the
	// decoupled filters (0: off).
	Orth float64 `json:"orth"`
	// Train selects the parameters that train; Freeze excludes those whose
	// initializer name matches one of its patterns (path.Match syntax,
	// with "*" and "?" matching "/" as well).
	Train  Train    `json:"train"`
	Freeze []string `json:"freeze"`
	// NewHead replaces the classifier with a new one sized to the data's
	// classes, initialised like PyTorch's nn.Linear from Seed.
	NewHead bool `json:"new_head"`
	// Augment is the augmentation of the training images; Shuffle shuffles
	// the samples each epoch.
	Augment data.Augment `json:"augment"`
	Shuffle bool         `json:"shuffle"`
	// Seed seeds everything random: the order of the samples, the
	// augmentation, dropout and a new head.
	Seed uint64 `json:"seed"`
	// EvalEvery validates every EvalEvery steps besides the end of each
	// epoch (0: at the end of each epoch only).
	EvalEvery int `json:"eval_every"`
}

// DefaultConfig returns the defaults of the command line (DESIGN.md).
func DefaultConfig() Config {
	return Config{
		Epochs:       1,
		Batch:        64,
		LR:           0.01,
		Optimizer:    SGD,
		Momentum:     0.9,
		WD:           5e-4,
		Schedule:     Cosine,
		ProjectEvery: 100,
		Train:        TrainAll,
		Augment:      data.AugmentStandard,
		Shuffle:      true,
		Seed:         1,
	}
}

// FlagError is a problem with one configuration value, naming the
// command-line flag that sets it.
type FlagError struct {
	Flag string
	Err  error
}

// Error returns "--flag: problem".
func (e *FlagError) Error() string { return e.Flag + ": " + e.Err.Error() }

// Unwrap returns the problem.
func (e *FlagError) Unwrap() error { return e.Err }

// Validate reports every invalid value at once, each as a *FlagError.
func (c Config) Validate() error {
	var errs []error
	bad := func(flag, format string, args ...any) {
		errs = append(errs, &FlagError{Flag: flag, Err: fmt.Errorf(format, args...)})
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	if c.Steps < 0 {
		bad("--steps", "%d is negative", c.Steps)
	}
	if c.Steps == 0 && c.Epochs < 1 {
		bad("--epochs", "%d: must be at least 1", c.Epochs)
	}
	if c.Batch < 1 {
		bad("--batch", "%d: must be at least 1", c.Batch)
	}
	if !finite(c.LR) || c.LR <= 0 {
		bad("--lr", "%v: must be a positive number", c.LR)
	}
	if !slices.Contains(Optimizers(), c.Optimizer) {
		bad("--optimizer", "%q: want one of %v", c.Optimizer, Optimizers())
	}
	if !finite(c.Momentum) || c.Momentum < 0 || c.Momentum >= 1 {
		bad("--momentum", "%v: must be in [0, 1)", c.Momentum)
	}
	if c.Nesterov && (c.Optimizer != SGD || c.Momentum == 0) {
		bad("--nesterov", "needs --optimizer sgd with a positive --momentum")
	}
	if !finite(c.WD) || c.WD < 0 {
		bad("--wd", "%v: must be a number >= 0", c.WD)
	}
	if !slices.Contains(Schedules(), c.Schedule) {
		bad("--schedule", "%q: want one of %v", c.Schedule, Schedules())
	}
	if c.Warmup < 0 {
		bad("--warmup", "%d is negative", c.Warmup)
	}
	if !finite(c.ClipNorm) || c.ClipNorm < 0 {
		bad("--clip-norm", "%v: must be a number >= 0 (0 is off)", c.ClipNorm)
	}
	if !finite(c.LabelSmoothing) || c.LabelSmoothing < 0 || c.LabelSmoothing >= 1 {
		bad("--label-smoothing", "%v: must be in [0, 1)", c.LabelSmoothing)
	}
	if c.ProjectEvery < 0 {
		bad("--project-every", "%d is negative", c.ProjectEvery)
	}
	if !finite(c.Orth) || c.Orth < 0 {
		bad("--orth", "%v: must be a number >= 0", c.Orth)
	}
	if !slices.Contains(Trains(), c.Train) {
		bad("--train", "%q: want one of %v", c.Train, Trains())
	}
	for _, g := range c.Freeze {
		if _, err := path.Match(g, ""); err != nil {
			bad("--freeze", "%q: %v", g, err)
		}
	}
	if err := c.Augment.Check(); err != nil {
		bad("--augment", "%v", err)
	}
	if c.EvalEvery < 0 {
		bad("--eval-every", "%d is negative", c.EvalEvery)
	}
	return errors.Join(errs...)
}
