package engine

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// bnInputs returns random inputs of a batch normalization over x of the
// given shape: x, scale, bias, mean and a positive variance; the
// statistics are never differentiated.
func bnInputs(seed uint64, diff bool, shape ...int) []gradInput {
	r := rand.New(rand.NewPCG(seed, 17))
	c := shape[1]
	in := []gradInput{
		randomInput(r, "x", true, shape...),
		randomInput(r, "scale", diff, c),
		randomInput(r, "bias", diff, c),
		randomInput(r, "mean", false, c),
		randomInput(r, "variance", false, c),
	}
	for i := range in[4].data {
		in[4].data[i] = 0.5 + math.Abs(in[4].data[i])
	}
	return in
}

// naiveBatchNorm normalises x [N, C, inner] per channel with the given
// statistics, or with the batch statistics (population variance) when
// mean is nil, and returns y and the statistics used.
func naiveBatchNorm(x []float64, shape []int, scale, bias, mean, variance []float64, eps float64) (y, mu, sigma2 []float64) {
	n, c := shape[0], shape[1]
	inner := len(x) / (n * c)
	if mean == nil {
		mean, variance = make([]float64, c), make([]float64, c)
		count := float64(n * inner)
		for ch := 0; ch < c; ch++ {
			for b := 0; b < n; b++ {
				for i := 0; i < inner; i++ {
					mean[ch] += x[(b*c+ch)*inner+i] / count
				}
			}
			for b := 0; b < n; b++ {
				for i := 0; i < inner; i++ {
					d := x[(b*c+ch)*inner+i] - mean[ch]
					variance[ch] += d * d / count
				}
			}
		}
	}
	y = make([]float64, len(x))
	for i, v := range x {
		ch := i / inner % c
		y[i] = scale[ch]*(v-mean[ch])/math.Sqrt(variance[ch]+eps) + bias[ch]
	}
	return y, mean, variance
}

// bnCases are the shapes the batch normalization tests run on.
var bnCases = []struct {
	name  string
	shape []int
}{
	{"NCHW", []int{3, 2, 3, 4}},
	{"NC", []int{5, 3}},
	{"NCL", []int{2, 3, 4}},
}

// bnBuilder returns a builder for batchNorm over bnInputs' inputs.
func bnBuilder(eps float64, train bool, stat **bnStat) func(in []*G.Node) (*G.Node, error) {
	return func(in []*G.Node) (*G.Node, error) {
		y, s, err := batchNorm(in[0], in[1], in[2], in[3], in[4], eps, train)
		if stat != nil {
			*stat = s
		}
		return y, err
	}
}

// TestBatchNormInference checks inference-mode BatchNormalization against
// the formula, and the gradients of x, scale and bias.
func TestBatchNormInference(t *testing.T) {
	for _, c := range bnCases {
		t.Run(c.name, func(t *testing.T) {
			in := bnInputs(1, true, c.shape...)
			out := checkGradients(t, in, bnBuilder(1e-3, false, nil))
			want, _, _ := naiveBatchNorm(in[0].data, c.shape, in[1].data, in[2].data, in[3].data, in[4].data, 1e-3)
			compareFloats(t, "y", out, want, 1e-12, 1e-12)
			got32, err := runForward(t, tensor.Float32, in, bnBuilder(1e-3, false, nil))
			if err != nil {
				t.Fatal(err)
			}
			compareFloats(t, "float32 y", got32, want, 1e-5, 1e-5)
		})
	}
}

// TestBatchNormTraining checks training-mode BatchNormalization: the
// output against the formula with the batch statistics, the statistics
// it reports against the batch mean and population variance computed
// here, and the gradients of x (through the batch statistics), scale and
// bias.
func TestBatchNormTraining(t *testing.T) {
	for _, c := range bnCases {
		t.Run(c.name, func(t *testing.T) {
			in := bnInputs(2, true, c.shape...)
			var stat *bnStat
			out := checkGradients(t, in, bnBuilder(1e-5, true, &stat))
			want, mean, variance := naiveBatchNorm(in[0].data, c.shape, in[1].data, in[2].data, nil, nil, 1e-5)
			compareFloats(t, "y", out, want, 1e-12, 1e-12)
			if stat == nil || !stat.Valid {
				t.Fatalf("statistics %+v, want valid ones", stat)
			}
			compareFloats(t, "batch mean", stat.Mean, mean, 1e-14, 1e-14)
			compareFloats(t, "batch variance", stat.Var, variance, 1e-14, 1e-14)

			var stat32 *bnStat
			got32, err := runForward(t, tensor.Float32, in, bnBuilder(1e-5, true, &stat32))
			if err != nil {
				t.Fatal(err)
			}
			compareFloats(t, "float32 y", got32, want, 1e-5, 1e-5)
			compareFloats(t, "float32 batch mean", stat32.Mean, mean, 1e-6, 1e-6)
			compareFloats(t, "float32 batch variance", stat32.Var, variance, 1e-6, 1e-6)
		})
	}
}

