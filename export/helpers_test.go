package export

import (
	"math"
	"os"
	"testing"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/export/exporttest"
)

// logitTol is the tolerance of logits computed by two implementations
// from the same weights, relative to the largest logit of the batch.
const logitTol = 1e-4

// maxRelDiff returns the largest |got - want| relative to the largest
// |want| (at least 1e-6), and whether the lengths agree.
func maxRelDiff(got, want []float32) (float64, bool) {
	if len(got) != len(want) {
		return math.Inf(1), false
	}
	scale := 1e-6
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	worst := 0.0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			return math.Inf(1), true
		}
		worst = math.Max(worst, d/scale)
	}
	return worst, true
}

// argmaxes returns the index of the largest value of each row of n
// columns, the first of equal ones.
func argmaxes(v []float32, n int) []int {
	var out []int
	for r := 0; r+n <= len(v); r += n {
		best := 0
		for c := 1; c < n; c++ {
			if v[r+c] > v[r+best] {
				best = c
			}
		}
		out = append(out, best)
	}
	return out
}

// correct counts the rows whose argmax is the label.
func correct(pred, labels []int) int {
	n := 0
	for i, p := range pred {
		if p == labels[i] {
			n++
		}
	}
	return n
}

// configs used by the tests.
func ballLearn() *dcnet.Config {
	c := dcnet.DefaultConfig()
	c.Magnitude, c.LearnRho = dcnet.MagBall, true
	return &c
}

func tanhLearn() *dcnet.Config {
	c := dcnet.DefaultConfig()
	c.Magnitude, c.LearnRho = dcnet.MagTanh, true
	return &c
}

// makeRun trains a run directory in a new temporary directory.
func makeRun(t *testing.T, o exporttest.Options) *exporttest.Run {
	t.Helper()
	return exporttest.Make(t, t.TempDir(), o)
}

// load loads a checkpoint of a run, failing the test on error.
func load(t *testing.T, r *exporttest.Run, which string) *Trained {
	t.Helper()
	tr, err := Load(r.Dir, which)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// forward runs an engine on one batch and returns the run's output.
func forward(t *testing.T, e *engine.Engine, r *exporttest.Run, x []float32) []float32 {
	t.Helper()
	n := len(x) / (exporttest.Size * exporttest.Size)
	out, err := e.Forward(map[string]engine.Tensor{r.Input: {Shape: []int{n, 1, exporttest.Size, exporttest.Size}, Data: x}})
	if err != nil {
		t.Fatal(err)
	}
	return out[r.Output].Data
}

// readCheckpoint reads a checkpoint file, failing the test on error.
func readCheckpoint(t *testing.T, path string) checkpoint.File {
	t.Helper()
	f, err := checkpoint.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// readBytes reads a file, failing the test on error.
func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkpointValues returns a checkpoint tensor as float32, rounding
// float64 values.
func checkpointValues(v checkpoint.Tensor) []float32 {
	if v.F64 == nil {
		return v.F32
	}
	out := make([]float32, len(v.F64))
	for i, x := range v.F64 {
		out[i] = float32(x)
	}
	return out
}
