package finetune

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/internal/onnxpb"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// miniModel returns a vgg-mini of the given input size and classes.
func miniModel(t testing.TB, hw int64, classes int) *onnximport.Model {
	t.Helper()
	p, err := models.Build("vgg-mini", models.Config{Input: [3]int64{1, hw, hw}, Classes: classes})
	if err != nil {
		t.Fatal(err)
	}
	return &onnximport.Model{Proto: p}
}

// decoupledMini returns miniModel rewritten with cfg.
func decoupledMini(t testing.TB, hw int64, classes int, cfg dcnet.Config) *onnximport.Model {
	t.Helper()
	m := miniModel(t, hw, classes)
	if _, err := rewrite.Run(m, rewrite.Options{Config: cfg}, nil); err != nil {
		t.Fatal(err)
	}
	return m
}

// synthetic returns the synthetic data set's train and test splits.
func synthetic(t testing.TB, hw, classes, train, test int) Data {
	t.Helper()
	opts := data.OpenOptions{Synthetic: data.SyntheticOptions{Classes: classes, Train: train, Test: test, Shape: [3]int{1, hw, hw}}}
	tr, err := data.Open(data.SyntheticName, opts)
	if err != nil {
		t.Fatal(err)
	}
	opts.Split = data.SplitTest
	te, err := data.Open(data.SyntheticName, opts)
	if err != nil {
		t.Fatal(err)
	}
	return Data{Train: tr, Val: te, Pre: data.Preprocess{C: 1, H: hw, W: hw}}
}

// TestRunLearns trains a vgg-mini, plain and decoupled, on the synthetic
// data for one epoch and checks that validation accuracy goes from chance
// to well above it, and that the hooks see every step and validation.
func TestRunLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two models for an epoch; run without -short")
	}
	ball := dcnet.DefaultConfig()
	ball.Magnitude, ball.LearnRho = dcnet.MagBall, true
	for _, c := range []struct {
		name string
		m    *onnximport.Model
		min  float64
	}{
		{"plain", miniModel(t, 16, 4), 0.8},
		{"ball", decoupledMini(t, 16, 4, ball), 0.4}, // from scratch: the hard case the pretraining strategy avoids
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Batch, cfg.LR, cfg.Optimizer, cfg.Augment, cfg.ProjectEvery, cfg.EvalEvery = 32, 0.002, Adam, data.AugmentNone, 10, 20
			tr, err := New(c.m, cfg, 4)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			d := synthetic(t, 16, 4, 1280, 256)
			var steps []int64
			var evals []EvalInfo
			var cps []CheckpointInfo
			var epochs []int
			err = tr.Run(context.Background(), d, Hooks{
				Epoch:      func(e int) error { epochs = append(epochs, e); return nil },
				Step:       func(s StepInfo) error { steps = append(steps, s.Step); return nil },
				Eval:       func(e EvalInfo) error { evals = append(evals, e); return nil },
				Checkpoint: func(c CheckpointInfo) error { cps = append(cps, c); return nil },
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := []int64{1, 2, 3}; len(steps) != 40 || !slices.Equal(steps[:3], want) || steps[39] != 40 {
				t.Errorf("step hook saw %d steps %v...", len(steps), steps[:min(3, len(steps))])
			}
			if len(evals) != 2 || evals[0].Step != 20 || evals[1].Step != 40 {
				t.Fatalf("validations %+v, want after steps 20 and 40", evals)
			}
			if !slices.Equal(epochs, []int{1}) {
				t.Errorf("epoch hook saw %v, want [1]", epochs)
			}
			if len(cps) != 2 || cps[1].Reason != ReasonEnd || cps[0].Reason != ReasonEval {
				t.Errorf("checkpoints %+v", cps)
			}
			acc := evals[1].Metrics.Top1Accuracy() / 100
			t.Logf("%s: validation top-1 %.1f%% after 40 steps", c.name, 100*acc)
			if acc < c.min {
				t.Errorf("validation accuracy %.3f after an epoch, want at least %.2f", acc, c.min)
			}
		})
	}
}

// TestResumeExact interrupts a run at several steps (mid-epoch and at an
// epoch's end), restores a new trainer from the snapshot and checks that
// the resumed run ends with exactly the weights and state of one run
// straight through.
func TestResumeExact(t *testing.T) {
	tanh := dcnet.DefaultConfig()
	tanh.Magnitude, tanh.LearnRho = dcnet.MagTanh, true
	base := decoupledMini(t, 12, 3, tanh)
	d := synthetic(t, 12, 3, 96, 48)
	cfg := DefaultConfig()
	cfg.Batch, cfg.Epochs, cfg.LR, cfg.ProjectEvery, cfg.Orth = 16, 2, 0.02, 4, 1e-3 // 6 steps an epoch
	newTrainer := func() *Trainer {
		tr, err := New(&onnximport.Model{Proto: proto.Clone(base.Proto).(*onnxpb.ModelProto)}, cfg, 3)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Close() })
		return tr
	}
	// run trains tr to the end, or until step stop, and returns its
	// last snapshot.
	run := func(tr *Trainer, stop int64) checkpoint.File {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var snap checkpoint.File
		err := tr.Run(ctx, d, Hooks{
			Step: func(s StepInfo) error {
				if s.Step == stop {
					cancel()
				}
				return nil
			},
			Checkpoint: func(c CheckpointInfo) error {
				var err error
				snap, err = tr.Snapshot()
				return err
			},
		})
		if stop > 0 && !errors.Is(err, ErrInterrupted) {
			t.Fatalf("run stopped at step %d returned %v, want ErrInterrupted", stop, err)
		}
		if stop == 0 && err != nil {
			t.Fatal(err)
		}
		return snap
	}
	want := run(newTrainer(), 0)
	if got := want.Metadata[MetaStep]; got != "12" {
		t.Fatalf("straight run ended at step %s, want 12", got)
	}
	for _, stop := range []int64{1, 3, 6, 11} {
		snap := run(newTrainer(), stop)
		if got := snap.Metadata[MetaStep]; got != strconv.FormatInt(stop, 10) {
			t.Fatalf("interrupted at step %d, the snapshot is of step %s", stop, got)
		}
		// Through the file format, as a resumed run reads it.
		b, err := checkpoint.Encode(snap)
		if err != nil {
			t.Fatal(err)
		}
		if snap, err = checkpoint.Decode(b); err != nil {
			t.Fatal(err)
		}
		tr := newTrainer()
		if err := tr.Restore(snap); err != nil {
			t.Fatal(err)
		}
		got := run(tr, 0)
		if diff := cmp.Diff(want.Tensors, got.Tensors); diff != "" {
			t.Errorf("resumed after step %d: the final state differs (-straight +resumed):\n%.2000s", stop, diff)
		}
	}
}
