package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/finetune"
)

// logLines is the number of metrics records (and plain progress lines)
// per epoch.
const logLines = 10

// trainStats accumulates the steps between two metrics records.
type trainStats struct {
	steps           int
	loss            float64
	correct, images int
	busy            time.Duration
}

// train runs the trainer with the hooks that show progress, log metrics
// and write checkpoints, and reports the outcome.
func (r *finetuneRun) train() error {
	opts := r.opts
	loader, err := r.tr.Loader(r.d)
	if err != nil {
		return asFlagUsage(err)
	}
	per := loader.BatchesPerEpoch()
	total := r.tr.TotalSteps(per)
	every := max(1, per/logLines)
	start := time.Now()
	wallBefore := 0.0
	if n := len(r.metrics); n > 0 {
		wallBefore = r.metrics[n-1].WallSeconds
	}
	var acc trainStats
	var lastSaved int64 = r.tr.Step()
	bestTop1, bestStep := math.Inf(-1), int64(-1)
	if f, err := checkpoint.ReadFile(r.dir.Path(checkpoint.BestFile)); err == nil {
		if v, err := parseFloatMeta(f.Metadata, checkpoint.MetaValTop1); err == nil {
			bestTop1 = v
		}
	}
	var bar *progressbar.ProgressBar
	if opts.Progress {
		bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(opts.IO.ErrOut),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetItsString("step"),
			progressbar.OptionShowIts(),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		_ = bar.Set64(r.tr.Step())
	}
	opts.infof("fine-tuning %s: %d trained parameters, %d steps (%d per epoch of %d images, batch %d), run directory %s",
		opts.Model, len(r.run.Trained), total, per, r.d.Train.Len(), opts.Train.Batch, opts.Out)

	record := func(step int64, lr float64) checkpoint.Record {
		rec := checkpoint.Record{Step: step, Epoch: float64(step) / float64(per), LR: lr,
			WallSeconds: wallBefore + time.Since(start).Seconds()}
		if acc.steps > 0 {
			rec.Loss = acc.loss / float64(acc.steps)
			rec.TrainAcc = float64(acc.correct) / float64(acc.images)
			rec.ImagesPerSec = float64(acc.images) / acc.busy.Seconds()
		}
		return rec
	}
	var lastLR float64
	hooks := finetune.Hooks{
		Step: func(s finetune.StepInfo) error {
			acc.steps++
			acc.loss += s.Loss
			acc.correct += s.Correct
			acc.images += s.Samples
			acc.busy += s.Duration
			lastLR = s.LR
			if bar != nil {
				bar.Describe(fmt.Sprintf("epoch %d/%d loss %.4f acc %.1f%% %.0f img/s", s.Epoch+1, (total+int64(per)-1)/int64(per),
					acc.loss/float64(acc.steps), 100*float64(acc.correct)/float64(acc.images), float64(acc.images)/acc.busy.Seconds()))
				_ = bar.Set64(s.Step)
			}
			if s.Step%int64(every) != 0 && s.Step != total {
				return nil
			}
			rec := record(s.Step, s.LR)
			r.metrics = append(r.metrics, rec)
			if bar == nil && !opts.Quiet {
				opts.infof("epoch %d step %d/%d  loss %.4f  acc %.2f%%  lr %.4g  %.0f images/s",
					s.Epoch+1, s.Step, total, rec.Loss, 100*rec.TrainAcc, s.LR, rec.ImagesPerSec)
			}
			acc = trainStats{}
			return nil
		},
		Eval: func(e finetune.EvalInfo) error {
			top1, loss := e.Metrics.Top1Accuracy()/100, e.Metrics.MeanCrossEntropy()
			n := len(r.metrics)
			if n == 0 || r.metrics[n-1].Step != e.Step {
				r.metrics = append(r.metrics, record(e.Step, lastLR))
				n++
			}
			r.metrics[n-1].ValAcc, r.metrics[n-1].ValLoss = &top1, &loss
			if bar == nil && !opts.Quiet {
				opts.infof("validation after step %d (epoch %.2f): top-1 %.2f%%, top-5 %.2f%%, cross-entropy %.4f, %d images",
					e.Step, e.Epoch, e.Metrics.Top1Accuracy(), e.Metrics.Top5Accuracy(), loss, e.Metrics.Samples)
			}
			return nil
		},
		Checkpoint: func(info finetune.CheckpointInfo) error {
			if err := r.save(info, &bestTop1, &bestStep); err != nil {
				return err
			}
			lastSaved = info.Step
			return nil
		},
	}
	ctx, stop := r.signalContext()
	err = r.tr.Run(ctx, r.d, hooks)
	stop()
	if bar != nil {
		_ = bar.Clear()
	}
	last := r.dir.Path(checkpoint.LastFile)
	var div *finetune.DivergedError
	switch {
	case errors.Is(err, finetune.ErrInterrupted):
		opts.infof("interrupted: saved step %d in %s; continue with the same command and --resume", r.tr.Step(), last)
		return nil
	case errors.As(err, &div):
		where := "no checkpoint was written yet"
		if lastSaved > 0 {
			where = fmt.Sprintf("the last checkpoint, %s (step %d), is intact", last, lastSaved)
		}
		return fmt.Errorf("training diverged: %w; %s; try a lower --lr or --clip-norm", err, where)
	case err != nil:
		where := ""
		if lastSaved > 0 {
			where = fmt.Sprintf(" (the last checkpoint, %s at step %d, is intact)", last, lastSaved)
		}
		return fmt.Errorf("fine-tuning %s: %w%s", opts.Model, err, where)
	}
	r.summary(bestTop1, bestStep)
	return nil
}

