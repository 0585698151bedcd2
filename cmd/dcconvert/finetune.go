package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/onnximport"
)

// finetuneOptions are the options of "dcconvert finetune".
type finetuneOptions struct {
	*rootOptions
	// Model is the model to fine-tune, Data the training data (or
	// "synthetic"), Out the run directory.
	Model, Data, Out string
	// Format is the data directory's format; empty means detect it.
	Format data.Format
	// Val is a separate validation data directory; empty means the data
	// set's test split, or ValSplit of its training split.
	Val string
	// ValSplit holds out this fraction of the training split for
	// validation; negative means the default (0.1 for data without a test
	// split, else 0).
	ValSplit float64
	// Mean and Std, when not nil, replace the normalisation recorded in
	// the model's metadata.
	Mean, Std []float32
	// Resume continues the run in Out.
	Resume bool
	// AugmentGiven says --augment was given; otherwise the data's format
	// chooses (see defaultAugment).
	AugmentGiven bool
	// Train is the fine-tuning configuration.
	Train finetune.Config
	// Progress shows a progress bar on standard error (set when it is a
	// terminal and -q is not given); otherwise a line every LogEvery steps.
	Progress bool
	// Signals, when not nil, cancels training (tests send to it); nil
	// means SIGINT and SIGTERM.
	Signals chan os.Signal
}

