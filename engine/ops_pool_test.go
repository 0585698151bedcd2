package engine

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/onnximport"
)

// poolCase is one pooling configuration of the tests.
type poolCase struct {
	name  string
	x     []int
	win   onnximport.Window
	outHW [2]int
}

// poolWindow returns a 2-D pooling window.
func poolWindow(kernel, strides, dilations, pads []int64, autoPad string, ceil bool) onnximport.Window {
	return onnximport.Window{Kernel: kernel, Strides: strides, Dilations: dilations, Pads: pads, AutoPad: autoPad, CeilMode: ceil}
}

var (
	// poolCommonCases are the geometries both poolings are tested on.
	poolCommonCases = []poolCase{
		{name: "plain", x: []int{2, 2, 4, 4}, outHW: [2]int{2, 2},
			win: poolWindow([]int64{2, 2}, []int64{2, 2}, []int64{1, 1}, []int64{0, 0, 0, 0}, "NOTSET", false)},
		{name: "asymmetric pads", x: []int{1, 2, 5, 6}, outHW: [2]int{3, 3},
			win: poolWindow([]int64{3, 3}, []int64{2, 2}, []int64{1, 1}, []int64{1, 0, 2, 1}, "NOTSET", false)},
		{name: "ceil mode keeps a window past the end pad", x: []int{1, 2, 4, 4}, outHW: [2]int{3, 3},
			win: poolWindow([]int64{3, 3}, []int64{2, 2}, []int64{1, 1}, []int64{1, 1, 1, 1}, "NOTSET", true)},
		{name: "ceil mode drops a window starting in the end pad", x: []int{1, 1, 3, 3}, outHW: [2]int{2, 2},
			win: poolWindow([]int64{2, 2}, []int64{2, 2}, []int64{1, 1}, []int64{1, 1, 1, 1}, "NOTSET", true)},
		{name: "ceil mode asymmetric", x: []int{1, 2, 5, 4}, outHW: [2]int{3, 2},
			win: poolWindow([]int64{2, 3}, []int64{2, 2}, []int64{1, 1}, []int64{0, 1, 0, 0}, "NOTSET", true)},
		{name: "same upper", x: []int{1, 2, 5, 5}, outHW: [2]int{3, 3},
			win: poolWindow([]int64{3, 3}, []int64{2, 2}, []int64{1, 1}, []int64{0, 0, 0, 0}, "SAME_UPPER", false)},
		{name: "same lower", x: []int{1, 1, 4, 5}, outHW: [2]int{4, 5},
			win: poolWindow([]int64{2, 2}, []int64{1, 1}, []int64{1, 1}, []int64{0, 0, 0, 0}, "SAME_LOWER", false)},
		{name: "strides", x: []int{2, 1, 5, 5}, outHW: [2]int{4, 2},
			win: poolWindow([]int64{2, 2}, []int64{1, 2}, []int64{1, 1}, []int64{0, 0, 0, 0}, "NOTSET", false)},
	}
	// maxPoolCases adds dilations, which only MaxPool supports.
	maxPoolCases = append(append([]poolCase(nil), poolCommonCases...),
		poolCase{name: "dilations", x: []int{1, 2, 6, 6}, outHW: [2]int{6, 3},
			win: poolWindow([]int64{2, 2}, []int64{1, 2}, []int64{2, 2}, []int64{1, 1, 1, 1}, "NOTSET", false)},
		poolCase{name: "dilations ceil mode", x: []int{1, 1, 7, 6}, outHW: [2]int{3, 3},
			win: poolWindow([]int64{2, 2}, []int64{2, 2}, []int64{3, 2}, []int64{0, 1, 0, 0}, "NOTSET", true)},
	)
)

// naivePool pools x over the window by walking every kernel tap: the
// maximum of the taps inside the input (kind "max"), or their sum
// divided by their number ("avg") or by the number of taps inside the
// input and its pads ("avgpad").
func naivePool(x []float64, xs []int, g window2d, kind string) []float64 {
	n, c, h, w := xs[0], xs[1], xs[2], xs[3]
	y := make([]float64, 0, n*c*g.oh*g.ow)
	for p := 0; p < n*c; p++ {
		for oh := 0; oh < g.oh; oh++ {
			for ow := 0; ow < g.ow; ow++ {
				best, sum, inside, padded := math.Inf(-1), 0.0, 0, 0
				for i := 0; i < g.kh; i++ {
					for j := 0; j < g.kw; j++ {
						ih, iw := oh*g.sh-g.pt+i*g.dh, ow*g.sw-g.pl+j*g.dw
						if ih < h+g.pb && iw < w+g.pr {
							padded++
						}
						if ih < 0 || ih >= h || iw < 0 || iw >= w {
							continue
						}
						v := x[(p*h+ih)*w+iw]
						best, sum = math.Max(best, v), sum+v
						inside++
					}
				}
				switch kind {
				case "max":
					y = append(y, best)
				case "avg":
					y = append(y, sum/float64(inside))
				default:
					y = append(y, sum/float64(padded))
				}
			}
		}
	}
	return y
}

