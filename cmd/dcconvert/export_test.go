package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/export"
	"github.com/dcconvert/dcconvert/export/exporttest"
	"github.com/dcconvert/dcconvert/finetune"
)

// TestExportFlags checks how command lines become exportOptions.
func TestExportFlags(t *testing.T) {
	def := exportOptions{RunDir: "runs/a", Out: "m.onnx", Format: export.FormatONNX, Checkpoint: export.Best}
	tests := []struct {
		name    string
		args    []string
		want    exportOptions
		wantErr string // a usage error containing this, when not empty
	}{
		{name: "defaults", args: []string{"runs/a", "-o", "m.onnx"}, want: def},
		{name: "every flag", args: []string{"runs/a", "--output", "w.npz", "--format", "npz", "--checkpoint", "last"},
			want: exportOptions{RunDir: "runs/a", Out: "w.npz", Format: export.FormatNPZ, Checkpoint: export.Last}},
		{name: "inline and a checkpoint file", args: []string{"runs/a", "-o", "m.onnx", "--format", "onnx-inline", "--checkpoint", "x.safetensors"},
			want: exportOptions{RunDir: "runs/a", Out: "m.onnx", Format: export.FormatONNXInline, Checkpoint: "x.safetensors"}},
		{name: "safetensors", args: []string{"runs/a", "-o", "m.st", "--format", "safetensors"},
			want: exportOptions{RunDir: "runs/a", Out: "m.st", Format: export.FormatSafetensors, Checkpoint: export.Best}},
		{name: "missing output", args: []string{"runs/a"}, wantErr: "export: missing required flag -o/--output"},
		{name: "missing run directory", args: []string{"-o", "m.onnx"}, wantErr: "export: missing argument RUNDIR"},
		{name: "two run directories", args: []string{"a", "b", "-o", "m.onnx"}, wantErr: `unexpected argument "b"`},
		{name: "unknown format", args: []string{"a", "-o", "m.pb", "--format", "pb"},
			wantErr: `--format "pb": want one of onnx, onnx-inline, safetensors, npz`},
		{name: "empty checkpoint", args: []string{"a", "-o", "m.onnx", "--checkpoint", ""}, wantErr: "--checkpoint: want best, last or the path"},
		{name: "problems together", args: []string{"a", "--format", "x"},
			wantErr: "export: missing required flag -o/--output\n--format \"x\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *exportOptions
			_, err := parseArgs(append([]string{"export"}, tc.args...), func(root *rootOptions) *cobra.Command {
				return newExportCmd(root, func(o *exportOptions) error { got = o; return nil })
			})
			if checkParse(t, err, tc.wantErr) {
				return
			}
			got.rootOptions = nil
			if diff := cmp.Diff(tc.want, *got, cmp.AllowUnexported(exportOptions{})); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

// exportRun makes a fine-tuned run directory of a decoupled vgg-mini
// with a normalisation recorded in run.json.
func exportRun(t *testing.T) *exporttest.Run {
	t.Helper()
	ball := dcnet.DefaultConfig()
	ball.Magnitude, ball.LearnRho = dcnet.MagBall, true
	return exporttest.Make(t, t.TempDir(), exporttest.Options{Decoupled: &ball, Mean: []float32{0.5}, Std: []float32{0.25}})
}

// TestRunExport exports a run directory in every format and checks what
// the command says, and that dcconvert eval of the exported model, with
// no preprocessing flags, finds the accuracy the engine computes from the
// checkpoint.
func TestRunExport(t *testing.T) {
	r := exportRun(t)
	out := t.TempDir()
	for _, f := range export.Formats() {
		path := filepath.Join(out, "model."+string(f))
		code, stdout, stderr := runCLI("export", string(r.Dir), "-o", path, "--format", string(f))
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", f, code, stderr)
		}
		want := fmt.Sprintf("wrote %s (%s, ", path, f)
		from := fmt.Sprintf(") from %s (step %d, validation top-1 ", r.Dir.Path(checkpoint.BestFile), r.BestStep)
		if stdout != "" || !strings.HasPrefix(stderr, want) || !strings.Contains(stderr, from) || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%s: stdout %q, stderr %q; want one line on stderr starting %q and holding %q", f, stdout, stderr, want, from)
		}
		if _, err := os.Stat(path); err != nil {
			t.Error(err)
		}
	}
	code, _, stderr := runCLI("export", "-q", string(r.Dir), "-o", filepath.Join(out, "quiet.onnx"), "--checkpoint", "last")
	if code != exitOK || stderr != "" {
		t.Errorf("-q: exit %d, stderr %q; want 0 and nothing", code, stderr)
	}
	got := slices.Sorted(slices.Values(dirEntries(t, out)))
	want := []string{"model.npz", "model.onnx", "model.onnx-inline", "model.safetensors", "quiet.onnx"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files written (-want +got):\n%s", diff)
	}

	// eval with the metadata alone, against the engine on the checkpoint.
	code, stdout, stderr := runCLI("eval", filepath.Join(out, "model.onnx"), "--data", "synthetic", "--batch", "250", "--json")
	if code != exitOK {
		t.Fatalf("eval: exit %d: %s", code, stderr)
	}
	var rep evalReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Preprocess.Source.Mean != sourceMetadata || rep.Preprocess.Source.Std != sourceMetadata ||
		!slices.Equal(rep.Preprocess.Mean, []float32{0.5}) || !slices.Equal(rep.Preprocess.Std, []float32{0.25}) {
		t.Errorf("eval used preprocessing %+v, want mean 0.5 and std 0.25 from the metadata", rep.Preprocess)
	}
	set, err := data.Open(data.SyntheticName, data.OpenOptions{Split: data.SplitTest,
		Synthetic: data.SyntheticOptions{Classes: exporttest.Classes, Shape: [3]int{1, exporttest.Size, exporttest.Size}}})
	if err != nil {
		t.Fatal(err)
	}
	loader, err := data.NewLoader(set, data.LoaderOptions{Batch: 250, Pre: r.Data.Pre})
	if err != nil {
		t.Fatal(err)
	}
	ev := finetune.Evaluator{Engine: exporttest.Reference(t, r, r.Dir.Path(checkpoint.BestFile), 250),
		Input: r.Input, Output: r.Output, Classes: exporttest.Classes, Scores: engine.Logits}
	metrics, _, err := ev.Run(loader)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Images != metrics.Samples || rep.Top1 != metrics.Top1Accuracy() {
		t.Errorf("eval of the export: top-1 %.2f%% of %d images; the engine on the checkpoint: %.2f%% of %d",
			rep.Top1, rep.Images, metrics.Top1Accuracy(), metrics.Samples)
	}
	t.Logf("eval of the exported model: top-1 %.2f%% on %d synthetic test images, as the engine on the checkpoint", rep.Top1, rep.Images)
}

// TestExportFallsBack checks the note when the run has no best
// checkpoint yet.
func TestExportFallsBack(t *testing.T) {
	r := exporttest.Make(t, t.TempDir(), exporttest.Options{Steps: 4})
	if err := os.Remove(r.Dir.Path(checkpoint.BestFile)); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "m.onnx")
	code, _, stderr := runCLI("export", string(r.Dir), "-o", out)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if want := "note: " + string(r.Dir) + " has no best.safetensors yet"; !strings.HasPrefix(stderr, want) ||
		!strings.Contains(stderr, "from "+r.Dir.Path(checkpoint.LastFile)+" (step 4,") {
		t.Errorf("stderr %q, want a note starting %q and the last checkpoint named", stderr, want)
	}
}