// newFinetuneCmd builds the finetune command. runF replaces runFinetune
// when not nil, so that tests can see the parsed options.
func newFinetuneCmd(root *rootOptions, runF func(*finetuneOptions) error) *cobra.Command {
	opts := &finetuneOptions{rootOptions: root, Train: finetune.DefaultConfig(), ValSplit: -1}
	def := finetune.DefaultConfig()
	var format, optimizer, schedule, train, augment string
	var noShuffle bool
	var valSplit float64
	var seed uint64
	mean, std := floatsValue{metavar: "M[,M,M]"}, floatsValue{metavar: "S[,S,S]"}
	cmd := &cobra.Command{
		Use:   "finetune MODEL --data DATA --out RUNDIR",
		Short: "Fine-tune a plain or rewritten model on a data set",
		Long: strings.TrimSpace(`
Finetune trains MODEL, a plain or rewritten (decoupled) ONNX classifier, on
DATA and keeps everything in the run directory RUNDIR: the model being
trained (model.onnx), the run's configuration (run.json), the last and the
best checkpoint by validation accuracy (last.safetensors, best.safetensors),
one line of metrics per logging interval (metrics.jsonl) and a plot of them
(curves.png). Every file is written through a temporary file and a rename.

The loss is the batch mean of the softmax cross-entropy of the model's
logits (a final Softmax is folded into it), with optional label smoothing.
The optimisers are PyTorch's SGD (with momentum, optionally Nesterov), Adam
and AdamW. Weight decay applies to every trained parameter except the
decoupled filters (unless --wd-filters) and the learnable radii. The
learning rate follows --schedule (const; step: /10 at half and three
quarters of the run; cosine: to 0) after a linear --warmup. Every
--project-every steps the filters of the decoupled layers without a
weighting are projected onto the unit sphere; --orth adds the
orthogonality regulariser of the decoupled filters. BatchNormalization
trains with batch statistics, starting from the model's running ones.

--train all|decoupled|head chooses what trains (decoupled: the decoupled
layers' filters, biases, scales and radii; head: the last Gemm or MatMul),
and each --freeze GLOB keeps the matching initializers fixed. A data set
with another number of classes than the classifier needs --new-head, which
replaces the classifier with a freshly initialised one.

Validation runs after each epoch (and every --eval-every steps) on --val,
else the data set's test split, else --val-split of the training images
(0.1 by default for data without a test split). With --val-split on data
that has a test split, the held-out part replaces the test split.

Ctrl-C (or SIGTERM) finishes the step in progress, saves last.safetensors and
exits; --resume continues the run from it with the same arguments and gives
the same weights as a run that was never interrupted. A loss that is not a
number stops the run and names the step; the last checkpoint stays intact.

On a terminal a progress bar shows the epoch, step, loss, accuracy, speed and
time left; in logs and pipes one line is written every 10 % of an epoch.`),
		Example: "  dcconvert finetune vgg-mini.dc.onnx --data synthetic --out run --steps 100 --optimizer adam --lr 0.001\n" +
			"  dcconvert finetune vgg-mini.dc.onnx --data synthetic --out run --steps 150 --optimizer adam --lr 0.001 --resume\n" +
			"  dcconvert finetune vgg-mini.calib.onnx --data /usr/share/datasets/fashion-mnist --out fmnist-run --steps 100",
		Args: exactArgs("MODEL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Model = args[0]
			c := &opts.Train
			opts.AugmentGiven = augment != ""
			if !opts.AugmentGiven {
				augment = string(def.Augment) // until the data's format is known
			}
			c.Optimizer, c.Schedule, c.Train, c.Augment = finetune.Optimizer(optimizer), finetune.Schedule(schedule), finetune.Train(train), data.Augment(augment)
			c.Shuffle = !noShuffle
			c.Seed = seed
			var errs []error
			if opts.Data == "" {
				errs = append(errs, errors.New("finetune: missing required flag --data"))
			}
			if opts.Out == "" {
				errs = append(errs, errors.New("finetune: missing required flag --out"))
			}
			switch {
			case format == autoFormat:
			case slices.Contains(data.Formats(), data.Format(format)):
				opts.Format = data.Format(format)
			default:
				errs = append(errs, fmt.Errorf("--data-format %q: want %s or one of %s", format, autoFormat, joinNames(data.Formats())))
			}
			if cmd.Flags().Changed("epochs") && cmd.Flags().Changed("steps") {
				errs = append(errs, errors.New("--epochs and --steps: give one of them"))
			}
			if cmd.Flags().Changed("val-split") {
				opts.ValSplit = valSplit
				if valSplit < 0 || valSplit >= 1 {
					errs = append(errs, fmt.Errorf("--val-split %v: must be in [0, 1)", valSplit))
				}
			}
			if opts.Val != "" && cmd.Flags().Changed("val-split") {
				errs = append(errs, errors.New("--val and --val-split: give one of them"))
			}
			var err error
			opts.Mean, opts.Std, err = normalizationFlags(cmd, mean, std)
			errs = append(errs, err, c.Validate())
			if err := errors.Join(errs...); err != nil {
				return asUsageError(err)
			}
			opts.Progress = !opts.Quiet && isTerminal(opts.IO.ErrOut)
			if runF != nil {
				return runF(opts)
			}
			return runFinetune(opts)
		},
	}
	fl := cmd.Flags()
	c := &opts.Train
	fl.StringVar(&opts.Data, "data", "", "training data directory, or synthetic (required)")
	fl.StringVar(&opts.Out, "out", "", "run directory to create, or to continue with --resume (required)")
	fl.StringVar(&format, "data-format", autoFormat, "format of the data directories: "+autoFormat+", "+joinNames(data.Formats()))
	fl.StringVar(&opts.Val, "val", "", "validation data directory (default the data set's test split)")
	fl.Float64Var(&valSplit, "val-split", 0, "fraction of the training images held out for validation (default 0; 0.1 for data without a test split)")
	fl.IntVar(&c.EvalEvery, "eval-every", def.EvalEvery, "validate every N steps as well as after each epoch (0: after each epoch only)")
	fl.IntVar(&c.Epochs, "epochs", def.Epochs, "passes over the training data")
	fl.IntVar(&c.Steps, "steps", def.Steps, "optimisation steps, instead of --epochs")
	fl.IntVar(&c.Batch, "batch", def.Batch, "images per step")
	fl.Float64Var(&c.LR, "lr", def.LR, "base learning rate")
	fl.StringVar(&optimizer, "optimizer", string(def.Optimizer), "optimiser: "+joinNames(finetune.Optimizers()))
	fl.Float64Var(&c.Momentum, "momentum", def.Momentum, "SGD momentum")
	fl.BoolVar(&c.Nesterov, "nesterov", def.Nesterov, "use Nesterov momentum (SGD)")
	fl.Float64Var(&c.WD, "wd", def.WD, "weight decay (not on decoupled filters and radii)")
	fl.BoolVar(&c.WDFilters, "wd-filters", def.WDFilters, "apply weight decay to the decoupled filters too")
	fl.StringVar(&schedule, "schedule", string(def.Schedule), "learning-rate schedule: "+joinNames(finetune.Schedules()))
	fl.IntVar(&c.Warmup, "warmup", def.Warmup, "steps of linear learning-rate warm-up")
	fl.Float64Var(&c.ClipNorm, "clip-norm", def.ClipNorm, "clip the global gradient norm to this value (0: off)")
	fl.Float64Var(&c.LabelSmoothing, "label-smoothing", def.LabelSmoothing, "label smoothing of the cross-entropy, in [0, 1)")
	fl.IntVar(&c.ProjectEvery, "project-every", def.ProjectEvery, "project the decoupled filters onto the unit sphere every N steps (0: never)")
	fl.Float64Var(&c.Orth, "orth", def.Orth, "weight of the orthogonality regulariser of the decoupled filters (0: off)")
	fl.StringVar(&train, "train", string(def.Train), "parameters that train: "+joinNames(finetune.Trains()))
	fl.StringArrayVar(&c.Freeze, "freeze", nil, "keep the initializers matching GLOB fixed (repeatable)")
	fl.BoolVar(&c.NewHead, "new-head", def.NewHead, "replace the classifier to fit the data's classes")
	fl.StringVar(&augment, "augment", "", "augmentation of the training images: "+joinNames(data.Augments())+
		" (default standard; crop for idx and synthetic data, whose classes a flip can change)")
	fl.BoolVar(&noShuffle, "no-shuffle", false, "keep the training images in order")
	fl.Var(&mean, "mean", "mean subtracted from the [0, 1] pixel values, one value or one per channel (default from the model's metadata, else 0)")
	fl.Var(&std, "std", "standard deviation the pixel values are divided by (default from the model's metadata, else 1)")
	fl.Uint64Var(&seed, "seed", def.Seed, "seed of the sample order, augmentation, dropout and a new head")
	fl.BoolVar(&opts.Resume, "resume", false, "continue the run in --out from its last checkpoint")
	return cmd
}

