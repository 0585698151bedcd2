package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/internal/peer"
	"github.com/dcconvert/dcconvert/models"
)

// TestEvalFlags checks how command lines become evalOptions.
func TestEvalFlags(t *testing.T) {
	def := evalOptions{Model: "m.onnx", Data: "synthetic", Split: data.SplitTest, Batch: 64}
	with := func(change func(*evalOptions)) evalOptions {
		o := def
		change(&o)
		return o
	}
	tests := []struct {
		name    string
		args    []string
		want    evalOptions
		wantErr string // a usage error containing this, when not empty
	}{
		{name: "defaults", args: []string{"m.onnx", "--data", "synthetic"}, want: def},
		{name: "every flag", args: []string{"m.onnx", "--data", "/d", "--data-format", "cifar10", "--split", "all",
			"--batch", "7", "--mean", "0.5,0.25,0", "--std", "2", "--json"},
			want: with(func(o *evalOptions) {
				o.Data, o.Format, o.Split, o.Batch, o.JSON = "/d", data.FormatCIFAR10, data.SplitAll, 7, true
				o.Mean, o.Std = []float32{0.5, 0.25, 0}, []float32{2}
			})},
		{name: "format auto", args: []string{"m.onnx", "--data", "synthetic", "--data-format", "auto"}, want: def},
		{name: "train split", args: []string{"m.onnx", "--data", "synthetic", "--split", "train"},
			want: with(func(o *evalOptions) { o.Split = data.SplitTrain })},
		{name: "quiet", args: []string{"-q", "m.onnx", "--data", "synthetic"}, want: def},
		{name: "missing data", args: []string{"m.onnx"}, wantErr: "eval: missing required flag --data"},
		{name: "empty data", args: []string{"m.onnx", "--data", ""}, wantErr: "eval: missing required flag --data"},
		{name: "missing model", args: []string{"--data", "synthetic"}, wantErr: "eval: missing argument MODEL"},
		{name: "two models", args: []string{"a.onnx", "b.onnx", "--data", "synthetic"}, wantErr: `unexpected argument "b.onnx"`},
		{name: "unknown format", args: []string{"m.onnx", "--data", "d", "--data-format", "mnist"},
			wantErr: `--data-format "mnist": want auto or one of idx, cifar10, cifar100, imagefolder, synthetic`},
		{name: "unknown split", args: []string{"m.onnx", "--data", "d", "--split", "val"}, wantErr: `--split "val": want train, test or all`},
		{name: "zero batch", args: []string{"m.onnx", "--data", "d", "--batch", "0"}, wantErr: "--batch 0: must be at least 1"},
		{name: "batch not a number", args: []string{"m.onnx", "--data", "d", "--batch", "many"}, wantErr: `invalid value "many" for --batch`},
		{name: "two means", args: []string{"m.onnx", "--data", "d", "--mean", "0.5,0.5"}, wantErr: "want one number, or three"},
		{name: "mean not a number", args: []string{"m.onnx", "--data", "d", "--mean", "half"}, wantErr: `"half" is not a finite number`},
		{name: "NaN std", args: []string{"m.onnx", "--data", "d", "--std", "NaN"}, wantErr: `"NaN" is not a finite number`},
		{name: "zero std", args: []string{"m.onnx", "--data", "d", "--std", "1,0,1"}, wantErr: "--std: value 2 is 0"},
		{name: "problems together", args: []string{"m.onnx", "--data", "d", "--split", "x", "--batch", "-1"},
			wantErr: "--split \"x\": want train, test or all\n--batch -1: must be at least 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got *evalOptions
			_, err := parseArgs(append([]string{"eval"}, tc.args...), func(root *rootOptions) *cobra.Command {
				return newEvalCmd(root, func(o *evalOptions) error { got = o; return nil })
			})
			if checkParse(t, err, tc.wantErr) {
				return
			}
			if got.Progress {
				t.Error("Progress is set although standard error is not a terminal")
			}
			got.rootOptions = nil
			if diff := cmp.Diff(tc.want, *got, cmp.AllowUnexported(evalOptions{})); diff != "" {
				t.Errorf("options differ (-want +got):\n%s", diff)
			}
		})
	}
}

// writeEvalModel builds a model of the models package, lets edit change
// it (when not nil) and writes it to dir/file.
func writeEvalModel(t *testing.T, dir, file, name string, cfg models.Config, edit func(*onnxpb.ModelProto)) string {
	t.Helper()
	p := buildModel(t, name, cfg)
	if edit != nil {
		edit(p)
	}
	return writeModel(t, dir, file, p)
}

