package finetune

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/dcnet"
)

// TestOrthPenalty checks the orthogonality regulariser against a
// hand-computed value and its gradient against central differences.
func TestOrthPenalty(t *testing.T) {
	// Two filters of length 2 at 45 degrees, eps 0: What^T What - I =
	// [[0, c], [c, 0]] with c = cos 45, so the penalty is l * 0.5 * 2c^2.
	w := []float32{2, 0, 1, 1}
	if got, want := orthPenalty(w, 2, 0, 0.1, nil), 0.1*0.5*2*0.5; math.Abs(got-want) > 1e-7 {
		t.Errorf("penalty %v, want %v", got, want)
	}
	r := rand.New(rand.NewPCG(1, 2))
	const rows, n, eps, l = 4, 6, 1e-4, 0.3
	w = make([]float32, rows*n)
	for i := range w {
		w[i] = float32(r.NormFloat64())
	}
	grad := make([]float32, len(w))
	orthPenalty(w, n, eps, l, grad)
	const h = 1e-3
	for i := range w {
		// float64 copies for the differences
		up, down := slices.Clone(w), slices.Clone(w)
		up[i] += h
		down[i] -= h
		fd := (orthPenalty(up, n, eps, l, nil) - orthPenalty(down, n, eps, l, nil)) / float64(up[i]-down[i])
		if math.Abs(fd-float64(grad[i])) > 2e-3*math.Max(1, math.Abs(fd)) {
			t.Errorf("entry %d: gradient %v, central difference %v", i, grad[i], fd)
		}
	}
}

// TestProject checks that projection leaves each filter with norm
// sqrt(1 - eps/(|w|^2+eps)) (unit up to eps) and its direction unchanged.
func TestProject(t *testing.T) {
	w := []float32{3, 4, 0, 0, 0, 2}
	project(w, 2, 1e-4)
	want := []float32{0.6, 0.8, 0, 0, 0, 1}
	for i := range w {
		if math.Abs(float64(w[i]-want[i])) > 1e-4 {
			t.Fatalf("projected %v, want about %v", w, want)
		}
	}
	if n := filterNorms(w, 2, 0); math.Abs(n[0]-5/math.Sqrt(25+1e-4)) > 1e-6 {
		t.Errorf("norm after projection %v", n[0])
	}
}

// TestClipScale checks global-norm clipping against PyTorch's formula.
func TestClipScale(t *testing.T) {
	grads := [][]float32{{3}, {4}} // norm 5
	if s, n := clipScale(grads, 0); s != 1 || n != 5 {
		t.Errorf("off: scale %v norm %v", s, n)
	}
	if s, _ := clipScale(grads, 10); s != 1 {
		t.Errorf("under the limit: scale %v", s)
	}
	if s, _ := clipScale(grads, 2.5); math.Abs(s-2.5/(5+1e-6)) > 1e-15 {
		t.Errorf("over the limit: scale %v", s)
	}
}

// TestOptimizerUpdates checks one parameter's updates over three steps
// against values computed here from PyTorch's documented update rules.
func TestOptimizerUpdates(t *testing.T) {
	grads := [][]float32{{0.5, -1}, {0.25, 2}, {-0.5, 0.5}}
	const lr, wd = 0.1, 0.01
	cases := []struct {
		name string
		cfg  Config
		want func(p, g, m1, m2 []float64, step int)
	}{
		{"sgd momentum", Config{Optimizer: SGD, Momentum: 0.9}, func(p, g, m1, _ []float64, _ int) {
			for i := range p {
				d := g[i] + wd*p[i]
				m1[i] = 0.9*m1[i] + d
				p[i] -= lr * m1[i]
			}
		}},
		{"sgd nesterov", Config{Optimizer: SGD, Momentum: 0.9, Nesterov: true}, func(p, g, m1, _ []float64, _ int) {
			for i := range p {
				d := g[i] + wd*p[i]
				m1[i] = 0.9*m1[i] + d
				p[i] -= lr * (d + 0.9*m1[i])
			}
		}},
		{"adam", Config{Optimizer: Adam}, func(p, g, m1, m2 []float64, s int) {
			for i := range p {
				d := g[i] + wd*p[i]
				m1[i] = 0.9*m1[i] + 0.1*d
				m2[i] = 0.999*m2[i] + 0.001*d*d
				mh := m1[i] / (1 - math.Pow(0.9, float64(s)))
				vh := m2[i] / (1 - math.Pow(0.999, float64(s)))
				p[i] -= lr * mh / (math.Sqrt(vh) + 1e-8)
			}
		}},
		{"adamw", Config{Optimizer: AdamW}, func(p, g, m1, m2 []float64, s int) {
			for i := range p {
				p[i] *= 1 - lr*wd
				m1[i] = 0.9*m1[i] + 0.1*g[i]
				m2[i] = 0.999*m2[i] + 0.001*g[i]*g[i]
				mh := m1[i] / (1 - math.Pow(0.9, float64(s)))
				vh := m2[i] / (1 - math.Pow(0.999, float64(s)))
				p[i] -= lr * mh / (math.Sqrt(vh) + 1e-8)
			}
		}},
	}
	for _, c := range cases {
		opt := newOptimizer(c.cfg)
		p := &param{value: []float32{1, -2}, slots: map[string][]float32{}}
		for _, s := range opt.slots() {
			p.slots[s] = make([]float32, 2)
		}
		want, m1, m2 := []float64{1, -2}, make([]float64, 2), make([]float64, 2)
		for s, g := range grads {
			opt.update(p, slices.Clone(g), lr, wd, int64(s+1))
			c.want(want, []float64{float64(g[0]), float64(g[1])}, m1, m2, s+1)
			for i := range want {
				if math.Abs(float64(p.value[i])-want[i]) > 1e-6 {
					t.Errorf("%s step %d: value %v, want %v", c.name, s+1, p.value, want)
				}
			}
		}
	}
}