// finetuneRun is a run being set up or carried out.
type finetuneRun struct {
	opts    *finetuneOptions
	dir     checkpoint.Dir
	model   *onnximport.Model
	run     checkpoint.Run
	d       finetune.Data
	format  data.Format
	tr      *finetune.Trainer
	metrics []checkpoint.Record
}

// runFinetune fine-tunes opts.Model and keeps the run in opts.Out.
func runFinetune(opts *finetuneOptions) error {
	r := &finetuneRun{opts: opts, dir: checkpoint.Dir(opts.Out)}
	if err := r.prepare(); err != nil {
		return err
	}
	defer r.tr.Close()
	return r.train()
}

// prepare reads the model and the data, builds the trainer and, for a new
// run, creates the run directory; for --resume it checks that the run
// directory belongs to the same model, data and configuration and
// restores the last checkpoint.
func (r *finetuneRun) prepare() error {
	opts := r.opts
	source, err := os.ReadFile(opts.Model)
	if err != nil {
		return fmt.Errorf("reading %s: %w", opts.Model, err)
	}
	sum := sha256.Sum256(source)
	if !opts.Resume {
		if es, err := os.ReadDir(opts.Out); err == nil && len(es) > 0 {
			hint := "choose another --out"
			if r.dir.Check() == nil {
				hint = "add --resume to continue it, or " + hint
			}
			return fmt.Errorf("%s is not empty; %s", opts.Out, hint)
		}
	} else if err := r.dir.Check(); err != nil {
		return fmt.Errorf("--resume: %w", err)
	}
	m, err := onnximport.ReadFile(opts.Model)
	if err != nil {
		return err
	}
	if err := engine.Check(m); err != nil {
		return fmt.Errorf("%s: %w", opts.Model, err)
	}
	plan, err := planEval(&evalOptions{rootOptions: opts.rootOptions, Model: opts.Model, Mean: opts.Mean, Std: opts.Std}, m)
	if err != nil {
		return err
	}
	if err := r.openData(plan); err != nil {
		return err
	}
	if !opts.AugmentGiven {
		opts.Train.Augment = defaultAugment(r.format)
	}
	classes := r.d.Train.Classes()
	in := plan.pre.Input
	r.d.Pre = data.Preprocess{C: in[0], H: in[1], W: in[2], Mean: plan.pre.Mean, Std: plan.pre.Std}
	cfgJSON, err := json.Marshal(opts.Train)
	if err != nil {
		return err
	}
	r.run = checkpoint.Run{
		Source: opts.Model, SourceSHA256: hex.EncodeToString(sum[:]),
		Data: opts.Data, DataFormat: string(r.format), DataFingerprint: r.dataFingerprint(),
		Preprocess: data.Preprocessing{Input: in[:], Mean: plan.pre.Mean, Std: plan.pre.Std, Classes: classes},
		Config:     cfgJSON,
	}
	if opts.Resume {
		return r.resume(m)
	}
	tr, err := finetune.New(m, opts.Train, len(classes))
	if err != nil {
		return asFlagUsage(fmt.Errorf("%s: %w", opts.Model, err))
	}
	r.tr, r.model = tr, m
	r.run.Trained, r.run.Frozen = tr.Trained(), tr.Frozen()
	if err := data.WritePreprocessing(m.Proto, r.run.Preprocess); err != nil {
		return err
	}
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return fmt.Errorf("creating the run directory: %w", err)
	}
	if err := m.WriteFile(r.dir.Path(checkpoint.ModelFile)); err != nil {
		return err
	}
	return checkpoint.WriteRun(r.dir.Path(checkpoint.RunFile), r.run)
}