// withPreprocessing returns an edit that records pp in a model's metadata.
func withPreprocessing(t *testing.T, pp data.Preprocessing) func(*onnxpb.ModelProto) {
	return func(p *onnxpb.ModelProto) {
		if err := data.WritePreprocessing(p, pp); err != nil {
			t.Fatal(err)
		}
	}
}

// writeImageFolder writes an image folder of RGB PNG files under dir,
// n images of 12x10 pixels for each class, in train/ and test/.
func writeImageFolder(t *testing.T, dir string, classes []string, n int) {
	t.Helper()
	for _, split := range []string{"train", "test"} {
		for k, class := range classes {
			d := filepath.Join(dir, split, class)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			for i := range n {
				img := image.NewRGBA(image.Rect(0, 0, 10, 12))
				for y := range 12 {
					for x := range 10 {
						img.Set(x, y, color.RGBA{uint8(25 * k), uint8(10 * (x + i)), uint8(20 * y), 255})
					}
				}
				var buf bytes.Buffer
				if err := png.Encode(&buf, img); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(d, string(rune('a'+i))+".png"), buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// evalJSON runs runEval with JSON output and returns the report, the
// report as a generic map, and standard error.
func evalJSON(t *testing.T, opts evalOptions) (evalReport, map[string]any, string, error) {
	t.Helper()
	streams, out, errOut := testIO()
	if opts.rootOptions == nil {
		opts.rootOptions = &rootOptions{}
	}
	opts.IO = streams
	opts.JSON = true
	if err := runEval(&opts); err != nil {
		if out.Len() > 0 {
			t.Errorf("a failed evaluation wrote to standard output: %q", out.String())
		}
		return evalReport{}, nil, errOut.String(), err
	}
	var r evalReport
	dec := json.NewDecoder(bytes.NewReader(out.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decoding the report: %v\n%s", err, out)
	}
	var generic map[string]any
	if err := json.Unmarshal(out.Bytes(), &generic); err != nil {
		t.Fatal(err)
	}
	return r, generic, errOut.String(), nil
}

// checkMetricRanges fails the test unless the metrics of r are possible.
func checkMetricRanges(t *testing.T, r evalReport) {
	t.Helper()
	if r.Top1 < 0 || r.Top1 > 100 || r.Top5 < r.Top1 || r.Top5 > 100 {
		t.Errorf("top-1 %v, top-5 %v: want 0 <= top-1 <= top-5 <= 100", r.Top1, r.Top5)
	}
	if !(r.MeanCrossEntropy > 0) || math.IsInf(r.MeanCrossEntropy, 0) {
		t.Errorf("mean cross-entropy %v: want a positive finite number", r.MeanCrossEntropy)
	}
	if !(r.Seconds > 0 && r.ImagesPerSecond > 0 && r.InferenceSeconds > 0 && r.InferenceImagesPerSecond > 0) ||
		r.InferenceSeconds > r.Seconds {
		t.Errorf("timings %v s (%v images/s), inference %v s (%v images/s): want positive ones, inference within the whole",
			r.Seconds, r.ImagesPerSecond, r.InferenceSeconds, r.InferenceImagesPerSecond)
	}
}

// TestRunEval calls runEval with hand-built options on vgg-mini with
// random weights.
func TestRunEval(t *testing.T) {
	dir := t.TempDir()
	mini := writeEvalModel(t, dir, "mini.onnx", "vgg-mini", models.Config{}, nil)
	small := writeEvalModel(t, dir, "small.onnx", "vgg-mini", models.Config{Input: [3]int64{1, 8, 8}, Classes: 4}, nil)
	meta := writeEvalModel(t, dir, "meta.onnx", "vgg-mini", models.Config{Input: [3]int64{3, 8, 8}, Classes: 3},
		withPreprocessing(t, data.Preprocessing{Input: []int{3, 8, 8}, Mean: []float32{0.5, 0.4, 0.3}, Std: []float32{0.2},
			Classes: []string{"red", "green", "blue"}}))
	// The graph leaves H and W open; the metadata gives them.
	symbolic := writeEvalModel(t, dir, "symbolic.onnx", "vgg-mini", models.Config{Input: [3]int64{1, 12, 12}, Classes: 2},
		func(p *onnxpb.ModelProto) {
			dims := p.GetGraph().GetInput()[0].GetType().GetTensorType().GetShape().GetDim()
			for _, d := range dims[2:] {
				d.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "side"}
			}
			if err := data.WritePreprocessing(p, data.Preprocessing{Input: []int{1, 12, 12}}); err != nil {
				t.Fatal(err)
			}
		})
	folder := filepath.Join(dir, "folder")
	writeImageFolder(t, folder, []string{"blue", "green", "red"}, 5)

	type source = struct{ Input, Mean, Std string }
	tests := []struct {
		name    string
		opts    evalOptions
		images  int
		classes int
		batch   int
		input   [3]int
		mean    []float32
		std     []float32
		source  source
		format  data.Format
		stderr  string // what standard error must contain; empty when nothing
	}{
		{name: "vgg-mini on synthetic", opts: evalOptions{Model: mini, Data: "synthetic", Split: data.SplitTest, Batch: 64},
			images: 1000, classes: 10, batch: 64, input: [3]int{1, 28, 28}, mean: []float32{0}, std: []float32{1},
			source: source{"graph", "default", "default"}, format: data.FormatSynthetic},
		{name: "one batch for all", opts: evalOptions{Model: mini, Data: "synthetic", Split: data.SplitTest, Batch: 5000},
			images: 1000, classes: 10, batch: 1000, input: [3]int{1, 28, 28}, mean: []float32{0}, std: []float32{1},
			source: source{"graph", "default", "default"}, format: data.FormatSynthetic},
		{name: "both splits", opts: evalOptions{Model: small, Data: "synthetic", Format: data.FormatSynthetic, Split: data.SplitAll, Batch: 256},
			images: 7000, classes: 4, batch: 256, input: [3]int{1, 8, 8}, mean: []float32{0}, std: []float32{1},
			source: source{"graph", "default", "default"}, format: data.FormatSynthetic},
		{name: "flags", opts: evalOptions{Model: small, Data: "synthetic", Split: data.SplitTrain, Batch: 1000,
			Mean: []float32{0.5}, Std: []float32{0.25}},
			images: 6000, classes: 4, batch: 1000, input: [3]int{1, 8, 8}, mean: []float32{0.5}, std: []float32{0.25},
			source: source{"graph", "flag", "flag"}, format: data.FormatSynthetic},
		{name: "metadata, RGB image folder", opts: evalOptions{Model: meta, Data: folder, Split: data.SplitTest, Batch: 4},
			images: 15, classes: 3, batch: 4, input: [3]int{3, 8, 8}, mean: []float32{0.5, 0.4, 0.3}, std: []float32{0.2},
			source: source{"graph", "metadata", "metadata"}, format: data.FormatImageFolder,
			stderr: `warning: class 0 is "red" in the model's metadata but "blue" in ` + folder},
		{name: "a flag wins over the metadata", opts: evalOptions{Model: meta, Data: folder, Split: data.SplitTrain, Batch: 64,
			Std: []float32{0.5, 0.5, 0.5}},
			images: 15, classes: 3, batch: 15, input: [3]int{3, 8, 8}, mean: []float32{0.5, 0.4, 0.3}, std: []float32{0.5, 0.5, 0.5},
			source: source{"graph", "metadata", "flag"}, format: data.FormatImageFolder,
			stderr: `warning: class 0 is "red"`},
		{name: "input shape from the metadata", opts: evalOptions{Model: symbolic, Data: "synthetic", Split: data.SplitTest, Batch: 64},
			images: 1000, classes: 2, batch: 64, input: [3]int{1, 12, 12}, mean: []float32{0}, std: []float32{1},
			source: source{"metadata", "default", "default"}, format: data.FormatSynthetic},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, generic, stderr, err := evalJSON(t, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if r.Images != tc.images || r.Classes != tc.classes || r.Batch != tc.batch || r.Format != tc.format ||
				r.Split != tc.opts.Split || r.Model != tc.opts.Model || r.Data != tc.opts.Data || r.Scores != "logits" {
				t.Errorf("report %+v; want %d images, %d classes, batch %d, format %s, split %s, logits",
					r, tc.images, tc.classes, tc.batch, tc.format, tc.opts.Split)
			}
			p := r.Preprocess
			if p.Input != tc.input || !slices.Equal(p.Mean, tc.mean) || !slices.Equal(p.Std, tc.std) || source(p.Source) != tc.source {
				t.Errorf("preprocessing %+v; want input %v, mean %v, std %v, sources %+v", p, tc.input, tc.mean, tc.std, tc.source)
			}
			checkMetricRanges(t, r)
			var keys []string
			for k := range generic {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			want := []string{"batch", "classes", "data", "format", "images", "images_per_second", "inference_images_per_second",
				"inference_seconds", "mean_cross_entropy", "model", "preprocess", "scores", "seconds", "split", "top1", "top5"}
			if diff := cmp.Diff(want, keys); diff != "" {
				t.Errorf("JSON keys (-want +got):\n%s", diff)
			}
			if tc.stderr == "" && stderr != "" {
				t.Errorf("standard error = %q, want nothing", stderr)
			}
			if tc.stderr != "" && !strings.Contains(stderr, tc.stderr) {
				t.Errorf("standard error = %q, want it to contain %q", stderr, tc.stderr)
			}
		})
	}
}

// TestEvalPadding checks that the padded rows of a last partial batch do
// not count: the metrics do not depend on the batch size.
func TestEvalPadding(t *testing.T) {
	dir := t.TempDir()
	mini := writeEvalModel(t, dir, "mini.onnx", "vgg-mini", models.Config{}, nil)
	var first evalReport
	for i, batch := range []int{1000, 64, 300, 999} { // 1000 images: 0, 40, 100 and 1 padded rows
		r, _, _, err := evalJSON(t, evalOptions{Model: mini, Data: "synthetic", Split: data.SplitTest, Batch: batch})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = r
			continue
		}
		const tol = 1e-6 // float32 sums in a different order
		if r.Images != first.Images || r.Top1 != first.Top1 || r.Top5 != first.Top5 ||
			math.Abs(r.MeanCrossEntropy-first.MeanCrossEntropy) > tol {
			t.Errorf("batch %d: %d images, top-1 %v, top-5 %v, cross-entropy %v; batch %d gave %d, %v, %v, %v (within %g)",
				batch, r.Images, r.Top1, r.Top5, r.MeanCrossEntropy, first.Batch, first.Images, first.Top1, first.Top5, first.MeanCrossEntropy, tol)
		}
	}
	t.Logf("vgg-mini (random weights) on synthetic test: top-1 %.2f%%, top-5 %.2f%%, cross-entropy %.6f", first.Top1, first.Top5, first.MeanCrossEntropy)
}

// TestEvalSoftmaxOutput checks that a model ending in Softmax has its
// output taken as probabilities: it scores as the same model without it.
func TestEvalSoftmaxOutput(t *testing.T) {
	dir := t.TempDir()
	cfg := models.Config{Input: [3]int64{1, 8, 8}, Classes: 4}
	plain := writeEvalModel(t, dir, "plain.onnx", "vgg-mini", cfg, nil)
	soft := writeEvalModel(t, dir, "soft.onnx", "vgg-mini", cfg, func(p *onnxpb.ModelProto) {
		g := p.GetGraph()
		out := g.GetOutput()[0].GetName()
		for _, n := range g.GetNode() {
			for i, o := range n.GetOutput() {
				if o == out {
					n.Output[i] = "logits"
				}
			}
		}
		g.Node = append(g.Node, &onnxpb.NodeProto{Name: proto.String("softmax"), OpType: proto.String("Softmax"),
			Input: []string{"logits"}, Output: []string{out}})
	})
	var reports []evalReport
	for _, model := range []string{plain, soft} {
		r, _, _, err := evalJSON(t, evalOptions{Model: model, Data: "synthetic", Split: data.SplitTest, Batch: 128})
		if err != nil {
			t.Fatal(err)
		}
		reports = append(reports, r)
	}
	p, s := reports[0], reports[1]
	if p.Scores != "logits" || s.Scores != "probabilities" {
		t.Errorf("scores %q and %q, want logits and probabilities", p.Scores, s.Scores)
	}
	const tol = 1e-5 // float32 probabilities
	if p.Top1 != s.Top1 || p.Top5 != s.Top5 || math.Abs(p.MeanCrossEntropy-s.MeanCrossEntropy) > tol {
		t.Errorf("with Softmax: top-1 %v, top-5 %v, cross-entropy %v; without: %v, %v, %v (within %g)",
			s.Top1, s.Top5, s.MeanCrossEntropy, p.Top1, p.Top5, p.MeanCrossEntropy, tol)
	}
}

// TestEvalText checks the report for people and the progress bar.
func TestEvalText(t *testing.T) {
	dir := t.TempDir()
	small := writeEvalModel(t, dir, "small.onnx", "vgg-mini", models.Config{Input: [3]int64{1, 8, 8}, Classes: 4}, nil)
	for _, progress := range []bool{false, true} {
		streams, out, errOut := testIO()
		opts := &evalOptions{rootOptions: &rootOptions{IO: streams}, Model: small, Data: "synthetic",
			Split: data.SplitTest, Batch: 100, Progress: progress}
		if err := runEval(opts); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"model          " + small + " (logits)\n",
			"data           synthetic (synthetic, test split, 4 classes)\n",
			"preprocess     1x8x8 (graph), mean 0 (default), std 1 (default)\n",
			"images         1000\n",
			"top-1          ", "top-5          ", "cross-entropy  ", "images/s (inference alone ",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("progress %v: the report lacks %q:\n%s", progress, want, out)
			}
		}
		if got := errOut.String(); progress != strings.Contains(got, "eval") {
			t.Errorf("progress %v: standard error = %q", progress, got)
		}
	}
}

// TestEvalBadInput checks the errors of bad models, data and flags, and
// that they come before any output.
func TestEvalBadInput(t *testing.T) {
	dir := t.TempDir()
	mini := writeEvalModel(t, dir, "mini.onnx", "vgg-mini", models.Config{}, nil)
	corrupt := filepath.Join(dir, "corrupt.onnx")
	if err := os.WriteFile(corrupt, []byte("not a model at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	fourChannels := writeEvalModel(t, dir, "four.onnx", "vgg-mini", models.Config{Input: [3]int64{4, 28, 28}}, nil)
	badMeta := writeEvalModel(t, dir, "badmeta.onnx", "vgg-mini", models.Config{}, func(p *onnxpb.ModelProto) {
		p.MetadataProps = append(p.MetadataProps, &onnxpb.StringStringEntryProto{
			Key: proto.String(data.MetaPreprocess), Value: proto.String(`{"mean":"0.5"}`)})
	})
	otherShape := writeEvalModel(t, dir, "othershape.onnx", "vgg-mini", models.Config{},
		withPreprocessing(t, data.Preprocessing{Input: []int{3, 32, 32}}))
	metaMeans := writeEvalModel(t, dir, "metameans.onnx", "vgg-mini", models.Config{},
		withPreprocessing(t, data.Preprocessing{Mean: []float32{0.1, 0.2, 0.3}}))
	metaClasses := writeEvalModel(t, dir, "metaclasses.onnx", "vgg-mini", models.Config{},
		withPreprocessing(t, data.Preprocessing{Classes: []string{"a", "b"}}))
	twoInputs := writeEvalModel(t, dir, "twoinputs.onnx", "vgg-mini", models.Config{}, func(p *onnxpb.ModelProto) {
		g := p.GetGraph()
		extra := proto.Clone(g.GetInput()[0]).(*onnxpb.ValueInfoProto)
		extra.Name = proto.String("extra")
		g.Input = append(g.Input, extra)
	})
	openHW := writeEvalModel(t, dir, "openhw.onnx", "vgg-mini", models.Config{}, func(p *onnxpb.ModelProto) {
		dims := p.GetGraph().GetInput()[0].GetType().GetTensorType().GetShape().GetDim()
		dims[3].Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "width"}
	})
	unsupported := writeEvalModel(t, dir, "unsupported.onnx", "vgg-mini", models.Config{}, func(p *onnxpb.ModelProto) {
		for _, n := range p.GetGraph().GetNode() {
			if n.GetOpType() == "Relu" {
				n.OpType = proto.String("Celu")
				break
			}
		}
	})
	empty := t.TempDir()
	folder := filepath.Join(dir, "folder")
	writeImageFolder(t, folder, []string{"x", "y"}, 2)
	noTest := filepath.Join(dir, "notest")
	writeImageFolder(t, noTest, []string{"x", "y"}, 2)
	if err := os.RemoveAll(filepath.Join(noTest, "test")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(noTest, "train", "x"), filepath.Join(noTest, "x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(noTest, "train", "y"), filepath.Join(noTest, "y")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(noTest, "train")); err != nil {
		t.Fatal(err)
	}

	syn := func(model string) evalOptions {
		return evalOptions{Model: model, Data: "synthetic", Split: data.SplitTest, Batch: 64}
	}
	tests := []struct {
		name    string
		opts    evalOptions
		wantErr string
		usage   bool
	}{
		{name: "missing model", opts: syn(filepath.Join(dir, "missing.onnx")),
			wantErr: "reading " + filepath.Join(dir, "missing.onnx") + ": no such file or directory"},
		{name: "corrupt model", opts: syn(corrupt), wantErr: "reading " + corrupt + ": "},
		{name: "missing data", opts: evalOptions{Model: mini, Data: filepath.Join(dir, "nothing"), Split: data.SplitTest, Batch: 8},
			wantErr: "detecting the format of " + filepath.Join(dir, "nothing")},
		{name: "data of no known format", opts: evalOptions{Model: mini, Data: empty, Split: data.SplitTest, Batch: 8},
			wantErr: "detecting the format of " + empty + ": found none of"},
		{name: "data not of the given format", opts: evalOptions{Model: mini, Data: folder, Format: data.FormatIDX, Split: data.SplitTest, Batch: 8},
			wantErr: folder},
		{name: "no test split", opts: evalOptions{Model: mini, Data: noTest, Split: data.SplitTest, Batch: 8},
			wantErr: "opening " + noTest + ": no test split"},
		{name: "class mismatch", opts: evalOptions{Model: mini, Data: folder, Split: data.SplitTest, Batch: 8},
			wantErr: mini + ` has 10 classes (output "output"), but ` + folder + " (imagefolder) has 2"},
		{name: "four channels", opts: syn(fourChannels), wantErr: fourChannels + `: graph input "input" takes 4 channels; eval makes images of 1 or 3 channels`},
		{name: "bad metadata", opts: syn(badMeta), wantErr: badMeta + ": metadata dcconvert.preprocess: json: cannot unmarshal string"},
		{name: "metadata shape disagrees", opts: syn(otherShape),
			wantErr: otherShape + `: metadata dcconvert.preprocess gives input [3 32 32], but graph input "input" has shape [batch_size,1,28,28]`},
		{name: "metadata means for three channels", opts: syn(metaMeans),
			wantErr: metaMeans + ": metadata dcconvert.preprocess: 3 mean values for a model input of 1 channel"},
		{name: "metadata names two classes", opts: syn(metaClasses),
			wantErr: metaClasses + `: metadata dcconvert.preprocess names 2 classes, but the output "output" has 10`},
		{name: "two inputs", opts: syn(twoInputs), wantErr: twoInputs + ": the graph has 2 inputs (input, extra)"},
		{name: "open width", opts: syn(openHW), wantErr: openHW + `: graph input "input" has shape [batch_size,1,28,width] with W unknown`},
		{name: "unsupported operator", opts: syn(unsupported), wantErr: unsupported + `: node "/features/features.1/Relu" (Celu): operator is not supported`},
		{name: "means for three channels", opts: evalOptions{Model: mini, Data: "synthetic", Split: data.SplitTest, Batch: 8,
			Mean: []float32{1, 2, 3}, Std: []float32{1, 2, 3}},
			wantErr: "--mean: 3 values for a model input of 1 channel; give 1\n--std: 3 values", usage: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := evalJSON(t, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if isUsageError(err) != tc.usage {
				t.Errorf("usage error = %v, want %v", isUsageError(err), tc.usage)
			}
		})
	}
}

// TestEvalExitCodes runs eval command lines through main's error handling.
func TestEvalExitCodes(t *testing.T) {
	dir := t.TempDir()
	small := writeEvalModel(t, dir, "small.onnx", "vgg-mini", models.Config{Input: [3]int64{1, 8, 8}, Classes: 4}, nil)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // what standard error must start with
	}{
		{name: "ok", args: []string{"eval", small, "--data", "synthetic", "--batch", "500"}, code: exitOK},
		{name: "ok json", args: []string{"eval", small, "--data", "synthetic", "--json", "-q"}, code: exitOK},
		{name: "usage", args: []string{"eval", small}, code: exitUsage, stderr: "dcconvert: eval: missing required flag --data\nRun 'dcconvert eval --help' for usage.\n"},
		{name: "usage from the model", args: []string{"eval", small, "--data", "synthetic", "--mean", "1,2,3"}, code: exitUsage,
			stderr: "dcconvert: --mean: 3 values for a model input of 1 channel; give 1\n"},
		{name: "failure", args: []string{"eval", filepath.Join(dir, "none.onnx"), "--data", "synthetic"}, code: exitFailure,
			stderr: "dcconvert: reading " + filepath.Join(dir, "none.onnx") + ": no such file or directory\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(tc.args...)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if !strings.HasPrefix(stderr, tc.stderr) || (tc.stderr == "" && stderr != "") {
				t.Errorf("standard error = %q, want it to start with %q", stderr, tc.stderr)
			}
			if code != exitOK && stdout != "" {
				t.Errorf("standard output = %q, want nothing on failure", stdout)
			}
			if code == exitOK && stdout == "" {
				t.Error("no report on standard output")
			}
		})
	}
}

