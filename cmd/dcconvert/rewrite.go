package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// rewriteOptions are the options of "dcconvert rewrite".
type rewriteOptions struct {
	*rootOptions
	// Model is the file to read and Out the file to write.
	Model, Out string
	// Rewrite says what to rewrite and how.
	Rewrite rewrite.Options
	// JSON prints the report as JSON on standard output.
	JSON bool
	// Calib is the calibration data directory (or "synthetic"), empty for
	// none; CalibBatches is how many of its batches calibration uses.
	Calib        string
	CalibBatches int
}

// rewriteFlags holds the flag values that become a dcnet.Config.
type rewriteFlags struct {
	mag, ang, weighted string
	alpha, rho         string
	beta, k, eps       float32
	calib              string
	calibBatches       int
}

// newRewriteCmd builds the rewrite command. runF replaces runRewrite when
// not nil, so that tests can see the parsed options.
func newRewriteCmd(root *rootOptions, runF func(*rewriteOptions) error) *cobra.Command {
	opts := &rewriteOptions{rootOptions: root}
	def := dcnet.DefaultConfig()
	f := rewriteFlags{
		mag: string(def.Magnitude), ang: string(def.Angular), weighted: string(def.Weighted),
		alpha: formatFloat(def.Alpha), beta: def.Beta, k: def.K, eps: def.Eps, calibBatches: 8,
	}
	cmd := &cobra.Command{
		Use:   "rewrite MODEL -o OUT",
		Short: "Rewrite the convolutions of a model into decoupled convolutions",
		Long: strings.TrimSpace(`
Rewrite replaces each selected Conv of MODEL by a decoupled convolution with
the same weights,

    y = h(|x|) * m(|w|) * g(theta) + b

where h is the magnitude function (--mag), g the angular activation (--ang)
of the angle between filter and input patch, and m the optional weighting
by the filter norm (--weighted). Each decoupled layer becomes a node in the
ai.dcnet domain with a model-local function computing it from standard
operators of the model's own opset, so any ONNX runtime runs the result;
--inline writes the function bodies in place instead.

Magnitudes: sphere, ball, tanh, linear, seg, log, mix. Angular: cos, linear,
sigmoid, sqcos. Weighting: none, linear, log. ball, tanh and seg need a
radius: --rho F fixes it, --rho learn (their default) makes it a trainable
per-channel value scaled by the running mean of the patch norm.

--layers selects layers: names or glob patterns (features.*), zero-based
indices and ranges (0-3, -1 for the last), exclusions (!features.0),
comma-separated. By default every Conv with group 1 is rewritten.

A table of what was rewritten goes to standard error (--json prints it to
standard output for scripts). The output is written through a temporary file
and a rename, so a failed run leaves no partial file.`),
		Example: "  dcconvert rewrite vgg-mini.onnx --mag ball --rho learn -o vgg-mini.dc.onnx\n" +
			"  dcconvert rewrite vgg-mini.onnx --mag tanh --ang sigmoid --layers 'features.*,!features.0' -o vgg-mini.tanh.onnx\n" +
			"  dcconvert rewrite vgg-mini.onnx --mag ball --calib /usr/share/datasets/fashion-mnist --alpha auto -o vgg-mini.calib.onnx",
		Args: exactArgs("MODEL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Model = args[0]
			if opts.Out == "" {
				return usageErrorf("rewrite: missing required flag -o/--output")
			}
			cfg, err := rewriteConfig(cmd, f, &opts.Rewrite)
			if err != nil {
				return err
			}
			opts.Rewrite.Config = cfg
			opts.Calib, opts.CalibBatches = f.calib, f.calibBatches
			if runF != nil {
				return runF(opts)
			}
			return runRewrite(opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&opts.Out, "output", "o", "", "file to write (required)")
	fl.StringVar(&f.mag, "mag", f.mag, "magnitude function: "+joinNames(dcnet.Magnitudes()))
	fl.StringVar(&f.ang, "ang", f.ang, "angular activation: "+joinNames(dcnet.Angulars()))
	fl.StringVar(&f.weighted, "weighted", f.weighted, "weighting by the filter norm: "+joinNames(dcnet.Weightings()))
	fl.StringVar(&f.alpha, "alpha", f.alpha, "scale alpha of the magnitude function, F > 0, or auto: a per-channel output scale fitted by least squares on --calib data")
	fl.Float32Var(&f.beta, "beta", f.beta, "slope beta of seg above the radius and weight of log in mix (>= 0)")
	fl.Float32Var(&f.k, "k", f.k, "steepness k of the sigmoid angular activation (> 0)")
	fl.StringVar(&f.rho, "rho", "", "radius of ball, tanh and seg: F > 0, learn, or auto: the mean patch norm on --calib data (default learn where the magnitude needs it)")
	fl.Float32Var(&f.eps, "eps", f.eps, "epsilon inside the norms' square roots (> 0)")
	fl.StringVar(&opts.Rewrite.Layers, "layers", "", "layers to rewrite (default every Conv with group 1)")
	fl.StringVar(&f.calib, "calib", "", "calibration data (a DATA directory or synthetic) for --rho auto, --alpha auto and learnable radii")
	fl.IntVar(&f.calibBatches, "calib-batches", f.calibBatches, "batches of calibration data to use")
	fl.BoolVar(&opts.Rewrite.Inline, "inline", false, "write the function bodies in place (no custom domain left)")
	fl.BoolVar(&opts.JSON, "json", false, "print the report as JSON on standard output")
	return cmd
}

// joinNames lists names for help texts.
func joinNames[T ~string](names []T) string {
	s := make([]string, len(names))
	for i, n := range names {
		s[i] = string(n)
	}
	return strings.Join(s, ", ")
}

// formatFloat writes a flag default without trailing zeros.
func formatFloat(v float32) string { return strconv.FormatFloat(float64(v), 'g', -1, 32) }

// rewriteConfig turns the flags into an operator configuration, checking
// each value and the combination: a flag the chosen operator does not use
// is a usage error rather than silently ignored.
func rewriteConfig(cmd *cobra.Command, f rewriteFlags, ro *rewrite.Options) (dcnet.Config, error) {
	given := cmd.Flags().Changed
	cfg := dcnet.DefaultConfig()
	cfg.Magnitude = dcnet.Magnitude(f.mag)
	cfg.Angular = dcnet.Angular(f.ang)
	cfg.Weighted = dcnet.Weighting(f.weighted)
	cfg.Beta, cfg.K, cfg.Eps = f.beta, f.k, f.eps
	var errs []error
	switch f.alpha {
	case "auto":
		ro.AlphaAuto = true
	default:
		v, err := strconv.ParseFloat(f.alpha, 32)
		if err != nil {
			errs = append(errs, fmt.Errorf("--alpha %q: want a number > 0 or auto", f.alpha))
		}
		cfg.Alpha = float32(v)
	}
	if given("calib-batches") && !given("calib") {
		errs = append(errs, errors.New("--calib-batches: give --calib DATA too"))
	}
	if f.calibBatches < 1 {
		errs = append(errs, fmt.Errorf("--calib-batches %d: must be at least 1", f.calibBatches))
	}
	switch f.rho {
	case "":
		cfg.LearnRho = cfg.NeedsRho()
	case "learn":
		cfg.LearnRho = true
	case "auto":
		ro.RhoAuto = true
		cfg.Rho = 1 // replaced by the measured mean patch norm
	default:
		v, err := strconv.ParseFloat(f.rho, 32)
		if err != nil {
			errs = append(errs, fmt.Errorf("--rho %q: want a number > 0, learn or auto", f.rho))
		}
		cfg.Rho = float32(v)
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	} else {
		if given("rho") && !cfg.NeedsRho() {
			errs = append(errs, fmt.Errorf("--rho: magnitude %s has no radius (ball, tanh and seg do)", cfg.Magnitude))
		}
		if given("beta") && !cfg.UsesBeta() {
			errs = append(errs, fmt.Errorf("--beta: magnitude %s does not use beta (seg and mix do)", cfg.Magnitude))
		}
		if given("k") && !cfg.UsesK() {
			errs = append(errs, fmt.Errorf("--k: angular activation %s does not use k (sigmoid does)", cfg.Angular))
		}
		if (ro.AlphaAuto || ro.RhoAuto) && !given("calib") {
			errs = append(errs, errors.New("--alpha auto and --rho auto measure on data: give --calib DATA"))
		}
		if given("calib") && !ro.AlphaAuto && !ro.RhoAuto && !cfg.LearnRho {
			errs = append(errs, fmt.Errorf("--calib: nothing to calibrate (a learnable radius, --rho auto or --alpha auto is)"))
		}
	}
	if len(errs) > 0 {
		return cfg, asUsageError(errors.Join(errs...))
	}
	return cfg, nil
}

// runRewrite reads the model, rewrites it and writes the result.
func runRewrite(opts *rewriteOptions) error {
	start := time.Now()
	m, err := onnximport.ReadFile(opts.Model)
	if err != nil {
		return err
	}
	if opts.Calib != "" {
		calib, err := newEngineCalibrator(opts.Model, m, opts.Calib, opts.CalibBatches)
		if err != nil {
			return err
		}
		opts.Rewrite.Calib = calib
	}
	read := time.Now()
	report, err := rewrite.Run(m, opts.Rewrite, nil)
	if err != nil {
		var se *rewrite.SelectionError
		if errors.As(err, &se) {
			return asUsageError(fmt.Errorf("rewriting %s: %w", opts.Model, err))
		}
		return fmt.Errorf("rewriting %s: %w", opts.Model, err)
	}
	rewritten := time.Now()
	b, err := m.Encode()
	if err != nil {
		return err
	}
	if err := onnximport.WriteFileAtomic(opts.Out, b); err != nil {
		return writeError(opts.Out, err)
	}
	opts.debugf("read %s in %v, rewrote in %v, wrote %s in %v", opts.Model,
		read.Sub(start).Round(time.Millisecond), rewritten.Sub(read).Round(time.Millisecond),
		opts.Out, time.Since(rewritten).Round(time.Millisecond))

	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	}
	if opts.Quiet {
		return nil
	}
	return writeRewriteReport(opts, report, m, int64(len(b)))
}

// writeRewriteReport writes the table of rewritten layers, the skipped
// ones and what is left to do, for people.
func writeRewriteReport(opts *rewriteOptions, r *rewrite.Report, m *onnximport.Model, size int64) error {
	w := opts.IO.ErrOut
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tLAYER\tWEIGHT\tOUTPUT\tOPERATOR")
	for _, l := range r.Layers {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\n", l.Index, l.Name, dimsString(l.Weight), orDash(l.Output), l.Operator)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "warning: layer %q kept as it was: %s\n", s.Name, s.Reason)
	}
	if n := len(r.Uncalibrated); n > 0 {
		fmt.Fprintf(w, "note: %d %s a learnable radius that is not calibrated yet: its patch-norm scale RhoScale is 1 until estimated from data (the layers are listed in metadata %s)\n",
			n, plural(n, "layer has", "layers have"), dcnet.MetaUncalibrated)
	}
	form := "function form"
	if r.Inlined {
		form = "inlined, no custom domain"
	}
	fmt.Fprintf(w, "wrote %s: %d of %d convolution layers decoupled (%s, opset %d), %s\n",
		opts.Out, len(r.Layers), r.Total, form, m.Opset(""), byteSize(size))
	return nil
}

func dimsString(d []int64) string {
	s := make([]string, len(d))
	for i, v := range d {
		s[i] = strconv.FormatInt(v, 10)
	}
	return "[" + strings.Join(s, ",") + "]"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
