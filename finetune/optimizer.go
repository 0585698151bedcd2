package finetune

import "math"

// Optimiser state slot names, as checkpoints store them:
// "<slot>/<parameter>".
const (
	SlotMomentum = "optim.momentum"
	SlotAdamM    = "optim.adam_m"
	SlotAdamV    = "optim.adam_v"
)

// optimizer applies one update to a parameter from its gradient.
type optimizer interface {
	// slots names the state the optimiser keeps per parameter, each the
	// size of the parameter.
	slots() []string
	// update changes p.value in place. g is the gradient after clipping;
	// t is the 1-based step; decay is the parameter's weight decay (0 when
	// it has none).
	update(p *param, g []float32, lr, decay float64, t int64)
}

// newOptimizer returns the configuration's optimiser.
func newOptimizer(c Config) optimizer {
	switch c.Optimizer {
	case Adam, AdamW:
		return adam{decoupled: c.Optimizer == AdamW}
	}
	return sgd{momentum: c.Momentum, nesterov: c.Nesterov}
}

// sgd is torch.optim.SGD with dampening 0.
type sgd struct {
	momentum float64
	nesterov bool
}

func (o sgd) slots() []string {
	if o.momentum == 0 {
		return nil
	}
	return []string{SlotMomentum}
}

func (o sgd) update(p *param, g []float32, lr, decay float64, t int64) {
	v := p.value
	if o.momentum == 0 {
		for i, gi := range g {
			d := float64(gi) + decay*float64(v[i])
			v[i] = float32(float64(v[i]) - lr*d)
		}
		return
	}
	buf := p.slots[SlotMomentum]
	for i, gi := range g {
		d := float64(gi) + decay*float64(v[i])
		b := o.momentum*float64(buf[i]) + d // buf starts at 0, so b = d at the first step
		buf[i] = float32(b)
		if o.nesterov {
			d += o.momentum * b
		} else {
			d = b
		}
		v[i] = float32(float64(v[i]) - lr*d)
	}
}

// adam is torch.optim.Adam, or AdamW when decoupled.
type adam struct{ decoupled bool }

func (adam) slots() []string { return []string{SlotAdamM, SlotAdamV} }

func (o adam) update(p *param, g []float32, lr, decay float64, t int64) {
	v, m1, m2 := p.value, p.slots[SlotAdamM], p.slots[SlotAdamV]
	c1 := 1 - math.Pow(AdamBeta1, float64(t))
	c2 := math.Sqrt(1 - math.Pow(AdamBeta2, float64(t)))
	step := lr / c1
	for i, gi := range g {
		x := float64(v[i])
		d := float64(gi)
		if o.decoupled {
			x *= 1 - lr*decay
		} else {
			d += decay * x
		}
		a := AdamBeta1*float64(m1[i]) + (1-AdamBeta1)*d
		b := AdamBeta2*float64(m2[i]) + (1-AdamBeta2)*d*d
		m1[i], m2[i] = float32(a), float32(b)
		v[i] = float32(x - step*a/(math.Sqrt(b)/c2+AdamEps))
	}
}