// TestExportBadInput checks that bad input gives a clear error, exit
// code 1 (2 for usage errors) and no output file.
func TestExportBadInput(t *testing.T) {
	r := exportRun(t)
	other := exporttest.Make(t, t.TempDir(), exporttest.Options{Steps: 2})
	tests := []struct {
		name  string
		setup func(t *testing.T, d checkpoint.Dir) []string // extra arguments
		code  int
		want  string // in the error; DIR stands for the run directory
	}{
		{"not a run directory", func(t *testing.T, d checkpoint.Dir) []string {
			os.Remove(d.Path(checkpoint.RunFile))
			return nil
		}, exitFailure, "dcconvert: DIR is not a run directory: no run.json"},
		{"missing checkpoint", func(t *testing.T, d checkpoint.Dir) []string {
			os.Remove(d.Path(checkpoint.LastFile))
			return []string{"--checkpoint", "last"}
		}, exitFailure, "dcconvert: DIR holds no checkpoint yet: no last.safetensors"},
		{"missing checkpoint file", func(t *testing.T, d checkpoint.Dir) []string {
			return []string{"--checkpoint", d.Path("step-7.safetensors")}
		}, exitFailure, "dcconvert: reading DIR/step-7.safetensors: no such file or directory"},
		{"corrupt checkpoint", func(t *testing.T, d checkpoint.Dir) []string {
			b, err := os.ReadFile(d.Path(checkpoint.BestFile))
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 1
			if err := os.WriteFile(d.Path(checkpoint.BestFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
			return nil
		}, exitFailure, "dcconvert: reading DIR/best.safetensors: checksum mismatch"},
		{"checkpoint of another model", func(t *testing.T, d checkpoint.Dir) []string {
			return []string{"--checkpoint", other.Dir.Path(checkpoint.LastFile)}
		}, exitFailure, "does not fit DIR/model.onnx: tensor \"/features/features.0/Conv.rho_v\" is missing"},
		{"unknown format", func(t *testing.T, d checkpoint.Dir) []string {
			return []string{"--format", "tflite"}
		}, exitUsage, `dcconvert: --format "tflite": want one of onnx, onnx-inline, safetensors, npz`},
		{"output over the run's model", func(t *testing.T, d checkpoint.Dir) []string {
			return []string{"-o", d.Path(checkpoint.ModelFile)}
		}, exitUsage, "would overwrite the run directory's model.onnx"},
		{"output directory missing", func(t *testing.T, d checkpoint.Dir) []string {
			return []string{"-o", filepath.Join(string(d), "out", "missing", "m.onnx")}
		}, exitFailure, "out/missing/m.onnx: no such file or directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := r.Copy(t)
			if err := os.Mkdir(filepath.Join(string(d), "out"), 0o755); err != nil {
				t.Fatal(err)
			}
			before := dirEntries(t, string(d))
			out := filepath.Join(string(d), "out", "m.onnx")
			args := append([]string{"export", string(d), "-o", out}, tc.setup(t, d)...)
			code, stdout, stderr := runCLI(args...)
			if code != tc.code || stdout != "" || !strings.Contains(stderr, strings.ReplaceAll(tc.want, "DIR", string(d))) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and an error containing %q",
					code, stdout, stderr, tc.code, strings.ReplaceAll(tc.want, "DIR", string(d)))
			}
			if got := dirEntries(t, filepath.Join(string(d), "out")); len(got) != 0 {
				t.Errorf("the output directory holds %v after the failure", got)
			}
			after := dirEntries(t, string(d))
			if len(after) > len(before) {
				t.Errorf("the run directory holds %v after the failure, %v before", after, before)
			}
		})
	}
}
