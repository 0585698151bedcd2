package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
)

// Thresholds the demo checks its own results against.
const (
	// demoMinPlain is the lowest accuracy of the pretrained plain net, in
	// percent, below which the demo fails: the strategy needs a good
	// plain net to start from.
	demoMinPlain = 90
	// demoMaxExportGap is the largest difference, in points, between the
	// fine-tuned net's accuracy and its exported ONNX model's.
	demoMaxExportGap = 0.1
)

// demoOptions are the options of "dcconvert demo".
type demoOptions struct {
	*rootOptions
	// Data is the data directory, or "synthetic".
	Data string
	// Out is the directory for every file; empty means a new temporary
	// directory.
	Out string
	// Mag, Ang and Rho configure the rewrite as rewrite's flags do;
	// RhoGiven says --rho was given.
	Mag, Ang, Rho string
	RhoGiven      bool
}

// newDemoCmd builds the demo command. runF replaces runDemo when not nil.
func newDemoCmd(root *rootOptions, runF func(*demoOptions) error) *cobra.Command {
	opts := &demoOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole strategy on built-in data: pretrain, rewrite, fine-tune, export",
		Long: strings.TrimSpace(`
Demo runs the Decoupled Networks pretraining strategy from start to end with
the tool's own commands, and prints each command, a table of accuracies and
the time each stage took:

  1. models:   build a small VGG (vgg-mini) for the data's image size
  2. finetune: pretrain it as a plain CNN for one epoch (Adam)
  3. export:   write the pretrained plain model
  4. rewrite:  turn every convolution into a decoupled one with the same
               weights (--mag, --ang, --rho), calibrated on the training
               data (--calib, --alpha auto)
  5. finetune: fine-tune the decoupled net for one epoch
  6. export:   write it as an ONNX model any runtime can run
  7. eval:     measure each model on the test split

DATA is synthetic by default: a generated set of oriented bars of 10 classes
at 1x16x16, built into the binary. Any data directory eval and finetune take
works, at its own image size (Fashion-MNIST takes a few minutes, and one
epoch leaves its plain net just under 90 %). Every file stays in --out.

Demo exits with status 1 if the pretrained plain net scores below 90 % or
the exported model's accuracy differs from the fine-tuned net's by more
than 0.1 point.`),
		Example: "  dcconvert demo\n" +
			"  dcconvert demo --mag tanh --out demo-tanh\n" +
			"  dcconvert demo --mag seg --ang sigmoid --rho auto --out demo-seg",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.RhoGiven = cmd.Flags().Changed("rho")
			if runF != nil {
				return runF(opts)
			}
			return runDemo(opts)
		},
	}
	def := dcnet.DefaultConfig()
	fl := cmd.Flags()
	fl.StringVar(&opts.Data, "data", data.SyntheticName, "data directory, or synthetic")
	fl.StringVar(&opts.Out, "out", "", "directory for every file (default a new temporary directory, printed)")
	fl.StringVar(&opts.Mag, "mag", string(dcnet.MagBall), "magnitude function of the rewrite: "+joinNames(dcnet.Magnitudes()))
	fl.StringVar(&opts.Ang, "ang", string(def.Angular), "angular activation of the rewrite: "+joinNames(dcnet.Angulars()))
	fl.StringVar(&opts.Rho, "rho", "learn", "radius of the rewrite, for ball, tanh and seg: a number, learn or auto")
	return cmd
}

// demoStage is one row of the demo's table.
type demoStage struct {
	name     string
	top1     float64 // percent, NaN when the stage is not measured
	duration time.Duration
}

// demo runs the commands of the demo in this process.
type demo struct {
	opts   *demoOptions
	stages []demoStage
}

// run runs one dcconvert command line, printing it first; its standard
// output is returned, its standard error shown only with -v or on failure.
func (d *demo) run(args ...string) (string, time.Duration, error) {
	d.opts.infof("$ dcconvert %s", strings.Join(quoteArgs(args), " "))
	var out, errOut bytes.Buffer
	start := time.Now()
	code := execute(args, iostreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	took := time.Since(start)
	if d.opts.Verbose {
		d.opts.IO.ErrOut.Write(errOut.Bytes())
	}
	if code != exitOK {
		if !d.opts.Verbose {
			d.opts.IO.ErrOut.Write(errOut.Bytes())
		}
		return "", took, fmt.Errorf("dcconvert %s failed (exit status %d)", args[0], code)
	}
	return out.String(), took, nil
}

// quoteArgs quotes the arguments that a shell would split.
func quoteArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$\\*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

// eval measures a model's top-1 accuracy on the test split.
func (d *demo) eval(model string) (float64, time.Duration, error) {
	out, took, err := d.run("eval", model, "--data", d.opts.Data, "--json")
	if err != nil {
		return 0, took, err
	}
	var r evalReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return 0, took, fmt.Errorf("reading the report of eval %s: %w", model, err)
	}
	return r.Top1, took, nil
}

