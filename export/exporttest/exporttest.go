// Package exporttest makes small fine-tuned run directories for the tests
// of package export and of the command line, and the inference engine
// that computes what an export of them must compute.
//
// A run directory here is what fine-tuning leaves behind, made without
// the command line: a vgg-mini for 1x16x16 images and 4 classes, plain
// or rewritten, trained with Adam for a few steps on the synthetic data,
// with the best checkpoint saved after the first validation and the last
// one after the last step.
package exporttest

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// The classification problem every run directory learns: the synthetic
// data set's classes, image size and split sizes.
const (
	Classes = 4
	Size    = 16 // images are 1 x Size x Size
	Train   = 512
	Test    = 128
)

// Options says what run directory Make makes.
type Options struct {
	// Opset is the default-domain opset of the model (0: 13).
	Opset int64
	// BN puts BatchNormalization after every convolution.
	BN bool
	// Decoupled, when not nil, rewrites every convolution with this
	// configuration (without calibration data, so a learnable radius
	// starts uncalibrated).
	Decoupled *dcnet.Config
	// Tie adds a convolution after the second one that shares its weight
	// (through an Identity node) and its bias, so that the engine trains
	// the second use as "<initializer>@<node>".
	Tie bool
	// Steps is the number of training steps (0: 40); the first
	// validation comes after half of them.
	Steps int
	// Mean and Std are the normalisation run.json records and training
	// uses (0 and 1 when empty).
	Mean, Std []float32
}

// Run is a run directory made by Make.
type Run struct {
	Dir checkpoint.Dir
	// Data is what it was trained and validated on.
	Data finetune.Data
	// Input and Output are the model's image input and class scores.
	Input, Output string
	// BestStep and LastStep are the steps of the two checkpoints.
	BestStep, LastStep int64
}

// TiedNode is the name of the convolution Options.Tie adds.
const TiedNode = "tied/Conv"

