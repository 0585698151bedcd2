package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Defaults of the eval flags.
const (
	defaultEvalBatch = 64
	defaultEvalSplit = data.SplitTest
	autoFormat       = "auto"
)

// evalOptions are the options of "dcconvert eval".
type evalOptions struct {
	*rootOptions
	// Model is the model file to evaluate.
	Model string
	// Data is the data directory, or data.SyntheticName.
	Data string
	// Format is the data directory's format; empty means detect it.
	Format data.Format
	// Split is the part of the data to evaluate on.
	Split data.Split
	// Batch is the number of images per forward pass (at most the number
	// of images: a smaller data set is one batch).
	Batch int
	// Mean and Std, when not nil, replace the normalisation recorded in
	// the model's metadata: one value for every channel or one per
	// channel.
	Mean, Std []float32
	// JSON prints the report as one JSON object (evalReport) instead of
	// text.
	JSON bool
	// Progress shows a progress bar on standard error; the command sets
	// it when standard error is a terminal and -q is not given.
	Progress bool
}

// newEvalCmd builds the eval command. runF replaces runEval when not nil,
// so that tests can see the parsed options.
func newEvalCmd(root *rootOptions, runF func(*evalOptions) error) *cobra.Command {
	opts := &evalOptions{rootOptions: root}
	var format, split string
	mean, std := floatsValue{metavar: "M[,M,M]"}, floatsValue{metavar: "S[,S,S]"}
	cmd := &cobra.Command{
		Use:   "eval MODEL --data DATA",
		Short: "Measure a classifier's accuracy and cross-entropy on a data set",
		Long: strings.TrimSpace(`
Eval runs MODEL, an ONNX image classifier, in inference mode over one split
of a data set and reports its top-1 and top-5 accuracy (percent of all
images), its mean cross-entropy, the number of images and the images per
second.

DATA is a data directory (MNIST / Fashion-MNIST idx files, CIFAR-10 or
CIFAR-100 binary batches, an image folder; --data-format names the format
when detection is not wanted) or the word synthetic, a generated set of
oriented bars made with the model's input shape and number of classes.

Images are resized and converted to the model's input shape, scaled to
[0, 1], then normalised as (x - mean) / std. The input shape, mean and std
come from the model's metadata entry dcconvert.preprocess when it has one
(models that dcconvert exports do), else from the model's graph input and
mean 0, std 1; --mean and --std, when given, win over the metadata. The
model's output width must equal the data set's number of classes.

The cross-entropy is that of the softmax of the model's first output. When
the model ends in a Softmax (or LogSoftmax) over the classes, its output is
taken as the probabilities (log-probabilities) instead, a probability of 0
counting as the smallest positive float32 (a cross-entropy of about 103.3).
Ties in the ranking go to the lower class index.

The report goes to standard output; a progress bar goes to standard error
when it is a terminal and -q is not given. With --json the report is one
JSON object:

  model, data, format, split      what was evaluated
  images, classes, batch          counts; batch is the engine's batch size
  scores                          logits, probabilities or log-probabilities
  top1, top5                      accuracy in percent
  mean_cross_entropy              in nats
  preprocess                      {input: [C,H,W], mean: [...], std: [...],
                                   source: {input, mean, std}}, each source
                                   being graph, metadata, flag or default
  seconds, images_per_second      the whole evaluation: decoding and
                                  inference (they overlap)
  inference_seconds,              the forward passes alone (the last
  inference_images_per_second     batch is padded to the batch size)`),
		Example: "  dcconvert eval vgg-mini.ft.onnx --data synthetic\n" +
			"  dcconvert eval vgg-mini.calib.onnx --data /usr/share/datasets/fashion-mnist --json",
		Args: exactArgs("MODEL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Model = args[0]
			if err := evalFlags(cmd, opts, format, split, mean, std); err != nil {
				return err
			}
			opts.Progress = !opts.Quiet && isTerminal(opts.IO.ErrOut)
			if runF != nil {
				return runF(opts)
			}
			return runEval(opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Data, "data", "", "data directory, or synthetic (required)")
	fl.StringVar(&format, "data-format", autoFormat, "format of the data directory: "+autoFormat+", "+joinNames(data.Formats()))
	fl.StringVar(&split, "split", string(defaultEvalSplit), "part of the data to evaluate: train, test or all")
	fl.IntVar(&opts.Batch, "batch", defaultEvalBatch, "images per forward pass")
	fl.Var(&mean, "mean", "mean subtracted from the [0, 1] pixel values, one value or one per channel (default from the model's metadata, else 0)")
	fl.Var(&std, "std", "standard deviation the pixel values are divided by, one value or one per channel (default from the model's metadata, else 1)")
	fl.BoolVar(&opts.JSON, "json", false, "print the report as one JSON object")
	return cmd
}

// evalFlags checks the flag values and stores them in opts. Every problem
// is a usage error, reported together.
func evalFlags(cmd *cobra.Command, opts *evalOptions, format, split string, mean, std floatsValue) error {
	var errs []error
	if opts.Data == "" {
		errs = append(errs, errors.New("eval: missing required flag --data"))
	}
	switch {
	case format == autoFormat:
		opts.Format = ""
	case slices.Contains(data.Formats(), data.Format(format)):
		opts.Format = data.Format(format)
	default:
		errs = append(errs, fmt.Errorf("--data-format %q: want %s or one of %s", format, autoFormat, joinNames(data.Formats())))
	}
	switch s := data.Split(split); s {
	case data.SplitTrain, data.SplitTest, data.SplitAll:
		opts.Split = s
	default:
		errs = append(errs, fmt.Errorf("--split %q: want train, test or all", split))
	}
	if opts.Batch < 1 {
		errs = append(errs, fmt.Errorf("--batch %d: must be at least 1", opts.Batch))
	}
	var err error
	opts.Mean, opts.Std, err = normalizationFlags(cmd, mean, std)
	if errs = append(errs, err); errors.Join(errs...) != nil {
		return asUsageError(errors.Join(errs...))
	}
	return nil
}

// normalizationFlags returns the values of --mean and --std, nil for
// those not given; a zero std is an error.
func normalizationFlags(cmd *cobra.Command, mean, std floatsValue) (m, s []float32, err error) {
	if cmd.Flags().Changed("mean") {
		m = mean.values
	}
	if cmd.Flags().Changed("std") {
		var errs []error
		for i, x := range std.values {
			if x == 0 {
				errs = append(errs, fmt.Errorf("--std: value %d is 0", i+1))
			}
		}
		s, err = std.values, errors.Join(errs...)
	}
	return m, s, err
}

// syntheticFor returns the synthetic data set options that fit a model:
// its input shape and number of classes, where the generator supports
// them.
func syntheticFor(plan *evalPlan) data.SyntheticOptions {
	var o data.SyntheticOptions
	if in := plan.pre.Input; in[1] >= 8 && in[2] >= 8 && in[1] <= 4096 && in[2] <= 4096 {
		o.Shape = in
	}
	if plan.classes >= 2 && plan.classes <= 1000 {
		o.Classes = plan.classes
	}
	return o
}

// floatsValue is a flag value holding one or three comma-separated finite
// numbers.
type floatsValue struct {
	values  []float32
	metavar string // the value's name in help texts
}

// String returns the values comma-separated.
func (v *floatsValue) String() string { return floatList(v.values) }

// Set parses M or M,M,M.
func (v *floatsValue) Set(s string) error {
	parts := strings.Split(s, ",")
	if len(parts) != 1 && len(parts) != 3 {
		return fmt.Errorf("want one number, or three separated by commas (one per channel)")
	}
	out := make([]float32, len(parts))
	for i, p := range parts {
		x, err := strconv.ParseFloat(strings.TrimSpace(p), 32)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%q is not a finite number", p)
		}
		out[i] = float32(x)
	}
	v.values = out
	return nil
}

// Type names the value in help texts.
func (v *floatsValue) Type() string { return v.metavar }

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Sources of the preprocessing values, as the report names them.
const (
	sourceGraph    = "graph"    // the model's graph input
	sourceMetadata = "metadata" // the model's dcconvert.preprocess entry
	sourceFlag     = "flag"     // --mean or --std
	sourceDefault  = "default"  // mean 0, std 1
)

// evalReport is the result of an evaluation, as --json prints it.
type evalReport struct {
	// Model is the model file and Data the data directory (or
	// "synthetic"), as given.
	Model string `json:"model"`
	Data  string `json:"data"`
	// Format is the data directory's format and Split the part evaluated.
	Format data.Format `json:"format"`
	Split  data.Split  `json:"split"`
	// Images is the number of images evaluated, Classes the model's
	// output width, Batch the engine's batch size.
	Images  int `json:"images"`
	Classes int `json:"classes"`
	Batch   int `json:"batch"`
	// Scores is what the first output holds: logits, probabilities or
	// log-probabilities (see engine.Scores).
	Scores string `json:"scores"`
	// Top1 and Top5 are the accuracies in percent.
	Top1 float64 `json:"top1"`
	Top5 float64 `json:"top5"`
	// MeanCrossEntropy is the mean over the images, in nats.
	MeanCrossEntropy float64 `json:"mean_cross_entropy"`
	// Preprocess is the conversion applied to the images.
	Preprocess evalPreprocess `json:"preprocess"`
	// Seconds is the wall time of the evaluation loop (decoding and
	// inference, which overlap) and ImagesPerSecond is Images / Seconds.
	Seconds         float64 `json:"seconds"`
	ImagesPerSecond float64 `json:"images_per_second"`
	// InferenceSeconds is the time spent in forward passes alone, and
	// InferenceImagesPerSecond is Images / InferenceSeconds.
	InferenceSeconds         float64 `json:"inference_seconds"`
	InferenceImagesPerSecond float64 `json:"inference_images_per_second"`
}

// evalPreprocess is the preprocessing of an evaluation and where each part
// of it came from.
type evalPreprocess struct {
	// Input is the model's input shape C, H, W.
	Input [3]int `json:"input"`
	// Mean and Std hold one value for all channels or one per channel.
	Mean []float32 `json:"mean"`
	Std  []float32 `json:"std"`
	// Source says where each came from: graph, metadata, flag or default.
	Source struct {
		Input string `json:"input"`
		Mean  string `json:"mean"`
		Std   string `json:"std"`
	} `json:"source"`
}

// evalPlan is what an evaluation needs to know of the model before it
// runs.
type evalPlan struct {
	input   string // the graph input fed with images
	output  string // the first graph output, the classifier's scores
	classes int    // the output width
	scores  engine.Scores
	pre     evalPreprocess
	names   []string // class names from the metadata, or nil
}

// runEval evaluates opts.Model on opts.Data and writes the report.
func runEval(opts *evalOptions) error {
	start := time.Now()
	m, err := onnximport.ReadFile(opts.Model)
	if err != nil {
		return err
	}
	if err := engine.Check(m); err != nil {
		return fmt.Errorf("%s: %w", opts.Model, err)
	}
	plan, err := planEval(opts, m)
	if err != nil {
		return err
	}
	set, format, err := openEvalData(opts, plan)
	if err != nil {
		return err
	}
	if err := checkClasses(opts, plan, set, format); err != nil {
		return err
	}
	read := time.Now()

	batch := min(opts.Batch, set.Len())
	e, err := engine.Build(m, engine.Options{Mode: engine.Inference, Batch: batch})
	if err != nil {
		return fmt.Errorf("%s: %w", opts.Model, err)
	}
	defer e.Close()
	in := plan.pre.Input
	want := []int{batch, in[0], in[1], in[2]}
	if got, ok := e.InputShape(plan.input); !ok || !slices.Equal(got, want) {
		return fmt.Errorf("%s: the engine takes input %q of shape %v, want %v", opts.Model, plan.input, got, want)
	}
	pre := data.Preprocess{C: in[0], H: in[1], W: in[2], Mean: plan.pre.Mean, Std: plan.pre.Std}
	loader, err := data.NewLoader(set, data.LoaderOptions{Batch: batch, Pre: pre})
	if err != nil {
		return fmt.Errorf("evaluating %s on %s: %w", opts.Model, opts.Data, err)
	}
	built := time.Now()
	opts.debugf("read %s and opened %s (%s, %s split, %d images) in %v; built the engine for batch %d in %v",
		opts.Model, opts.Data, format, opts.Split, set.Len(), read.Sub(start).Round(time.Millisecond),
		batch, built.Sub(read).Round(time.Millisecond))

	var bar *progressbar.ProgressBar
	if opts.Progress {
		bar = progressbar.NewOptions(set.Len(),
			progressbar.OptionSetWriter(opts.IO.ErrOut),
			progressbar.OptionSetDescription("eval"),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("img"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		bar.StartWithoutRender() // the clock of the rate starts now, not at the first batch
		_ = bar.RenderBlank()
	}
	ev := finetune.Evaluator{Engine: e, Input: plan.input, Output: plan.output, Classes: plan.classes, Scores: plan.scores}
	if bar != nil {
		ev.Progress = func(n int) { _ = bar.Add(n) }
	}
	metrics, inference, err := ev.Run(loader)
	if bar != nil {
		_ = bar.Clear()
	}
	if err != nil {
		return fmt.Errorf("evaluating %s on %s: %w", opts.Model, opts.Data, err)
	}
	elapsed := time.Since(built)
	opts.debugf("evaluated %d images in %v, %v of it in forward passes", metrics.Samples,
		elapsed.Round(time.Millisecond), inference.Round(time.Millisecond))

	r := evalReport{
		Model: opts.Model, Data: opts.Data, Format: format, Split: opts.Split,
		Images: metrics.Samples, Classes: plan.classes, Batch: batch, Scores: plan.scores.String(),
		Top1: metrics.Top1Accuracy(), Top5: metrics.Top5Accuracy(), MeanCrossEntropy: metrics.MeanCrossEntropy(),
		Preprocess:       plan.pre,
		Seconds:          elapsed.Seconds(),
		ImagesPerSecond:  rate(metrics.Samples, elapsed),
		InferenceSeconds: inference.Seconds(), InferenceImagesPerSecond: rate(metrics.Samples, inference),
	}
	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	} else {
		err = writeEvalText(opts.IO.Out, r)
	}
	if err != nil {
		return fmt.Errorf("writing the report: %w", err)
	}
	return nil
}

// rate returns n per second of d, or 0 for no time.
func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// planEval works out, from the model and the flags, which input to feed,
// with what preprocessing, and what the output holds.
func planEval(opts *evalOptions, m *onnximport.Model) (*evalPlan, error) {
	g := m.Graph()
	var inputs []string
	var info *onnxpb.ValueInfoProto
	for _, vi := range g.GetInput() {
		if _, ok := m.Initializer(vi.GetName()); ok {
			continue
		}
		inputs = append(inputs, vi.GetName())
		info = vi
	}
	if len(inputs) != 1 {
		return nil, fmt.Errorf("%s: the graph has %d inputs (%s); eval feeds images to a model with one input",
			opts.Model, len(inputs), strings.Join(inputs, ", "))
	}
	if len(g.GetOutput()) == 0 {
		return nil, fmt.Errorf("%s: the graph has no output", opts.Model)
	}
	plan := &evalPlan{input: inputs[0], output: g.GetOutput()[0].GetName(), scores: engine.ScoresOf(m)}

	meta, hasMeta, err := data.ReadPreprocessing(m.Proto)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Model, err)
	}
	shape, ok := onnximport.DeclaredShape(info)
	if !ok || len(shape) != 4 {
		return nil, fmt.Errorf("%s: graph input %q has shape %s; eval needs images [N, C, H, W]", opts.Model, plan.input, Shape(shape))
	}
	p := &plan.pre
	p.Source.Input = sourceGraph
	var unknown []string
	for i, d := range shape[1:] {
		switch {
		case hasMeta && len(meta.Input) == 3 && d.Known() && d.Size != int64(meta.Input[i]):
			return nil, fmt.Errorf("%s: metadata %s gives input %v, but graph input %q has shape %s",
				opts.Model, data.MetaPreprocess, meta.Input, plan.input, Shape(shape))
		case d.Known():
			p.Input[i] = int(d.Size)
		case hasMeta && len(meta.Input) == 3:
			p.Input[i] = meta.Input[i]
			p.Source.Input = sourceMetadata
		default:
			unknown = append(unknown, "CHW"[i:i+1])
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("%s: graph input %q has shape %s with %s unknown, and no metadata %s gives the input shape",
			opts.Model, plan.input, Shape(shape), strings.Join(unknown, " and "), data.MetaPreprocess)
	}
	if p.Source.Input == sourceMetadata {
		// The engine binds the batch size only: the other sizes the
		// graph leaves open are fixed to the metadata's.
		fixInputShape(info, p.Input)
	}
	if c := p.Input[0]; c != 1 && c != 3 {
		return nil, fmt.Errorf("%s: graph input %q takes %d channels; eval makes images of 1 or 3 channels", opts.Model, plan.input, c)
	}
	if p.Input[1] < 1 || p.Input[2] < 1 || p.Input[1] > 1<<16 || p.Input[2] > 1<<16 {
		return nil, fmt.Errorf("%s: graph input %q has an image size of %dx%d; eval supports 1 to 65536 a side",
			opts.Model, plan.input, p.Input[1], p.Input[2])
	}

	var errs []error
	pick := func(flag string, given, recorded []float32, def float32) ([]float32, string) {
		switch {
		case given != nil:
			if n := len(given); n != 1 && n != p.Input[0] {
				errs = append(errs, asUsageError(fmt.Errorf("--%s: %d values for a model input of %d %s; give 1",
					flag, n, p.Input[0], plural(p.Input[0], "channel", "channels"))))
			}
			return given, sourceFlag
		case len(recorded) > 0:
			if n := len(recorded); n != 1 && n != p.Input[0] {
				errs = append(errs, fmt.Errorf("%s: metadata %s: %d %s values for a model input of %d %s",
					opts.Model, data.MetaPreprocess, n, flag, p.Input[0], plural(p.Input[0], "channel", "channels")))
			}
			return recorded, sourceMetadata
		}
		return []float32{def}, sourceDefault
	}
	p.Mean, p.Source.Mean = pick("mean", opts.Mean, meta.Mean, 0)
	p.Std, p.Source.Std = pick("std", opts.Std, meta.Std, 1)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	shapes, err := m.InferShapes()
	if err != nil {
		return nil, fmt.Errorf("%s: inferring shapes: %w", opts.Model, err)
	}
	out := shapes[plan.output]
	if len(out) != 2 || !out[1].Known() || out[1].Size < 1 {
		return nil, fmt.Errorf("%s: the first graph output %q has shape %s; eval needs class scores [N, classes]",
			opts.Model, plan.output, Shape(out))
	}
	plan.classes = int(out[1].Size)
	if n := len(meta.Classes); n > 0 && n != plan.classes {
		return nil, fmt.Errorf("%s: metadata %s names %d classes, but the output %q has %d",
			opts.Model, data.MetaPreprocess, n, plan.output, plan.classes)
	}
	plan.names = meta.Classes
	return plan, nil
}

// fixInputShape sets the sizes C, H, W of an [N, C, H, W] graph input,
// keeping its batch dimension as it is.
func fixInputShape(vi *onnxpb.ValueInfoProto, chw [3]int) {
	dims := vi.GetType().GetTensorType().GetShape().GetDim()
	if len(dims) != 4 {
		return
	}
	for i, size := range chw {
		dims[i+1].Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(size)}
	}
}

