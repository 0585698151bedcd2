package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
)

// TestFinetuneFlags checks how command lines become finetuneOptions, and
// that the defaults are finetune.DefaultConfig's.
func TestFinetuneFlags(t *testing.T) {
	def := finetuneOptions{Model: "m.onnx", Data: "synthetic", Out: "run", ValSplit: 0, Train: finetune.DefaultConfig()}
	with := func(change func(*finetuneOptions)) finetuneOptions {
		o := def
		o.Train.Freeze = nil
		change(&o)
		return o
	}
	base := []string{"m.onnx", "--data", "synthetic", "--out", "run"}
	tests := []struct {
		name    string
		args    []string
		want    finetuneOptions
		wantErr string
	}{
		{name: "defaults", args: base, want: def},
		{name: "every flag", args: append(slices.Clone(base), "--data-format", "synthetic", "--val", "v", "--eval-every", "5",
			"--steps", "7", "--batch", "8", "--lr", "0.1", "--optimizer", "sgd", "--momentum", "0.5", "--nesterov",
			"--wd", "0.01", "--wd-filters", "--schedule", "step", "--warmup", "2", "--clip-norm", "1", "--label-smoothing", "0.1",
			"--project-every", "3", "--orth", "1e-5", "--train", "decoupled", "--freeze", "features.0.*", "--freeze", "x",
			"--new-head", "--augment", "crop", "--no-shuffle", "--mean", "0.5", "--std", "0.25", "--seed", "9", "--resume"),
			want: with(func(o *finetuneOptions) {
				o.Format, o.Val, o.Mean, o.Std, o.Resume, o.AugmentGiven = data.FormatSynthetic, "v", []float32{0.5}, []float32{0.25}, true, true
				o.Train = finetune.Config{Epochs: 1, Steps: 7, Batch: 8, LR: 0.1, Optimizer: finetune.SGD, Momentum: 0.5, Nesterov: true,
					WD: 0.01, WDFilters: true, Schedule: finetune.Step, Warmup: 2, ClipNorm: 1, LabelSmoothing: 0.1,
					ProjectEvery: 3, Orth: 1e-5, Train: finetune.TrainDecoupled, Freeze: []string{"features.0.*", "x"},
					NewHead: true, Augment: data.AugmentCrop, Shuffle: false, Seed: 9, EvalEvery: 5}
			})},
		{name: "val split", args: append(slices.Clone(base), "--val-split", "0.2"), want: with(func(o *finetuneOptions) { o.ValSplit = 0.2 })},
		{name: "missing data and out", args: []string{"m.onnx"}, wantErr: "finetune: missing required flag --data\nfinetune: missing required flag --out"},
		{name: "epochs and steps", args: append(slices.Clone(base), "--epochs", "2", "--steps", "3"), wantErr: "--epochs and --steps: give one of them"},
		{name: "bad optimizer", args: append(slices.Clone(base), "--optimizer", "rmsprop"), wantErr: `--optimizer: "rmsprop": want one of [sgd adam adamw]`},
		{name: "bad schedule", args: append(slices.Clone(base), "--schedule", "linear"), wantErr: `--schedule: "linear"`},
		{name: "nesterov without momentum", args: append(slices.Clone(base), "--nesterov", "--momentum", "0"), wantErr: "--nesterov: needs --optimizer sgd with a positive --momentum"},
		{name: "bad lr", args: append(slices.Clone(base), "--lr", "0"), wantErr: "--lr: 0: must be a positive number"},
		{name: "bad smoothing", args: append(slices.Clone(base), "--label-smoothing", "1"), wantErr: "--label-smoothing: 1: must be in [0, 1)"},
		{name: "bad glob", args: append(slices.Clone(base), "--freeze", "[a"), wantErr: `--freeze: "[a"`},
		{name: "bad val split", args: append(slices.Clone(base), "--val-split", "1"), wantErr: "--val-split 1: must be in [0, 1)"},
		{name: "val and val split", args: append(slices.Clone(base), "--val", "v", "--val-split", "0.1"), wantErr: "--val and --val-split: give one of them"},
		{name: "bad train", args: append(slices.Clone(base), "--train", "some"), wantErr: `--train: "some"`},
		{name: "bad augment", args: append(slices.Clone(base), "--augment", "rotate"), wantErr: "--augment"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *finetuneOptions
			_, err := parseArgs(append([]string{"finetune"}, tc.args...), func(root *rootOptions) *cobra.Command {
				return newFinetuneCmd(root, func(o *finetuneOptions) error { got = o; return nil })
			})
			if checkParse(t, err, tc.wantErr) {
				return
			}
			got.rootOptions = nil
			if tc.name == "defaults" && got.ValSplit != -1 {
				t.Errorf("ValSplit %v without --val-split, want -1 (the data decides)", got.ValSplit)
			}
			got.ValSplit = max(got.ValSplit, 0)
			if diff := cmp.Diff(tc.want, *got, cmp.AllowUnexported(finetuneOptions{})); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

// writeMini writes a vgg-mini of input 1x16x16 and the given classes.
func writeMini(t *testing.T, dir string, classes int) string {
	t.Helper()
	p, err := models.Build("vgg-mini", models.Config{Input: [3]int64{1, 16, 16}, Classes: classes})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "mini.onnx")
	if err := (&onnximport.Model{Proto: p}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFinetuneRun runs a short fine-tuning and checks the run directory:
// every file, the metrics, the checkpoints' step and validation accuracy,
// and that a resumed run with a longer schedule continues where it left
// off and ends with the weights of a run straight through.
func TestFinetuneRun(t *testing.T) {
	dir := t.TempDir()
	model := writeMini(t, dir, 4)
	args := func(out string, steps string, extra ...string) []string {
		return append([]string{"finetune", model, "--data", "synthetic", "--out", out, "--steps", steps, "--batch", "32",
			"--optimizer", "adam", "--lr", "0.002", "--schedule", "const", "--augment", "none", "--eval-every", "10"}, extra...)
	}
	straight := filepath.Join(dir, "straight")
	code, stdout, stderr := runCLI(args(straight, "30")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("finetune wrote to standard output: %q", stdout)
	}
	for _, want := range []string{"finished 30 steps", "best validation top-1:", "next: dcconvert export " + straight} {
		if !strings.Contains(stderr, want) {
			t.Errorf("standard error lacks %q:\n%s", want, stderr)
		}
	}
	if got, want := dirEntries(t, straight), []string{"best.safetensors", "curves.png", "last.safetensors", "metrics.jsonl", "model.onnx", "run.json"}; !slices.Equal(got, want) {
		t.Errorf("run directory holds %v, want %v", got, want)
	}
	recs, err := checkpoint.ReadMetrics(filepath.Join(straight, checkpoint.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var vals int
	for _, r := range recs {
		if r.ValAcc != nil {
			vals++
		}
	}
	if n := len(recs); n == 0 || recs[n-1].Step != 30 || vals != 3 {
		t.Errorf("metrics: %d records ending at step %d with %d validations, want the last at step 30 and 3 validations", n, recs[max(n-1, 0)].Step, vals)
	}
	last, err := checkpoint.ReadFile(filepath.Join(straight, checkpoint.LastFile))
	if err != nil {
		t.Fatal(err)
	}
	if last.Metadata[finetune.MetaStep] != "30" || last.Metadata[checkpoint.MetaValTop1] == "" {
		t.Errorf("last checkpoint metadata %v", last.Metadata)
	}
	if top1, _ := parseFloatMeta(last.Metadata, checkpoint.MetaValTop1); top1 < 50 {
		t.Errorf("validation top-1 %v%% after 30 steps, want above 50%% (chance is 25%%)", top1)
	}
	run, err := checkpoint.ReadRun(filepath.Join(straight, checkpoint.RunFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Preprocess.Classes) != 4 || !slices.Equal(run.Preprocess.Input, []int{1, 16, 16}) || len(run.Trained) != 12 {
		t.Errorf("run.json: %+v", run)
	}
	m, err := onnximport.ReadFile(filepath.Join(straight, checkpoint.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok, err := data.ReadPreprocessing(m.Proto); err != nil || !ok || len(p.Classes) != 4 {
		t.Errorf("model.onnx preprocessing %+v, %v, %v", p, ok, err)
	}

	// The same run in two parts: 12 steps, then --resume to 30.
	parts := filepath.Join(dir, "parts")
	if code, _, stderr := runCLI(args(parts, "12", "-q")...); code != 0 {
		t.Fatalf("first part: exit %d: %s", code, stderr)
	}
	code, _, stderr = runCLI(args(parts, "30", "--resume")...)
	if code != 0 {
		t.Fatalf("resumed: exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "resuming "+parts+" at step 12") {
		t.Errorf("resumed run does not say where it resumed:\n%s", stderr)
	}
	a, _ := os.ReadFile(filepath.Join(straight, checkpoint.LastFile))
	b, _ := os.ReadFile(filepath.Join(parts, checkpoint.LastFile))
	if len(a) == 0 || !slices.Equal(a, b) {
		t.Error("the resumed run's last checkpoint differs from the straight run's")
	}
	resumed, err := checkpoint.ReadMetrics(filepath.Join(parts, checkpoint.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	steps := func(rs []checkpoint.Record) []int64 {
		var s []int64
		for _, r := range rs {
			s = append(s, r.Step)
		}
		return s
	}
	// The first part's end adds a record at step 12.
	if want := []int64{10, 12, 18, 20, 30}; !slices.Equal(steps(recs), []int64{10, 18, 20, 30}) || !slices.Equal(steps(resumed), want) {
		t.Errorf("metrics at steps %v (straight) and %v (resumed), want [10 18 20 30] and %v", steps(recs), steps(resumed), want)
	}
}

// TestFinetuneInterrupt sends the run a signal and checks that it saves
// a checkpoint, says how to resume and exits cleanly.
func TestFinetuneInterrupt(t *testing.T) {
	dir := t.TempDir()
	model := writeMini(t, dir, 4)
	out := filepath.Join(dir, "run")
	var opts *finetuneOptions
	_, err := parseArgs([]string{"finetune", model, "--data", "synthetic", "--out", out, "--steps", "50", "--batch", "16"},
		func(root *rootOptions) *cobra.Command {
			return newFinetuneCmd(root, func(o *finetuneOptions) error { opts = o; return nil })
		})
	if err != nil {
		t.Fatal(err)
	}
	streams, _, errOut := testIO()
	opts.rootOptions = &rootOptions{IO: streams}
	opts.Signals = make(chan os.Signal, 1)
	opts.Signals <- syscall.SIGINT
	if err := runFinetune(opts); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "interrupted: saved step") || !strings.Contains(errOut.String(), "--resume") {
		t.Errorf("no resume advice after an interrupt:\n%s", errOut.String())
	}
	f, err := checkpoint.ReadFile(filepath.Join(out, checkpoint.LastFile))
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata[finetune.MetaStep] == "50" {
		t.Error("the interrupted run trained to the end")
	}
}

// TestFinetuneUnwritable makes a run directory's file unwritable in the
// middle of a run and checks the error names it and the intact last
// checkpoint.
func TestFinetuneUnwritable(t *testing.T) {
	dir := t.TempDir()
	model := writeMini(t, dir, 4)
	out := filepath.Join(dir, "run")
	args := []string{"finetune", model, "--data", "synthetic", "--out", out, "--batch", "8", "--schedule", "const", "--eval-every", "4", "-q"}
	if code, _, stderr := runCLI(append(args, "--steps", "4")...); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	before, err := os.ReadFile(filepath.Join(out, checkpoint.LastFile))
	if err != nil {
		t.Fatal(err)
	}
	// A directory where the plot goes: writing it fails after the
	// checkpoint of step 8 is saved.
	curves := filepath.Join(out, checkpoint.CurvesFile)
	if err := os.Remove(curves); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(curves, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(append(args, "--steps", "8", "--resume")...)
	if code != 1 || !strings.Contains(stderr, "curves.png") || !strings.Contains(stderr, "is intact") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 naming curves.png and the intact checkpoint", code, stderr)
	}
	after, err := checkpoint.ReadFile(filepath.Join(out, checkpoint.LastFile))
	if err != nil {
		t.Fatalf("the last checkpoint is not readable after the failure: %v", err)
	}
	if after.Metadata[finetune.MetaStep] != "8" || slices.Equal(before, mustRead(t, filepath.Join(out, checkpoint.LastFile))) {
		t.Errorf("last checkpoint at step %s after the failed write", after.Metadata[finetune.MetaStep])
	}
}

// mustRead returns a file's bytes.
func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFinetuneErrors checks bad runs: a clear error, exit code, and no
// run directory left behind where the run could not start.
func TestFinetuneErrors(t *testing.T) {
	dir := t.TempDir()
	model := writeMini(t, dir, 4)
	ten := writeMini(t, t.TempDir(), 10)
	folder := filepath.Join(dir, "folder")
	writeImageFolder(t, folder, []string{"a", "b", "c"}, 4)
	started := filepath.Join(dir, "started")
	if code, _, stderr := runCLI("finetune", model, "--data", "synthetic", "--out", started, "--steps", "2", "--batch", "8", "-q"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	tests := []struct {
		name    string
		args    []string
		code    int
		want    string
		noOut   bool // the --out directory must not exist afterwards
		outPath string
	}{
		{name: "missing model", args: []string{"finetune", filepath.Join(dir, "nope.onnx"), "--data", "synthetic", "--out", "OUT"},
			code: 1, want: "nope.onnx: no such file", noOut: true},
		{name: "class mismatch", args: []string{"finetune", ten, "--data", "FOLDER", "--out", "OUT"}, code: 2, noOut: true,
			want: "the model's classifier has 10 outputs but the data has 3 classes; add --new-head"},
		{name: "out not empty", args: []string{"finetune", model, "--data", "synthetic", "--out", started}, code: 1,
			want: "is not empty; add --resume to continue it, or choose another --out"},
		{name: "resume not a run", args: []string{"finetune", model, "--data", "synthetic", "--out", "OUT", "--resume"}, code: 1,
			want: "is not a run directory", noOut: true},
		{name: "resume other config", args: []string{"finetune", model, "--data", "synthetic", "--out", started, "--steps", "2", "--batch", "8", "--lr", "0.5", "--resume"},
			code: 1, want: "cannot resume " + started + ": the configuration differs: --lr was 0.01, now 0.5"},
		{name: "resume other data", args: []string{"finetune", model, "--data", "synthetic", "--out", started, "--steps", "2", "--batch", "8", "--val-split", "0.2", "--resume"},
			code: 1, want: "the run trained on synthetic (synthetic), which differs from synthetic"},
		{name: "resume other model", args: []string{"finetune", ten, "--data", "synthetic", "--out", started, "--steps", "2", "--batch", "8", "--resume"},
			code: 1, want: "another file than"},
		{name: "batch larger than data", args: []string{"finetune", model, "--data", "synthetic", "--out", "OUT", "--batch", "100000"}, code: 2,
			want: "fewer than one batch"},
		{name: "diverges", args: []string{"finetune", model, "--data", "synthetic", "--out", "OUT", "--lr", "1e30", "--steps", "5", "--batch", "8"}, code: 1,
			want: "training diverged: step"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "run")
			args := slices.Clone(tc.args)
			for i, a := range args {
				switch a {
				case "OUT":
					args[i] = out
				case "FOLDER":
					args[i] = folder
				}
			}
			code, _, stderr := runCLI(args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr, tc.code, tc.want)
			}
			if _, err := os.Stat(out); tc.noOut && err == nil {
				t.Errorf("%s exists after the failed run", out)
			}
		})
	}
}
