package finetune_test

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// benchClasses is the width of the classifier of every benchmarked net.
const benchClasses = 10

// benchTotal is the run length the learning-rate schedule is given: long
// enough that the rate stays near its base value for any b.N.
const benchTotal = 1 << 20

// benchNet is one network a benchmark trains.
type benchNet struct {
	name  string   // the models builder
	input [3]int64 // C, H, W
	batch int
	heavy bool // skipped under -short
}

// ballLearn is the decoupled operator the benchmarks rewrite every Conv
// into: ball x cos with a learnable radius.
func ballLearn() dcnet.Config {
	cfg := dcnet.DefaultConfig()
	cfg.Magnitude = dcnet.MagBall
	cfg.LearnRho = true
	return cfg
}

// newBenchTrainer builds net with random weights, rewrites it with dc when
// dc is not nil, and returns a trainer with the default configuration at
// net's batch size without augmentation, and a fixed batch of random
// images with labels cycling through the classes.
func newBenchTrainer(b *testing.B, net benchNet, dc *dcnet.Config) (*finetune.Trainer, data.Batch) {
	b.Helper()
	p, err := models.Build(net.name, models.Config{Input: net.input, Classes: benchClasses})
	if err != nil {
		b.Fatal(err)
	}
	m := &onnximport.Model{Proto: p}
	if dc != nil {
		if _, err := rewrite.Run(m, rewrite.Options{Config: *dc}, nil); err != nil {
			b.Fatal(err)
		}
	}
	cfg := finetune.DefaultConfig()
	cfg.Batch, cfg.Augment = net.batch, data.AugmentNone
	tr, err := finetune.New(m, cfg, benchClasses)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := tr.Close(); err != nil {
			b.Error(err)
		}
	})
	c, h, w := int(net.input[0]), int(net.input[1]), int(net.input[2])
	batch := data.Batch{
		X:      make([]float32, net.batch*c*h*w),
		Shape:  []int{net.batch, c, h, w},
		Labels: make([]int, net.batch),
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range batch.X {
		batch.X[i] = float32(r.NormFloat64())
	}
	for i := range batch.Labels {
		batch.Labels[i] = i % benchClasses
	}
	return tr, batch
}

// step runs one optimisation step, failing the benchmark on an error.
func step(b *testing.B, tr *finetune.Trainer, batch data.Batch) {
	if _, err := tr.TrainStep(batch, benchTotal); err != nil {
		b.Fatal(err)
	}
}

// reportImages reports the images per second of the timed steps.
func reportImages(b *testing.B, batch int) {
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "images/s")
}

// BenchmarkTrainStep measures Trainer.TrainStep (forward, loss, backward,
// SGD with momentum and weight decay) on a fixed random batch of 64:
// vgg-mini at 1x28x28 and the CIFAR-style vgg11 at 3x32x32, 10 classes,
// each plain and with every Conv rewritten into ball x cos with a
// learnable radius. One untimed step comes first. bench/run.sh runs it next
// to PyTorch on the same nets.
func BenchmarkTrainStep(b *testing.B) {
	ball := ballLearn()
	for _, net := range []benchNet{
		{name: "vgg-mini", input: [3]int64{1, 28, 28}, batch: 64},
		{name: "vgg11", input: [3]int64{3, 32, 32}, batch: 64, heavy: true},
	} {
		for _, v := range []struct {
			name string
			dc   *dcnet.Config
		}{
			{"plain", nil},
			{"ball-learn", &ball},
		} {
			b.Run(net.name+"/"+v.name, func(b *testing.B) {
				if net.heavy && testing.Short() {
					b.Skipf("a %s step takes seconds; run without -short", net.name)
				}
				tr, batch := newBenchTrainer(b, net, v.dc)
				step(b, tr, batch)
				for b.Loop() {
					step(b, tr, batch)
				}
				reportImages(b, net.batch)
			})
		}
	}
}

// BenchmarkVGG16Step measures the time and the memory of optimisation steps
// of a plain VGG16 (3x224x224, 10 classes) on a batch of 8, from the first
// step of a fresh trainer on. Where /proc/self/status exists it also
// reports the peak resident set size of the process (VmHWM, as getrusage's
// ru_maxrss), which includes the model and the trainer: run it alone, with
// -benchtime 1x for one step, as bench/run.sh --heavy does.
func BenchmarkVGG16Step(b *testing.B) {
	if testing.Short() {
		b.Skip("builds a 553 MB VGG16 and trains it at 224x224; run without -short")
	}
	tr, batch := newBenchTrainer(b, benchNet{name: "vgg16", input: [3]int64{3, 224, 224}, batch: 8}, nil)
	for b.Loop() {
		step(b, tr, batch)
	}
	reportImages(b, batch.Shape[0])
	if kib, ok := peakRSS(); ok {
		b.ReportMetric(float64(kib)/1024, "peak-RSS-MiB")
	}
}

// peakRSS returns the process's peak resident set size in KiB, as Linux
// reports it in /proc/self/status, and whether it could be read.
func peakRSS() (int64, bool) {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kib, err == nil
		}
	}
	return 0, false
}
