package finetune

import (
	"math"
	"testing"
)

// TestLearningRate checks the schedules at hand-computed steps.
func TestLearningRate(t *testing.T) {
	const tol = 1e-12
	cases := []struct {
		name   string
		cfg    Config
		total  int
		steps  []int
		factor []float64
	}{
		{"const", Config{LR: 0.1, Schedule: Const}, 10, []int{1, 5, 10}, []float64{1, 1, 1}},
		{"const warmup", Config{LR: 0.1, Schedule: Const, Warmup: 4}, 10, []int{1, 2, 4, 5, 10}, []float64{0.25, 0.5, 1, 1, 1}},
		// 8 steps: steps 1-4 at 1, 5-6 at 0.1, 7-8 at 0.01.
		{"step", Config{LR: 0.1, Schedule: Step}, 8, []int{1, 4, 5, 6, 7, 8}, []float64{1, 1, 0.1, 0.1, 0.01, 0.01}},
		// 5 steps: cos(pi*(s-1)/5).
		{"cosine", Config{LR: 0.1, Schedule: Cosine}, 5, []int{1, 2, 3, 5},
			[]float64{1, 0.5 * (1 + math.Cos(math.Pi/5)), 0.5 * (1 + math.Cos(2*math.Pi/5)), 0.5 * (1 + math.Cos(4*math.Pi/5))}},
		// warm-up 2 of 6: 0.5, 1, then cosine over the 4 steps left.
		{"cosine warmup", Config{LR: 0.1, Schedule: Cosine, Warmup: 2}, 6, []int{1, 2, 3, 4, 6},
			[]float64{0.5, 1, 1, 0.5 * (1 + math.Cos(math.Pi/4)), 0.5 * (1 + math.Cos(3*math.Pi/4))}},
		{"single step", Config{LR: 0.1, Schedule: Cosine}, 1, []int{1}, []float64{1}},
	}
	for _, c := range cases {
		for i, s := range c.steps {
			got := c.cfg.LearningRate(s, c.total)
			if want := c.cfg.LR * c.factor[i]; math.Abs(got-want) > tol {
				t.Errorf("%s: step %d of %d: lr %v, want %v", c.name, s, c.total, got, want)
			}
		}
	}
}
