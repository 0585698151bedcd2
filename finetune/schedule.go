package finetune

import "math"

// LearningRate returns the learning rate of step s (1-based) of a run of
// total steps: the base rate times the schedule's factor, times s/Warmup
// during the warm-up (see Schedule).
func (c Config) LearningRate(s, total int) float64 {
	f := 1.0
	if c.Warmup > 0 && s <= c.Warmup {
		f = float64(s) / float64(c.Warmup)
	}
	switch c.Schedule {
	case Step:
		switch {
		case 4*(s-1) >= 3*total:
			f *= 0.01
		case 2*(s-1) >= total:
			f *= 0.1
		}
	case Cosine:
		if s > c.Warmup {
			span := total - c.Warmup
			if span > 0 {
				f *= 0.5 * (1 + math.Cos(math.Pi*float64(s-1-c.Warmup)/float64(span)))
			}
		}
	}
	return c.LR * f
}