// poolKind is one pooling operation under test.
type poolKind struct {
	name  string
	naive string // naivePool's kind
	cases []poolCase
	build func(x *G.Node, win onnximport.Window) (*G.Node, error)
}

// poolKinds lists MaxPool and AveragePool with and without pads counted.
var poolKinds = []poolKind{
	{name: "maxPool", naive: "max", cases: maxPoolCases, build: maxPool},
	{name: "avgPool", naive: "avg", cases: poolCommonCases, build: func(x *G.Node, win onnximport.Window) (*G.Node, error) {
		return avgPool(x, win, false)
	}},
	{name: "avgPool count_include_pad", naive: "avgpad", cases: poolCommonCases, build: func(x *G.Node, win onnximport.Window) (*G.Node, error) {
		return avgPool(x, win, true)
	}},
}

// TestPoolForward compares every pooling case, in float32 and float64,
// with naivePool, and checks the output sizes.
func TestPoolForward(t *testing.T) {
	for _, k := range poolKinds {
		for _, c := range k.cases {
			t.Run(k.name+"/"+c.name, func(t *testing.T) {
				r := rand.New(rand.NewPCG(3, uint64(len(c.name))))
				in := []gradInput{randomInput(r, "x", true, c.x...)}
				geo, err := resolveWindow2d(k.name, c.win, c.x[2], c.x[3])
				if err != nil {
					t.Fatal(err)
				}
				if geo.oh != c.outHW[0] || geo.ow != c.outHW[1] {
					t.Fatalf("output %dx%d, want %dx%d", geo.oh, geo.ow, c.outHW[0], c.outHW[1])
				}
				want := naivePool(in[0].data, c.x, geo, k.naive)
				for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
					got, err := runForward(t, dt, in, func(n []*G.Node) (*G.Node, error) { return k.build(n[0], c.win) })
					if err != nil {
						t.Fatal(err)
					}
					compareFloats(t, dt.String(), got, want, 1e-6, 1e-6)
				}
			})
		}
	}
}

// TestAvgPoolByHand checks AveragePool on a 4x4 input holding 1..16
// with kernel 3, strides 2, pads 1 and ceil_mode against values worked
// out by hand: the last window covers row (column) 3 of the input, one
// end pad and one cell past it, which is never counted.
func TestAvgPoolByHand(t *testing.T) {
	x := make([]float64, 16)
	for i := range x {
		x[i] = float64(i + 1)
	}
	win := poolWindow([]int64{3, 3}, []int64{2, 2}, []int64{1, 1}, []int64{1, 1, 1, 1}, "NOTSET", true)
	in := []gradInput{{name: "x", shape: []int{1, 1, 4, 4}, data: x}}
	tests := []struct {
		includePad bool
		want       []float64
	}{
		// Window (0,0) holds 1 2 5 6 and five pad cells; window (2,2)
		// holds 16, three pad cells and five cells past the end pads.
		{false, []float64{14.0 / 4, (2 + 3 + 4 + 6 + 7 + 8) / 6.0, (4 + 8) / 2.0,
			(5 + 6 + 9 + 10 + 13 + 14) / 6.0, (6 + 7 + 8 + 10 + 11 + 12 + 14 + 15 + 16) / 9.0, (8 + 12 + 16) / 3.0,
			(13 + 14) / 2.0, (14 + 15 + 16) / 3.0, 16}},
		{true, []float64{14.0 / 9, (2 + 3 + 4 + 6 + 7 + 8) / 9.0, (4 + 8) / 6.0,
			(5 + 6 + 9 + 10 + 13 + 14) / 9.0, (6 + 7 + 8 + 10 + 11 + 12 + 14 + 15 + 16) / 9.0, (8 + 12 + 16) / 6.0,
			(13 + 14) / 6.0, (14 + 15 + 16) / 6.0, 16.0 / 4}},
	}
	for _, tc := range tests {
		got, err := runForward(t, tensor.Float64, in, func(n []*G.Node) (*G.Node, error) { return avgPool(n[0], win, tc.includePad) })
		if err != nil {
			t.Fatal(err)
		}
		compareFloats(t, "count_include_pad "+map[bool]string{false: "0", true: "1"}[tc.includePad], got, tc.want, 1e-12, 1e-12)
	}
}