// TestSelection checks which parameters train and decay under --train,
// --freeze and --wd-filters, on a rewritten vgg-mini.
func TestSelection(t *testing.T) {
	ball := dcnet.DefaultConfig()
	ball.Magnitude, ball.LearnRho = dcnet.MagBall, true
	cases := []struct {
		name   string
		edit   func(*Config)
		trains []string // a subset that must train
		frozen []string // a subset that must not
	}{
		{"all", func(*Config) {}, []string{"features.0.weight", "classifier.3.bias", "/features/features.0/Conv.rho_v"}, nil},
		{"decoupled", func(c *Config) { c.Train = TrainDecoupled }, []string{"features.0.weight", "features.0.bias", "/features/features.7/Conv.rho_v"},
			[]string{"classifier.0.weight", "classifier.3.bias"}},
		{"head", func(c *Config) { c.Train = TrainHead }, []string{"classifier.3.weight", "classifier.3.bias"},
			[]string{"classifier.0.weight", "features.0.weight"}},
		{"freeze", func(c *Config) { c.Freeze = []string{"features.0.*", "*rho_v"} }, []string{"features.2.weight"},
			[]string{"features.0.weight", "features.0.bias", "/features/features.2/Conv.rho_v"}},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		cfg.Batch = 4
		c.edit(&cfg)
		tr, err := New(decoupledMini(t, 12, 3, ball), cfg, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range c.trains {
			if !slices.Contains(tr.Trained(), name) {
				t.Errorf("%s: %s does not train (trained: %v)", c.name, name, tr.Trained())
			}
		}
		for _, name := range c.frozen {
			if !slices.Contains(tr.Frozen(), name) {
				t.Errorf("%s: %s trains", c.name, name)
			}
		}
		for _, p := range tr.params {
			want := p.role != RoleFilter && p.role != RoleRhoV
			if p.decay != want {
				t.Errorf("%s: %s (%s) decays %v, want %v", c.name, p.name, p.role, p.decay, want)
			}
		}
		tr.Close()
	}
	cfg := DefaultConfig()
	cfg.Batch, cfg.WDFilters = 4, true
	tr, err := New(decoupledMini(t, 12, 3, ball), cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for _, p := range tr.params {
		if p.role == RoleFilter && !p.decay {
			t.Errorf("--wd-filters: %s does not decay", p.name)
		}
	}
	cfg.Freeze = []string{"*"}
	var fe *FlagError
	if _, err := New(decoupledMini(t, 12, 3, ball), cfg, 3); !errors.As(err, &fe) || fe.Flag != "--train" {
		t.Errorf("freezing everything: %v, want a --train error", err)
	}
}

// TestNewHead checks the new classifier: its shape, PyTorch's
// initialisation bounds, and that a mismatch without it is refused.
func TestNewHead(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Batch = 4
	var fe *FlagError
	_, err := New(miniModel(t, 12, 10), cfg, 3)
	if !errors.As(err, &fe) || fe.Flag != "--new-head" || !strings.Contains(err.Error(), "has 10 outputs but the data has 3 classes") {
		t.Fatalf("class mismatch: %v", err)
	}
	cfg.NewHead = true
	m := miniModel(t, 12, 10)
	tr, err := New(m, cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if n, err := Classes(m); err != nil || n != 3 {
		t.Errorf("classes after the new head: %d, %v", n, err)
	}
	w, err := tr.eng.Param("classifier.3.weight")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w.Shape, []int{3, 64}) {
		t.Errorf("new head weight shape %v, want [3 64]", w.Shape)
	}
	bound := float32(1 / math.Sqrt(64))
	var spread float32
	for _, x := range w.Data {
		if x < -bound || x > bound {
			t.Fatalf("weight %v outside +-%v", x, bound)
		}
		spread = max(spread, x)
	}
	if spread < bound/2 {
		t.Errorf("weights reach only %v of +-%v", spread, bound)
	}
	if out := m.Graph().GetOutput()[0].GetType().GetTensorType().GetShape().GetDim()[1].GetDimValue(); out != 3 {
		t.Errorf("graph output declares %d classes", out)
	}
}

// TestValidate checks that every bad value is reported with its flag.
func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := DefaultConfig()
	c.Batch, c.LR, c.Optimizer, c.Momentum, c.Schedule, c.LabelSmoothing = 0, -1, "x", 1, "y", 1
	err := c.Validate()
	for _, flag := range []string{"--batch", "--lr", "--optimizer", "--momentum", "--schedule", "--label-smoothing"} {
		if err == nil || !strings.Contains(err.Error(), flag+":") {
			t.Errorf("no %s error in %v", flag, err)
		}
	}
}