// save writes last.safetensors, best.safetensors when validation improved,
// the metrics and the plot.
func (r *finetuneRun) save(info finetune.CheckpointInfo, bestTop1 *float64, bestStep *int64) error {
	f, err := r.tr.Snapshot()
	if err != nil {
		return err
	}
	for k, v := range r.checkpointMeta(info) {
		f.Metadata[k] = v
	}
	if err := checkpoint.WriteFile(r.dir.Path(checkpoint.LastFile), f); err != nil {
		return fmt.Errorf("saving the checkpoint of step %d: %w", info.Step, err)
	}
	if info.Val != nil {
		if top1 := info.Val.Metrics.Top1Accuracy(); top1 > *bestTop1 {
			if err := checkpoint.WriteFile(r.dir.Path(checkpoint.BestFile), f); err != nil {
				return fmt.Errorf("saving the best checkpoint of step %d: %w", info.Step, err)
			}
			*bestTop1, *bestStep = top1, info.Step
		}
	}
	if err := checkpoint.WriteMetrics(r.dir.Path(checkpoint.MetricsFile), r.metrics); err != nil {
		return err
	}
	return checkpoint.PlotCurves(r.dir.Path(checkpoint.CurvesFile), r.metrics)
}

// summary reports where the run's files are and what to run next.
func (r *finetuneRun) summary(bestTop1 float64, bestStep int64) {
	opts := r.opts
	if opts.Quiet {
		return
	}
	w := opts.IO.ErrOut
	fmt.Fprintf(w, "finished %d steps", r.tr.Step())
	if n := len(r.metrics); n > 0 {
		fmt.Fprintf(w, " in %.1fs", r.metrics[n-1].WallSeconds)
	}
	fmt.Fprintln(w)
	if bestStep >= 0 {
		fmt.Fprintf(w, "best validation top-1: %.2f%% (step %d), %s\n", bestTop1, bestStep, r.dir.Path(checkpoint.BestFile))
	} else if !math.IsInf(bestTop1, -1) {
		fmt.Fprintf(w, "best validation top-1: %.2f%%, %s\n", bestTop1, r.dir.Path(checkpoint.BestFile))
	}
	fmt.Fprintf(w, "last checkpoint: %s\n", r.dir.Path(checkpoint.LastFile))
	fmt.Fprintf(w, "metrics: %s, plot: %s\n", r.dir.Path(checkpoint.MetricsFile), r.dir.Path(checkpoint.CurvesFile))
	fmt.Fprintf(w, "next: dcconvert export %s -o %s\n", opts.Out, exportName(opts.Model))
}

// exportName suggests the output file of an export of a model.
func exportName(model string) string {
	for _, ext := range []string{".dc.onnx", ".onnx"} {
		if base, ok := strings.CutSuffix(model, ext); ok && base != "" {
			return base + ".ft.onnx"
		}
	}
	return model + ".ft.onnx"
}

// parseFloatMeta reads a float metadata value.
func parseFloatMeta(meta map[string]string, key string) (float64, error) {
	v, ok := meta[key]
	if !ok {
		return 0, fmt.Errorf("no %s", key)
	}
	return strconv.ParseFloat(v, 64)
}

// bestTop1 returns the validation top-1 accuracy, in percent, of a run
// directory's best checkpoint.
func bestTop1(dir string) (float64, error) {
	path := checkpoint.Dir(dir).Path(checkpoint.BestFile)
	f, err := checkpoint.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := parseFloatMeta(f.Metadata, checkpoint.MetaValTop1)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