// openEvalData opens the requested split of the data, the generated set
// taking the model's input shape and number of classes where it can.
func openEvalData(opts *evalOptions, plan *evalPlan) (data.Set, data.Format, error) {
	format := opts.Format
	if format == "" {
		f, err := data.Detect(opts.Data)
		if err != nil {
			return nil, "", err
		}
		format = f
	}
	oo := data.OpenOptions{Format: format, Split: opts.Split}
	if format == data.FormatSynthetic {
		oo.Synthetic = syntheticFor(plan)
	}
	set, err := data.Open(opts.Data, oo)
	if err != nil {
		return nil, "", err
	}
	if set.Len() == 0 {
		return nil, "", fmt.Errorf("%s: the %s split holds no images", opts.Data, opts.Split)
	}
	return set, format, nil
}

// checkClasses compares the model's classes with the data set's: a
// different number is an error, different names (when the model's
// metadata has them) a warning.
func checkClasses(opts *evalOptions, plan *evalPlan, set data.Set, format data.Format) error {
	names := set.Classes()
	if len(names) != plan.classes {
		return fmt.Errorf("%s has %d %s (output %q), but %s (%s) has %d; eval needs the same classes in the same order",
			opts.Model, plan.classes, plural(plan.classes, "class", "classes"), plan.output, opts.Data, format, len(names))
	}
	for i, n := range plan.names {
		if n != names[i] {
			opts.infof("warning: class %d is %q in the model's metadata but %q in %s; labels are matched by index",
				i, n, names[i], opts.Data)
			break
		}
	}
	return nil
}