// runDemo runs the strategy and prints the table.
func runDemo(opts *demoOptions) error {
	start := time.Now()
	if opts.Out == "" {
		dir, err := os.MkdirTemp("", "dcconvert-demo-")
		if err != nil {
			return err
		}
		opts.Out = dir
	} else if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return err
	}
	if es, err := os.ReadDir(opts.Out); err != nil || len(es) > 0 {
		if err == nil {
			err = errors.New("it is not empty")
		}
		return fmt.Errorf("--out %s: %w", opts.Out, err)
	}
	input, classes, err := demoShape(opts.Data)
	if err != nil {
		return err
	}
	d := &demo{opts: opts}
	// --rho goes to the rewrite when the magnitude has a radius, or when
	// it was given (and the rewrite then says it is not used).
	rho := []string{"--rho", opts.Rho}
	if c := (dcnet.Config{Magnitude: dcnet.Magnitude(opts.Mag)}); !c.NeedsRho() && !opts.RhoGiven {
		rho = nil
	}
	file := func(name string) string { return filepath.Join(opts.Out, name) }
	q := []string{"-q"}
	if opts.Verbose {
		q = nil
	}
	steps := []struct {
		name  string
		args  []string
		model string // evaluated after the command, when not empty
	}{
		{"plain: build vgg-mini", []string{"models", "vgg-mini", "--input", input, "--classes", fmt.Sprint(classes), "-o", file("init.onnx")}, ""},
		{"plain: pretrain 1 epoch", append([]string{"finetune", file("init.onnx"), "--data", opts.Data, "--out", file("pretrain"),
			"--optimizer", "adam", "--lr", "0.002", "--epochs", "1", "--augment", "none"}, q...), ""},
		{"plain: export ONNX", []string{"export", file("pretrain"), "-o", file("plain.onnx")}, file("plain.onnx")},
		{"decoupled: rewrite + calibrate", append(append([]string{"rewrite", file("plain.onnx"), "--mag", opts.Mag, "--ang", opts.Ang},
			rho...), "--calib", opts.Data, "--alpha", "auto", "-o", file("plain.dc.onnx")), file("plain.dc.onnx")},
		{"decoupled: fine-tune 1 epoch", append([]string{"finetune", file("plain.dc.onnx"), "--data", opts.Data, "--out", file("finetune"),
			"--optimizer", "adam", "--lr", "0.001", "--epochs", "1", "--augment", "none"}, q...), ""},
		{"decoupled: export ONNX", []string{"export", file("finetune"), "-o", file("plain.dc.ft.onnx")}, file("plain.dc.ft.onnx")},
	}
	for _, s := range steps {
		_, took, err := d.run(s.args...)
		if err != nil {
			return err
		}
		st := demoStage{name: s.name, top1: math.NaN(), duration: took}
		if s.model != "" {
			top1, evalTook, err := d.eval(s.model)
			if err != nil {
				return err
			}
			st.top1, st.duration = top1, took+evalTook
		}
		d.stages = append(d.stages, st)
	}
	// The validation accuracy of the runs' best checkpoints, on the same
	// test split.
	for _, s := range []struct {
		stage int
		run   string
	}{{1, "pretrain"}, {4, "finetune"}} {
		top1, err := bestTop1(file(s.run))
		if err != nil {
			return err
		}
		d.stages[s.stage].top1 = top1
	}
	if err := d.table(time.Since(start)); err != nil {
		return err
	}
	return demoVerdict(d.stages[2].top1, d.stages[4].top1, d.stages[5].top1)
}

// demoVerdict checks the demo's results: the exported plain net's
// accuracy, and the fine-tuned decoupled net's against its export's.
func demoVerdict(plain, finetuned, exported float64) error {
	var errs []error
	if !(plain >= demoMinPlain) {
		errs = append(errs, fmt.Errorf("the pretrained plain net scored %.2f%%, below %d%%", plain, demoMinPlain))
	}
	if gap := math.Abs(exported - finetuned); !(gap <= demoMaxExportGap) {
		errs = append(errs, fmt.Errorf("the exported model scored %.2f%%, the fine-tuned net %.2f%%: %.2f points apart, more than %.1f",
			exported, finetuned, gap, demoMaxExportGap))
	}
	return errors.Join(errs...)
}

// table prints the stages.
func (d *demo) table(total time.Duration) error {
	w := tabwriter.NewWriter(d.opts.IO.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "stage\ttest top-1\ttime\n")
	for _, s := range d.stages {
		acc := "-"
		if !math.IsNaN(s.top1) {
			acc = fmt.Sprintf("%.2f%%", s.top1)
		}
		fmt.Fprintf(w, "%s\t%s\t%.1fs\n", s.name, acc, s.duration.Seconds())
	}
	fmt.Fprintf(w, "total\t\t%.1fs\n", total.Seconds())
	if err := w.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(d.opts.IO.Out, "every file is in %s\n", d.opts.Out)
	return err
}

// demoShape returns the model input (CxHxW) and the number of classes
// for the demo's data: 1x16x16 and 10 for the synthetic set, else the
// first training image's shape and the data's classes.
func demoShape(dir string) (string, int, error) {
	if dir == data.SyntheticName {
		return "1x16x16", 10, nil
	}
	set, err := data.Open(dir, data.OpenOptions{})
	if err != nil {
		return "", 0, err
	}
	if set.Len() == 0 {
		return "", 0, fmt.Errorf("%s: no training images", dir)
	}
	img, _, err := set.Image(0)
	if err != nil {
		return "", 0, err
	}
	return fmt.Sprintf("%dx%dx%d", img.C, img.H, img.W), len(set.Classes()), nil
}