// TestPoolGradients checks the gradient of x of every pooling case
// against finite differences; MaxPool's inputs have no near ties.
func TestPoolGradients(t *testing.T) {
	for _, k := range poolKinds {
		for _, c := range k.cases {
			t.Run(k.name+"/"+c.name, func(t *testing.T) {
				r := rand.New(rand.NewPCG(5, uint64(len(c.name))))
				in := []gradInput{spreadInput(r, "x", true, c.x...)}
				checkGradients(t, in, func(n []*G.Node) (*G.Node, error) { return k.build(n[0], c.win) })
			})
		}
	}
}

// TestGlobalAvgPool checks GlobalAveragePool's output against the means
// of each channel, and its gradient.
func TestGlobalAvgPool(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	in := []gradInput{randomInput(r, "x", true, 2, 3, 4, 5)}
	out := checkGradients(t, in, func(n []*G.Node) (*G.Node, error) { return globalAvgPool(n[0]) })
	want := make([]float64, 6)
	for p := range want {
		for _, v := range in[0].data[p*20 : (p+1)*20] {
			want[p] += v / 20
		}
	}
	compareFloats(t, "mean", out, want, 1e-12, 1e-12)
	g := G.NewGraph()
	y, err := globalAvgPool(G.NewTensor(g, tensor.Float32, 4, G.WithShape(2, 3, 4, 5), G.WithName("x")))
	if err != nil {
		t.Fatal(err)
	}
	if !y.Shape().Eq(tensor.Shape{2, 3, 1, 1}) {
		t.Errorf("shape %v, want (2, 3, 1, 1)", y.Shape())
	}
}

// TestPoolErrors checks that bad poolings are refused with an error
// naming the problem.
func TestPoolErrors(t *testing.T) {
	k2 := []int64{2, 2}
	ones := []int64{1, 1}
	tests := []struct {
		name  string
		x     []int
		build func(x *G.Node) (*G.Node, error)
		want  string
	}{
		{"avgPool dilations", []int{1, 1, 5, 5}, func(x *G.Node) (*G.Node, error) {
			return avgPool(x, poolWindow(k2, ones, k2, []int64{0, 0, 0, 0}, "NOTSET", false), false)
		}, "avgPool: dilations [2 2] are not supported"},
		{"maxPool 1-D", []int{1, 1, 5, 5}, func(x *G.Node) (*G.Node, error) {
			return maxPool(x, poolWindow([]int64{2}, []int64{1}, []int64{1}, []int64{0, 0}, "NOTSET", false))
		}, "maxPool: kernel [2]: only 2-D windows are supported"},
		{"maxPool rank", []int{1, 5, 5}, func(x *G.Node) (*G.Node, error) {
			return maxPool(x, poolWindow(k2, ones, ones, []int64{0, 0, 0, 0}, "NOTSET", false))
		}, "maxPool: input \"x\" has shape (1, 5, 5), want 4 dimensions"},
		{"maxPool window in the padding", []int{1, 1, 4, 4}, func(x *G.Node) (*G.Node, error) {
			return maxPool(x, poolWindow(k2, ones, ones, []int64{2, 0, 0, 0}, "NOTSET", false))
		}, "maxPool: pads [2 0 0 0] leave a window of kernel 2x2 entirely in the padding"},
		{"avgPool window in the padding", []int{1, 1, 4, 4}, func(x *G.Node) (*G.Node, error) {
			return avgPool(x, poolWindow(k2, ones, ones, []int64{0, 0, 0, 3}, "NOTSET", false), false)
		}, "entirely in the padding"},
		{"maxPool too small", []int{1, 1, 2, 2}, func(x *G.Node) (*G.Node, error) {
			return maxPool(x, poolWindow([]int64{3, 3}, ones, ones, []int64{0, 0, 0, 0}, "VALID", false))
		}, "smaller than the kernel extent"},
		{"globalAvgPool rank", []int{2, 3}, globalAvgPool, "want 4 dimensions"},
		{"maxPool nil", nil, func(*G.Node) (*G.Node, error) {
			return maxPool(nil, poolWindow(k2, ones, ones, []int64{0, 0, 0, 0}, "NOTSET", false))
		}, "maxPool: input is missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var x *G.Node
			if tc.x != nil {
				x = G.NewTensor(G.NewGraph(), tensor.Float64, len(tc.x), G.WithShape(tc.x...), G.WithName("x"))
			}
			_, err := tc.build(x)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// A window entirely in the padding is fine when pads count.
	x := G.NewTensor(G.NewGraph(), tensor.Float64, 4, G.WithShape(1, 1, 4, 4), G.WithName("x"))
	if _, err := avgPool(x, poolWindow(k2, ones, ones, []int64{0, 0, 0, 3}, "NOTSET", false), true); err != nil {
		t.Errorf("avgPool with count_include_pad and a window in the padding: %v", err)
	}
}