// fmnistExpected is what scripts/make_fmnist_fixture.py recorded of the
// fixture model in PyTorch.
type fmnistExpected struct {
	Top1             float64 `json:"top1"`
	Top5             float64 `json:"top5"`
	MeanCrossEntropy float64 `json:"mean_cross_entropy"`
	Images           int     `json:"images"`
	Torch            string  `json:"torch"`
	ONNX             string  `json:"onnx"`
}

// fashionDir is where Debian's dataset-fashion-mnist puts the data.
const fashionDir = "/usr/share/datasets/fashion-mnist"

// TestEvalFashionMNISTTruth evaluates the fixture model trained by PyTorch
// on the Fashion-MNIST test split and compares with PyTorch's own numbers.
func TestEvalFashionMNISTTruth(t *testing.T) {
	if _, err := os.Stat(filepath.Join(fashionDir, "t10k-images-idx3-ubyte.gz")); err != nil {
		msg := "Fashion-MNIST not found (apt-get install -y dataset-fashion-mnist): " + err.Error()
		if peer.Require() {
			t.Fatalf("%s (DCCONVERT_REQUIRE_PEERS=1: missing peers fail the test)", msg)
		}
		t.Skipf("%s (skipped; set DCCONVERT_REQUIRE_PEERS=1 to fail instead)", msg)
	}
	fixture := filepath.Join("..", "..", "testdata", "fmnist")
	raw, err := os.ReadFile(filepath.Join(fixture, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want fmnistExpected
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatalf("reading expected.json: %v", err)
	}
	r, _, stderr, err := evalJSON(t, evalOptions{Model: filepath.Join(fixture, "model.onnx"), Data: fashionDir,
		Split: data.SplitTest, Batch: 64})
	if err != nil {
		t.Fatal(err)
	}
	if stderr != "" {
		t.Errorf("standard error = %q, want nothing (the metadata's class names are Fashion-MNIST's)", stderr)
	}
	const top1Tol, ceTol = 0.05, 1e-4 // percentage points; nats
	t.Logf("fixture (PyTorch %s, onnx %s): top-1 %.2f%%, top-5 %.2f%%, cross-entropy %.8f on %d images",
		want.Torch, want.ONNX, want.Top1, want.Top5, want.MeanCrossEntropy, want.Images)
	t.Logf("dcconvert eval:             top-1 %.2f%%, top-5 %.2f%%, cross-entropy %.8f on %d images (%.0f images/s)",
		r.Top1, r.Top5, r.MeanCrossEntropy, r.Images, r.ImagesPerSecond)
	if r.Images != want.Images {
		t.Errorf("%d images, want %d", r.Images, want.Images)
	}
	if math.Abs(r.Top1-want.Top1) > top1Tol {
		t.Errorf("top-1 %.4f%%, PyTorch %.4f%% (tolerance %g points)", r.Top1, want.Top1, top1Tol)
	}
	if math.Abs(r.Top5-want.Top5) > top1Tol {
		t.Errorf("top-5 %.4f%%, PyTorch %.4f%% (tolerance %g points)", r.Top5, want.Top5, top1Tol)
	}
	if math.Abs(r.MeanCrossEntropy-want.MeanCrossEntropy) > ceTol {
		t.Errorf("mean cross-entropy %.8f, PyTorch %.8f (tolerance %g)", r.MeanCrossEntropy, want.MeanCrossEntropy, ceTol)
	}
	if got := r.Preprocess.Source; got.Mean != sourceMetadata || got.Std != sourceMetadata {
		t.Errorf("mean and std from %s and %s, want both from the metadata", got.Mean, got.Std)
	}
}
