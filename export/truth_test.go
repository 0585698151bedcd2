package export

import (
	"math"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/export/exporttest"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/internal/peer"
)

// TestExportMatchesEngineAndORT fine-tunes plain and decoupled models at
// several opsets, exports the best checkpoint in both ONNX forms and
// checks that each passes the ONNX checker and that ONNX Runtime computes
// from it the logits, and so the accuracy on the test split, that the
// engine computes from the run's model with the checkpoint's values set
// through its own interface.
func TestExportMatchesEngineAndORT(t *testing.T) {
	ort := peer.ORT(t)
	sigmoid := dcnet.DefaultConfig()
	sigmoid.Magnitude, sigmoid.Angular, sigmoid.Weighted, sigmoid.Rho = dcnet.MagTanh, dcnet.AngSigmoid, dcnet.WeightLinear, 2
	seg := dcnet.DefaultConfig()
	seg.Magnitude, seg.Angular, seg.Weighted, seg.LearnRho = dcnet.MagSeg, dcnet.AngSqcos, dcnet.WeightLog, true
	norm := []float32{0.25}
	cases := []struct {
		name string
		o    exporttest.Options
	}{
		{"ball-learn-opset7", exporttest.Options{Opset: 7, Decoupled: ballLearn()}},
		{"ball-learn-opset11", exporttest.Options{Opset: 11, Decoupled: ballLearn()}},
		{"ball-learn-opset13", exporttest.Options{Opset: 13, Decoupled: ballLearn()}},
		{"ball-learn-opset17", exporttest.Options{Opset: 17, Decoupled: ballLearn()}},
		{"tanh-learn-bn-opset13", exporttest.Options{Opset: 13, BN: true, Decoupled: tanhLearn(), Mean: norm, Std: norm}},
		{"tanh-sigmoid-weighted-linear-opset17", exporttest.Options{Opset: 17, Decoupled: &sigmoid}},
		{"seg-sqcos-weighted-log-opset9", exporttest.Options{Opset: 9, Decoupled: &seg}},
		{"plain-tied-opset13", exporttest.Options{Opset: 13, Tie: true}},
		{"plain-bn-tied-opset7", exporttest.Options{Opset: 7, BN: true, Tie: true}},
	}
	const n = exporttest.Test
	var mu sync.Mutex
	checked, worst := 0, 0.0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := makeRun(t, c.o)
			tr := load(t, r, Best)
			m, err := tr.Model()
			if err != nil {
				t.Fatal(err)
			}
			x, labels := exporttest.Images(t, r.Data.Val, r.Data.Pre, n)
			ref := exporttest.Reference(t, r, tr.Checkpoint, n)
			want := forward(t, ref, r, x)

			// The engine's accuracy over the test split, batch by batch.
			loader, err := data.NewLoader(r.Data.Val, data.LoaderOptions{Batch: n, Pre: r.Data.Pre})
			if err != nil {
				t.Fatal(err)
			}
			ev := finetune.Evaluator{Engine: ref, Input: r.Input, Output: r.Output, Classes: exporttest.Classes, Scores: engine.Logits}
			metrics, _, err := ev.Run(loader)
			if err != nil {
				t.Fatal(err)
			}
			if got := correct(argmaxes(want, exporttest.Classes), labels); got != metrics.Top1 {
				t.Fatalf("the reference's logits rank %d labels first, its evaluation %d", got, metrics.Top1)
			}

			dir := t.TempDir()
			for _, inline := range []bool{false, true} {
				form := "function"
				if inline {
					form = "inline"
				}
				path := filepath.Join(dir, form+".onnx")
				if err := WriteONNX(path, m, inline); err != nil {
					t.Fatal(err)
				}
				peer.CheckModel(t, path)
				outs, err := ort.Run(path, map[string]peer.Tensor{r.Input: {Dims: []int64{n, 1, exporttest.Size, exporttest.Size}, Data: x}})
				if err != nil {
					t.Fatalf("%s form: %v", form, err)
				}
				got := outs[r.Output].Data
				d, ok := maxRelDiff(got, want)
				if !ok || d > logitTol {
					t.Errorf("%s form: ONNX Runtime's logits differ from the engine's by %.3g of the largest (want at most %g)", form, d, logitTol)
				}
				if top1 := correct(argmaxes(got, exporttest.Classes), labels); top1 != metrics.Top1 {
					t.Errorf("%s form: ONNX Runtime ranks %d of %d labels first, the engine %d", form, top1, n, metrics.Top1)
				}
				if !inline {
					// The engine runs the exported function form too.
					e := exporttest.Engine(t, path, n)
					if d, ok := maxRelDiff(forward(t, e, r, x), want); !ok || d > 1e-6 {
						t.Errorf("the engine's logits of the exported model differ from the reference's by %.3g", d)
					}
				}
				t.Logf("%s form: ONNX Runtime vs engine max relative difference %.2g; top-1 %d/%d (%.1f%%)",
					form, d, metrics.Top1, n, metrics.Top1Accuracy())
				mu.Lock()
				checked++
				worst = math.Max(worst, d)
				mu.Unlock()
			}
		})
	}
	t.Cleanup(func() {
		t.Logf("checked %d exported models (%d runs, both ONNX forms) against ONNX Runtime and the ONNX checker; largest logit difference %.2g of the largest logit",
			checked, len(cases), worst)
	})
}