// TestBatchNormTrainingStatsByHand checks the reported statistics on a
// batch small enough to work out by hand: channel 0 holds 1 2 3 4 (mean
// 2.5, population variance 1.25), channel 1 holds -1 -1 5 5 (mean 2,
// variance 9).
func TestBatchNormTrainingStatsByHand(t *testing.T) {
	g := G.NewGraph()
	// x [2, 2, 2]: batch 0 is [[1 2] [-1 -1]], batch 1 is [[3 4] [5 5]].
	x := G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 2, 2), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2, 2), tensor.WithBacking([]float32{1, 2, -1, -1, 3, 4, 5, 5}))))
	vec := func(name string, v ...float32) *G.Node {
		return G.NewTensor(g, tensor.Float32, 1, G.WithShape(2), G.WithName(name),
			G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking(v))))
	}
	y, stat, err := batchNorm(x, vec("scale", 1, 2), vec("bias", 0, 1), nil, nil, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if stat.Valid {
		t.Error("statistics valid before any forward pass")
	}
	var yv G.Value
	G.Read(y, &yv)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	compareFloats(t, "mean", stat.Mean, []float64{2.5, 2}, 1e-15, 1e-15)
	compareFloats(t, "variance", stat.Var, []float64{1.25, 9}, 1e-15, 1e-15)
	s := 1 / math.Sqrt(1.25)
	compareFloats(t, "y", floatsOf(t, yv), []float64{-1.5 * s, -0.5 * s, -1, -1, 0.5 * s, 1.5 * s, 3, 3}, 1e-6, 1e-6)
}

// TestBatchNormTrainingNodesStayApart checks that two training-mode
// normalizations of the same inputs stay two nodes, each reporting its
// statistics, although Gorgonia merges nodes that hash alike.
func TestBatchNormTrainingNodesStayApart(t *testing.T) {
	in := bnInputs(3, false, 2, 2, 2, 2)
	var s1, s2 *bnStat
	_, err := runForward(t, tensor.Float64, in, func(n []*G.Node) (*G.Node, error) {
		y1, a, err := batchNorm(n[0], n[1], n[2], nil, nil, 1e-5, true)
		if err != nil {
			return nil, err
		}
		y2, b, err := batchNorm(n[0], n[1], n[2], nil, nil, 1e-5, true)
		if err != nil {
			return nil, err
		}
		if y1 == y2 {
			t.Error("the two normalizations were merged into one node")
		}
		s1, s2 = a, b
		return G.Add(y1, y2)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !s1.Valid || !s2.Valid {
		t.Errorf("statistics valid %t and %t, want both", s1.Valid, s2.Valid)
	}
}

// TestBatchNormErrors checks that bad normalizations are refused with an
// error naming the problem.
func TestBatchNormErrors(t *testing.T) {
	tests := []struct {
		name   string
		x      []int
		params [4][]int // scale, bias, mean, variance; nil: missing
		f32    int      // index+1 of a parameter made float32
		eps    float64
		train  bool
		want   string
	}{
		{name: "scale shape", x: []int{2, 3, 4, 4}, params: [4][]int{{2}, {3}, {3}, {3}}, eps: 1e-5, want: "batchNorm: scale has shape (2), want [3] for input (2, 3, 4, 4)"},
		{name: "missing statistics", x: []int{2, 3, 4, 4}, params: [4][]int{{3}, {3}, nil, {3}}, eps: 1e-5, want: "batchNorm: mean is missing"},
		{name: "rank 1", x: []int{3}, params: [4][]int{{3}, {3}, {3}, {3}}, eps: 1e-5, want: "want at least 2 dimensions"},
		{name: "negative epsilon", x: []int{2, 3}, params: [4][]int{{3}, {3}, {3}, {3}}, eps: -1, want: "batchNorm: epsilon -1 is not a finite non-negative number"},
		{name: "element types", x: []int{2, 3}, params: [4][]int{{3}, {3}, {3}, {3}}, f32: 2, eps: 1e-5, want: "has element type float32"},
		{name: "matrix bias", x: []int{2, 3}, params: [4][]int{{3}, {1, 3}, {3}, {3}}, eps: 1e-5, train: true, want: "batchNorm: bias \"bias\" has shape (1, 3), want 1 dimensions"},
	}
	names := [4]string{"scale", "bias", "mean", "variance"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := G.NewGraph()
			x := G.NewTensor(g, tensor.Float64, len(tc.x), G.WithShape(tc.x...), G.WithName("x"))
			var p [4]*G.Node
			for i, s := range tc.params {
				if s == nil {
					continue
				}
				dt := tensor.Float64
				if tc.f32 == i+1 {
					dt = tensor.Float32
				}
				p[i] = G.NewTensor(g, dt, len(s), G.WithShape(s...), G.WithName(names[i]))
			}
			_, _, err := batchNorm(x, p[0], p[1], p[2], p[3], tc.eps, tc.train)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
