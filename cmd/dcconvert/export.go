package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/export"
)

// exportOptions are the options of "dcconvert export".
type exportOptions struct {
	*rootOptions
	// RunDir is the run directory to export from and Out the file to
	// write.
	RunDir, Out string
	// Format is what to write.
	Format export.Format
	// Checkpoint is export.Best, export.Last or the path of a checkpoint
	// file.
	Checkpoint string
}

// newExportCmd builds the export command. runF replaces runExport when
// not nil, so that tests can see the parsed options.
func newExportCmd(root *rootOptions, runF func(*exportOptions) error) *cobra.Command {
	opts := &exportOptions{rootOptions: root}
	var format string
	cmd := &cobra.Command{
		Use:   "export RUNDIR -o OUT",
		Short: "Write a fine-tuned model or its weights out of a run directory",
		Long: strings.TrimSpace(`
Export writes the model of the run directory RUNDIR (made by dcconvert
finetune) with the weights and running statistics of one of its
checkpoints: --checkpoint best (the default: the one that scored best on
validation, or the last one while no validation has run), last, or the
path of a checkpoint file.
The checkpoint must fit the run's model: a missing, extra or
differently shaped tensor is an error naming it.

Formats (--format):

  onnx         the ONNX model in function form: each decoupled convolution
               is one ai.dcnet node defined by a model-local function
  onnx-inline  the ONNX model with the function bodies in place, no custom
               domain left, and what depends only on the weights computed
               once: the normalised filters (W.normalized), the learnable
               radii (NODE.rho), the filter norms of weighted layers
  safetensors  every float initializer as a float32 tensor of the same
               name; the metadata holds each decoupled layer's
               configuration, the preprocessing, the step and the
               validation accuracy
  npz          every float initializer as a NumPy array (float32) named
               after it, for numpy.load

An exported model records its preprocessing and class names in its
metadata (dcconvert.preprocess), so dcconvert eval needs no --mean or
--std for it. Layers whose learnable radius was not calibrated at rewrite
count as calibrated once trained. Models over 2 GiB are written with
their weights in OUT.data next to OUT. The same checkpoint always gives
the same bytes, and OUT is written through a temporary file and a rename,
so a failed export leaves no partial file.`),
		Example: "  dcconvert export run -o vgg-mini.ft.onnx\n" +
			"  dcconvert export run --format onnx-inline --checkpoint last -o vgg-mini.ft.inline.onnx\n" +
			"  dcconvert export run --format npz -o vgg-mini.ft.npz",
		Args: exactArgs("RUNDIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.RunDir = args[0]
			if err := exportFlags(opts, format); err != nil {
				return err
			}
			if runF != nil {
				return runF(opts)
			}
			return runExport(opts)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&opts.Out, "output", "o", "", "file to write (required)")
	fl.StringVar(&format, "format", string(export.FormatONNX), "what to write: "+joinNames(export.Formats()))
	fl.StringVar(&opts.Checkpoint, "checkpoint", export.Best, "checkpoint to export: "+export.Best+", "+export.Last+" or the path of a checkpoint file")
	return cmd
}

// exportFlags checks the flag values and stores them in opts. Every
// problem is a usage error, reported together.
func exportFlags(opts *exportOptions, format string) error {
	var errs []error
	if opts.Out == "" {
		errs = append(errs, errors.New("export: missing required flag -o/--output"))
	}
	if f := export.Format(format); f.Valid() {
		opts.Format = f
	} else {
		errs = append(errs, fmt.Errorf("--format %q: want one of %s", format, joinNames(export.Formats())))
	}
	if opts.Checkpoint == "" {
		errs = append(errs, fmt.Errorf("--checkpoint: want %s, %s or the path of a checkpoint file", export.Best, export.Last))
	}
	if len(errs) > 0 {
		return asUsageError(errors.Join(errs...))
	}
	return nil
}

// runExport loads the checkpoint and writes the export.
func runExport(opts *exportOptions) error {
	start := time.Now()
	dir := checkpoint.Dir(opts.RunDir)
	t, err := export.Load(dir, opts.Checkpoint)
	if err != nil {
		return err
	}
	if err := checkOverwrite(opts.Out, dir, t.Checkpoint); err != nil {
		return err
	}
	if t.FellBack {
		opts.infof("note: %s has no %s yet (no validation has run); exporting the last checkpoint",
			opts.RunDir, checkpoint.BestFile)
	}
	loaded := time.Now()
	if err := export.Write(opts.Out, t, opts.Format); err != nil {
		return err
	}
	opts.debugf("read %s in %v, wrote %s in %v", t.Checkpoint, loaded.Sub(start).Round(time.Millisecond),
		opts.Out, time.Since(loaded).Round(time.Millisecond))
	if opts.Quiet {
		return nil
	}
	size := ""
	if info, err := os.Stat(opts.Out); err == nil {
		size = ", " + byteSize(info.Size())
	}
	opts.infof("wrote %s (%s%s) from %s", opts.Out, opts.Format, size, describeCheckpoint(t))
	return nil
}

// describeCheckpoint says which checkpoint an export came from, with its
// step and validation accuracy when known.
func describeCheckpoint(t *export.Trained) string {
	s := t.Checkpoint
	var facts []string
	if t.Step >= 0 {
		facts = append(facts, fmt.Sprintf("step %d", t.Step))
	}
	if t.ValTop1 != nil {
		facts = append(facts, fmt.Sprintf("validation top-1 %.2f%%", *t.ValTop1))
	} else {
		facts = append(facts, "not validated")
	}
	return s + " (" + strings.Join(facts, ", ") + ")"
}

// checkOverwrite refuses an output that is one of the run directory's
// own files or the checkpoint being read.
func checkOverwrite(out string, dir checkpoint.Dir, ckpt string) error {
	own := []string{ckpt}
	for _, name := range []string{checkpoint.ModelFile, checkpoint.RunFile, checkpoint.LastFile, checkpoint.BestFile,
		checkpoint.MetricsFile, checkpoint.CurvesFile} {
		own = append(own, dir.Path(name))
	}
	outAbs, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("-o %s: %w", out, err)
	}
	outInfo, statErr := os.Stat(out)
	for _, p := range own {
		abs, err := filepath.Abs(p)
		same := err == nil && abs == outAbs
		if info, err := os.Stat(p); err == nil && statErr == nil {
			same = same || os.SameFile(info, outInfo)
		}
		if same {
			return asUsageError(fmt.Errorf("-o %s would overwrite the run directory's %s", out, filepath.Base(p)))
		}
	}
	return nil
}