// defaultAugment returns the augmentation of a data format when --augment
// is not given: pad-and-crop with a horizontal flip for natural images,
// without the flip for digits and letters (idx) and for the synthetic
// bars, whose class is their orientation, which a flip changes.
func defaultAugment(f data.Format) data.Augment {
	switch f {
	case data.FormatIDX, data.FormatSynthetic:
		return data.AugmentCrop
	}
	return data.AugmentStandard
}

// asFlagUsage makes an error that names a flag (a finetune.FlagError) a
// usage error.
func asFlagUsage(err error) error {
	var fe *finetune.FlagError
	if errors.As(err, &fe) {
		return asUsageError(err)
	}
	return err
}

// openData opens the training and validation data.
func (r *finetuneRun) openData(plan *evalPlan) error {
	opts := r.opts
	format := opts.Format
	if format == "" {
		f, err := data.Detect(opts.Data)
		if err != nil {
			return err
		}
		format = f
	}
	r.format = format
	oo := data.OpenOptions{Format: format, Split: data.SplitTrain, Seed: opts.Train.Seed}
	if format == data.FormatSynthetic {
		oo.Synthetic = syntheticFor(plan)
	}
	split := opts.ValSplit
	if split < 0 {
		split = 0
		if opts.Val == "" {
			has, err := data.HasTestSplit(opts.Data, format)
			if err != nil {
				return err
			}
			if !has {
				split = 0.1
			}
		}
	}
	oo.ValSplit = split
	train, err := data.Open(opts.Data, oo)
	if err != nil {
		return err
	}
	r.d.Train = train
	vo := oo
	vo.Split = data.SplitTest
	valDir := opts.Data
	if opts.Val != "" {
		valDir = opts.Val
		vo.Format, vo.ValSplit = "", 0
		if has, err := data.HasTestSplit(valDir, ""); err == nil && !has {
			vo.Split = data.SplitAll
		}
	}
	val, err := data.Open(valDir, vo)
	if err != nil {
		return fmt.Errorf("validation data: %w", err)
	}
	if val.Len() > 0 {
		if !slices.Equal(val.Classes(), train.Classes()) {
			return fmt.Errorf("the validation data %s has classes %v, the training data %v", valDir, val.Classes(), train.Classes())
		}
		r.d.Val = val
	}
	return nil
}