// Make trains a model as o says and writes its run directory to dir.
func Make(t testing.TB, dir string, o Options) *Run {
	t.Helper()
	cfg := models.Config{Input: [3]int64{1, Size, Size}, Classes: Classes, Opset: o.Opset, BN: o.BN}
	p, err := models.Build("vgg-mini", cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &onnximport.Model{Proto: p}
	if o.Tie {
		tie(t, p)
	}
	if o.Decoupled != nil {
		if _, err := rewrite.Run(m, rewrite.Options{Config: *o.Decoupled}, nil); err != nil {
			t.Fatal(err)
		}
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if m, err = onnximport.ReadBytes(b); err != nil {
		t.Fatal(err)
	}
	d := checkpoint.Dir(dir)
	if err := m.WriteFile(d.Path(checkpoint.ModelFile)); err != nil {
		t.Fatal(err)
	}

	fc := finetune.DefaultConfig()
	fc.Batch, fc.Optimizer, fc.LR, fc.Augment, fc.ProjectEvery = 32, finetune.Adam, 2e-3, data.AugmentNone, 5
	fc.Steps = o.Steps
	if fc.Steps == 0 {
		fc.Steps = 40
	}
	fc.EvalEvery = fc.Steps / 2
	tr, err := finetune.New(m, fc, Classes)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	r := &Run{Dir: d, Data: Data(t, o.Mean, o.Std), Input: tr.Input(), Output: tr.Output(), BestStep: -1}
	pre := data.Preprocessing{Input: []int{1, Size, Size}, Mean: o.Mean, Std: o.Std,
		Classes: r.Data.Train.Classes()}
	cj, err := json.Marshal(fc)
	if err != nil {
		t.Fatal(err)
	}
	run := checkpoint.Run{Source: "vgg-mini.onnx", Data: data.SyntheticName, DataFormat: string(data.FormatSynthetic),
		Preprocess: pre, Config: cj, Trained: tr.Trained(), Frozen: tr.Frozen()}
	if err := checkpoint.WriteRun(d.Path(checkpoint.RunFile), run); err != nil {
		t.Fatal(err)
	}
	err = tr.Run(context.Background(), r.Data, finetune.Hooks{Checkpoint: func(c finetune.CheckpointInfo) error {
		f, err := tr.Snapshot()
		if err != nil {
			return err
		}
		f.Metadata[checkpoint.MetaEpoch] = strconv.FormatFloat(c.Epoch, 'f', -1, 64)
		if c.Val != nil {
			f.Metadata[checkpoint.MetaValTop1] = strconv.FormatFloat(c.Val.Metrics.Top1Accuracy(), 'f', -1, 64)
		}
		if r.BestStep < 0 {
			if err := checkpoint.WriteFile(d.Path(checkpoint.BestFile), f); err != nil {
				return err
			}
			r.BestStep = c.Step
		}
		r.LastStep = c.Step
		return checkpoint.WriteFile(d.Path(checkpoint.LastFile), f)
	}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Data returns the synthetic train and test splits Make trains on.
func Data(t testing.TB, mean, std []float32) finetune.Data {
	t.Helper()
	opts := data.OpenOptions{Synthetic: data.SyntheticOptions{Classes: Classes, Train: Train, Test: Test, Shape: [3]int{1, Size, Size}}}
	tr, err := data.Open(data.SyntheticName, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Split = data.SplitTest
	te, err := data.Open(data.SyntheticName, opts)
	if err != nil {
		t.Fatal(err)
	}
	return finetune.Data{Train: tr, Val: te, Pre: data.Preprocess{C: 1, H: Size, W: Size, Mean: mean, Std: std}}
}

// tie adds the convolution of Options.Tie to p.
func tie(t testing.TB, p *onnxpb.ModelProto) {
	t.Helper()
	g := p.GetGraph()
	convs := 0
	for i, n := range g.GetNode() {
		if n.GetOpType() != onnximport.OpConv {
			continue
		}
		if convs++; convs < 2 {
			continue
		}
		j := i + 1 // the Relu after the convolution (and its BatchNormalization)
		for j < len(g.GetNode()) && g.GetNode()[j].GetOpType() != onnximport.OpRelu {
			j++
		}
		if j == len(g.GetNode()) {
			t.Fatalf("no Relu after %q", n.GetName())
		}
		in, out := g.GetNode()[j].GetOutput()[0], "tied/output"
		for _, later := range g.GetNode()[j+1:] {
			for k, x := range later.GetInput() {
				if x == in {
					later.Input[k] = out
				}
			}
		}
		id := &onnxpb.NodeProto{Name: proto.String("tied/Identity"), OpType: proto.String(onnximport.OpIdentity),
			Input: []string{n.GetInput()[1]}, Output: []string{"tied/weight"}}
		conv := proto.Clone(n).(*onnxpb.NodeProto)
		conv.Name, conv.Input, conv.Output = proto.String(TiedNode), []string{in, "tied/weight", n.GetInput()[2]}, []string{out}
		g.Node = slices.Insert(g.Node, j+1, id, conv)
		return
	}
	t.Fatal("vgg-mini has fewer than two convolutions")
}

// Engine returns an inference engine for batch samples of the model
// file at path, closed when the test ends.
func Engine(t testing.TB, path string, batch int) *engine.Engine {
	t.Helper()
	m, err := onnximport.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Build(m, engine.Options{Mode: engine.Inference, Batch: batch})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// Reference returns an inference engine for batch samples of the run's
// model with the parameters and running statistics of the checkpoint at
// path set through the engine's own interface: what the model an export
// writes must compute.
func Reference(t testing.TB, r *Run, path string, batch int) *engine.Engine {
	t.Helper()
	f, err := checkpoint.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e := Engine(t, r.Dir.Path(checkpoint.ModelFile), batch)
	for _, name := range e.Params() {
		v := f.Tensors[name]
		if err := e.SetParam(name, engine.Tensor{Shape: v.Shape, Data: v.F32}); err != nil {
			t.Fatal(err)
		}
	}
	stats := map[string]engine.Stat{}
	for name := range e.Stats() {
		if v, ok := f.Tensors[name]; ok && v.F64 != nil {
			stats[name] = engine.Stat{Shape: v.Shape, Data: v.F64}
		}
	}
	if err := e.SetStats(stats); err != nil {
		t.Fatal(err)
	}
	return e
}

// Images returns the first n images of a set, preprocessed, as one
// [n, 1, Size, Size] batch, with their labels.
func Images(t testing.TB, set data.Set, pre data.Preprocess, n int) ([]float32, []int) {
	t.Helper()
	l, err := data.NewLoader(set, data.LoaderOptions{Batch: n, Pre: pre})
	if err != nil {
		t.Fatal(err)
	}
	for b, err := range l.Epoch(0) {
		if err != nil {
			t.Fatal(err)
		}
		return b.X, b.Labels
	}
	t.Fatal("no batch")
	return nil, nil
}

// Copy copies the model, run.json and checkpoints of the run directory
// into a new temporary directory, for a test to change.
func (r *Run) Copy(t testing.TB) checkpoint.Dir {
	t.Helper()
	dir := checkpoint.Dir(t.TempDir())
	for _, name := range []string{checkpoint.ModelFile, checkpoint.RunFile, checkpoint.BestFile, checkpoint.LastFile} {
		b, err := os.ReadFile(r.Dir.Path(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dir.Path(name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
