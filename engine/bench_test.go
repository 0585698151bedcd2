package engine_test

import (
	"testing"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
)

// BenchmarkTrainStepVGGMini measures one training step (forward, loss,
// backward; no optimiser update) of vgg-mini on a batch of 64 1x28x28
// images in float32, plain and rewritten (ball x cos, learnable radius).
// bench/run.sh measures the whole optimisation step instead
// (BenchmarkTrainStep in package finetune) next to PyTorch.
func BenchmarkTrainStepVGGMini(b *testing.B) {
	plain := buildModel(b, "vgg-mini", nil)
	cases := []struct {
		name string
		cfg  *dcnet.Config
	}{
		{"plain", nil},
		{"ball", ptr(decoupled(dcnet.MagBall, dcnet.AngCos, nil))},
	}
	x := map[string]engine.Tensor{"input": randomTensor(1, 64, 1, 28, 28)}
	labels := make([]int, 64)
	for i := range labels {
		labels[i] = i % 10
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			m := plain
			if c.cfg != nil {
				m = rewritten(b, plain, *c.cfg)
			}
			e, err := engine.Build(m, engine.Options{Mode: engine.Training, Batch: 64})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			for b.Loop() {
				if _, err := e.Step(x, labels); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