// writeEvalText writes the report for people.
func writeEvalText(w io.Writer, r evalReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	p := r.Preprocess
	fmt.Fprintf(tw, "model\t%s (%s)\n", r.Model, r.Scores)
	fmt.Fprintf(tw, "data\t%s (%s, %s split, %d classes)\n", r.Data, r.Format, r.Split, r.Classes)
	fmt.Fprintf(tw, "preprocess\t%s (%s), mean %s (%s), std %s (%s)\n",
		shapeString([3]int64{int64(p.Input[0]), int64(p.Input[1]), int64(p.Input[2])}), p.Source.Input,
		floatList(p.Mean), p.Source.Mean, floatList(p.Std), p.Source.Std)
	fmt.Fprintf(tw, "images\t%d\n", r.Images)
	fmt.Fprintf(tw, "top-1\t%.2f%%\n", r.Top1)
	fmt.Fprintf(tw, "top-5\t%.2f%%\n", r.Top5)
	fmt.Fprintf(tw, "cross-entropy\t%.4f\n", r.MeanCrossEntropy)
	fmt.Fprintf(tw, "speed\t%.1f images/s (inference alone %.1f images/s, batch %d)\n",
		r.ImagesPerSecond, r.InferenceImagesPerSecond, r.Batch)
	return tw.Flush()
}

// floatList writes values comma-separated without trailing zeros.
func floatList(v []float32) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = formatFloat(x)
	}
	return strings.Join(s, ",")
}