// dataFingerprint digests what the training sees of the data, so that a
// resumed run on other data is refused.
func (r *finetuneRun) dataFingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "format=%s;train=%d;classes=%q", r.format, r.d.Train.Len(), r.d.Train.Classes())
	if r.d.Val != nil {
		fmt.Fprintf(h, ";val=%d", r.d.Val.Len())
	}
	for _, i := range []int{0, r.d.Train.Len() / 2, r.d.Train.Len() - 1} {
		if img, label, err := r.d.Train.Image(i); err == nil {
			fmt.Fprintf(h, ";%d:%d:%dx%dx%d:", i, label, img.C, img.H, img.W)
			pix := make([]byte, 0, 4*len(img.Pix))
			for _, v := range img.Pix {
				pix = binary.LittleEndian.AppendUint32(pix, math.Float32bits(v))
			}
			h.Write(pix)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// resume checks the run directory against this run and restores its last
// checkpoint.
func (r *finetuneRun) resume(source *onnximport.Model) error {
	opts := r.opts
	saved, err := checkpoint.ReadRun(r.dir.Path(checkpoint.RunFile))
	if err != nil {
		return err
	}
	var problems []string
	if saved.SourceSHA256 != r.run.SourceSHA256 {
		problems = append(problems, fmt.Sprintf("the run started from %s (another file than %s)", saved.Source, opts.Model))
	}
	if saved.DataFingerprint != r.run.DataFingerprint {
		problems = append(problems, fmt.Sprintf("the run trained on %s (%s), which differs from %s", saved.Data, saved.DataFormat, opts.Data))
	}
	var was finetune.Config
	if err := json.Unmarshal(saved.Config, &was); err != nil {
		return fmt.Errorf("reading %s: config: %w", r.dir.Path(checkpoint.RunFile), err)
	}
	if diff := configDiff(was, opts.Train); diff != "" {
		problems = append(problems, "the configuration differs: "+diff)
	}
	if len(problems) > 0 {
		return fmt.Errorf("cannot resume %s: %s", opts.Out, strings.Join(problems, "; "))
	}
	m, err := onnximport.ReadFile(r.dir.Path(checkpoint.ModelFile))
	if err != nil {
		return err
	}
	cfg := opts.Train
	cfg.NewHead = false // model.onnx already has it
	tr, err := finetune.New(m, cfg, len(r.run.Preprocess.Classes))
	if err != nil {
		return fmt.Errorf("%s: %w", r.dir.Path(checkpoint.ModelFile), err)
	}
	r.tr, r.model, r.run = tr, m, saved
	last := r.dir.Path(checkpoint.LastFile)
	f, err := checkpoint.ReadFile(last)
	if errors.Is(err, os.ErrNotExist) {
		opts.infof("%s has no checkpoint yet; starting from step 0", opts.Out)
		return nil
	}
	if err != nil {
		return err
	}
	if err := tr.Restore(f); err != nil {
		return fmt.Errorf("%s: %w", last, err)
	}
	if recs, err := checkpoint.ReadMetrics(r.dir.Path(checkpoint.MetricsFile)); err == nil {
		r.metrics = slices.DeleteFunc(recs, func(rec checkpoint.Record) bool { return rec.Step > tr.Step() })
	}
	opts.infof("resuming %s at step %d", opts.Out, tr.Step())
	return nil
}

// configDiff lists the settings of two configurations that differ, apart
// from the length of the run and the validation interval, which a resumed
// run may change.
func configDiff(a, b finetune.Config) string {
	a.Epochs, a.Steps, a.EvalEvery = b.Epochs, b.Steps, b.EvalEvery
	a.NewHead = b.NewHead // applied to model.onnx already
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var ma, mb map[string]any
	_ = json.Unmarshal(ja, &ma)
	_ = json.Unmarshal(jb, &mb)
	var diffs []string
	for k, va := range ma {
		if vb := mb[k]; fmt.Sprint(va) != fmt.Sprint(vb) {
			diffs = append(diffs, fmt.Sprintf("--%s was %v, now %v", strings.ReplaceAll(k, "_", "-"), va, vb))
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, ", ")
}

// signalContext returns a context cancelled by the run's signals.
func (r *finetuneRun) signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sig := r.opts.Signals
	if sig == nil {
		sig = make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			cancel()
		case <-done:
		}
	}()
	return ctx, func() {
		if r.opts.Signals == nil {
			signal.Stop(sig)
		}
		close(done)
		cancel()
	}
}

// checkpointMeta returns the metadata a checkpoint adds to the snapshot.
func (r *finetuneRun) checkpointMeta(info finetune.CheckpointInfo) map[string]string {
	meta := map[string]string{
		checkpoint.MetaEpoch: strconv.FormatFloat(info.Epoch, 'f', -1, 64),
		checkpoint.MetaRun:   r.run.SourceSHA256[:16] + "-" + r.run.DataFingerprint,
	}
	if info.Val != nil {
		meta[checkpoint.MetaValTop1] = strconv.FormatFloat(info.Val.Metrics.Top1Accuracy(), 'f', -1, 64)
	}
	return meta
}
