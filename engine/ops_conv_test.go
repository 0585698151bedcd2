package engine

import (
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/onnximport"
)

// window2 returns a 2-D ONNX window with NOTSET auto_pad.
func window2(kernel, strides, dilations, pads []int64) onnximport.Window {
	return onnximport.Window{Kernel: kernel, Strides: strides, Dilations: dilations, Pads: pads, AutoPad: "NOTSET"}
}

// convCase is one convolution configuration of the tests.
type convCase struct {
	name    string
	x, w    []int // shapes
	bias    bool
	win     onnximport.Window
	group   int64
	outHW   [2]int
	autoPad string
}

// convCases covers symmetric and asymmetric pads, strides, dilations,
// groups, depthwise convolutions and auto_pad.
var convCases = []convCase{
	{name: "symmetric pads", x: []int{2, 3, 5, 5}, w: []int{4, 3, 3, 3}, bias: true, group: 1,
		win: window2([]int64{3, 3}, []int64{1, 1}, []int64{1, 1}, []int64{1, 1, 1, 1}), outHW: [2]int{5, 5}},
	{name: "symmetric pads strided no bias", x: []int{1, 2, 6, 5}, w: []int{3, 2, 3, 2}, group: 1,
		win: window2([]int64{3, 2}, []int64{2, 1}, []int64{1, 1}, []int64{1, 0, 1, 0}), outHW: [2]int{3, 4}},
	{name: "asymmetric pads strided", x: []int{2, 3, 6, 5}, w: []int{4, 3, 3, 3}, bias: true, group: 1,
		win: window2([]int64{3, 3}, []int64{2, 2}, []int64{1, 1}, []int64{0, 1, 2, 1}), outHW: [2]int{3, 3}},
	{name: "asymmetric pads no bias", x: []int{1, 2, 4, 4}, w: []int{3, 2, 2, 3}, group: 1,
		win: window2([]int64{2, 3}, []int64{1, 1}, []int64{1, 1}, []int64{1, 0, 0, 2}), outHW: [2]int{4, 4}},
	{name: "dilation", x: []int{1, 2, 7, 6}, w: []int{3, 2, 3, 2}, bias: true, group: 1,
		win: window2([]int64{3, 2}, []int64{1, 2}, []int64{2, 3}, []int64{2, 1, 2, 1}), outHW: [2]int{7, 3}},
	{name: "groups", x: []int{2, 4, 6, 6}, w: []int{6, 2, 3, 3}, bias: true, group: 2,
		win: window2([]int64{3, 3}, []int64{1, 2}, []int64{1, 1}, []int64{1, 0, 0, 1}), outHW: [2]int{5, 3}},
	{name: "depthwise same upper", x: []int{1, 3, 5, 5}, w: []int{3, 1, 3, 3}, bias: true, group: 3,
		win: window2([]int64{3, 3}, []int64{2, 2}, []int64{1, 1}, []int64{0, 0, 0, 0}), autoPad: "SAME_UPPER", outHW: [2]int{3, 3}},
	{name: "depthwise multiplier same lower", x: []int{2, 3, 4, 4}, w: []int{6, 1, 2, 2}, group: 3,
		win: window2([]int64{2, 2}, []int64{1, 1}, []int64{1, 1}, []int64{0, 0, 0, 0}), autoPad: "SAME_LOWER", outHW: [2]int{4, 4}},
	{name: "groups dilated symmetric", x: []int{1, 4, 6, 6}, w: []int{4, 2, 2, 2}, bias: true, group: 2,
		win: window2([]int64{2, 2}, []int64{1, 1}, []int64{2, 2}, []int64{1, 1, 1, 1}), outHW: [2]int{6, 6}},
	{name: "depthwise 1x1", x: []int{1, 2, 3, 3}, w: []int{2, 1, 1, 1}, bias: true, group: 2,
		win: window2([]int64{1, 1}, []int64{1, 1}, []int64{1, 1}, []int64{0, 0, 1, 0}), outHW: [2]int{4, 3}},
	{name: "single image and channel", x: []int{1, 1, 4, 3}, w: []int{1, 1, 2, 2}, bias: true, group: 1,
		win: window2([]int64{2, 2}, []int64{1, 1}, []int64{1, 1}, []int64{0, 1, 1, 0}), outHW: [2]int{4, 3}},
	{name: "1x1 strided valid", x: []int{2, 3, 5, 4}, w: []int{2, 3, 1, 1}, bias: true, group: 1,
		win: window2([]int64{1, 1}, []int64{2, 3}, []int64{1, 1}, []int64{0, 0, 0, 0}), autoPad: "VALID", outHW: [2]int{3, 2}},
}

// convInputs returns the random inputs of a convolution case.
func convInputs(c convCase) []gradInput {
	r := rand.New(rand.NewPCG(1, uint64(len(c.name))))
	in := []gradInput{randomInput(r, "x", true, c.x...), randomInput(r, "w", true, c.w...)}
	if c.bias {
		in = append(in, randomInput(r, "b", true, c.w[0]))
	}
	return in
}

// build returns the graph builder of a convolution case.
func (c convCase) build(in []*G.Node) (*G.Node, error) {
	var b *G.Node
	if c.bias {
		b = in[2]
	}
	win := c.win
	if c.autoPad != "" {
		win.AutoPad = c.autoPad
	}
	return conv(in[0], in[1], b, win, c.group)
}

// naiveConv is a direct ONNX convolution: y[n,m,oh,ow] = b[m] + the sum
// over the group's channels and the kernel of w * x, pads given.
func naiveConv(x []float64, xs []int, w []float64, ws []int, b []float64, group int, win window2d) []float64 {
	n, c, h, wd := xs[0], xs[1], xs[2], xs[3]
	m, cg := ws[0], ws[1]
	mg := m / group
	y := make([]float64, n*m*win.oh*win.ow)
	for bn := 0; bn < n; bn++ {
		for om := 0; om < m; om++ {
			g := om / mg
			for oh := 0; oh < win.oh; oh++ {
				for ow := 0; ow < win.ow; ow++ {
					s := 0.0
					if b != nil {
						s = b[om]
					}
					for ic := 0; ic < cg; ic++ {
						ch := g*cg + ic
						for ki := 0; ki < win.kh; ki++ {
							ih := oh*win.sh - win.pt + ki*win.dh
							if ih < 0 || ih >= h {
								continue
							}
							for kj := 0; kj < win.kw; kj++ {
								iw := ow*win.sw - win.pl + kj*win.dw
								if iw < 0 || iw >= wd {
									continue
								}
								s += w[((om*cg+ic)*win.kh+ki)*win.kw+kj] * x[((bn*c+ch)*h+ih)*wd+iw]
							}
						}
					}
					y[((bn*m+om)*win.oh+oh)*win.ow+ow] = s
				}
			}
		}
	}
	return y
}

// TestConvForward compares every convolution case, in float32 and
// float64, with a direct convolution.
func TestConvForward(t *testing.T) {
	for _, c := range convCases {
		t.Run(c.name, func(t *testing.T) {
			in := convInputs(c)
			win := c.win
			if c.autoPad != "" {
				win.AutoPad = c.autoPad
			}
			geo, err := resolveWindow2d("conv", win, c.x[2], c.x[3])
			if err != nil {
				t.Fatal(err)
			}
			if geo.oh != c.outHW[0] || geo.ow != c.outHW[1] {
				t.Fatalf("output %dx%d, want %dx%d", geo.oh, geo.ow, c.outHW[0], c.outHW[1])
			}
			var b []float64
			if c.bias {
				b = in[2].data
			}
			want := naiveConv(in[0].data, c.x, in[1].data, c.w, b, int(c.group), geo)
			for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
				got, err := runForward(t, dt, in, c.build)
				if err != nil {
					t.Fatal(err)
				}
				tol := 1e-12
				if dt == tensor.Float32 {
					tol = 1e-5
				}
				compareFloats(t, dt.String(), got, want, tol, tol)
			}
		})
	}
}

// TestConvPath checks that every case is one ConvGemm operation of this
// package, and that its gradients are operations of this package too.
func TestConvPath(t *testing.T) {
	for _, c := range convCases {
		g := G.NewGraph()
		var nodes []*G.Node
		for _, in := range convInputs(c) {
			nodes = append(nodes, G.NewTensor(g, tensor.Float64, len(in.shape), G.WithShape(in.shape...), G.WithName(in.name)))
		}
		y, err := c.build(nodes)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if _, ok := y.Op().(kernelOp); !ok || !strings.HasPrefix(y.Op().String(), "ConvGemm#") {
			t.Errorf("%s: output computed by %v, want a ConvGemm", c.name, y.Op())
		}
		if want := (tensor.Shape{c.x[0], c.w[0], c.outHW[0], c.outHW[1]}); !y.Shape().Eq(want) {
			t.Errorf("%s: output shape %v, want %v", c.name, y.Shape(), want)
		}
		loss, err := G.Sum(y)
		if err != nil {
			t.Fatal(err)
		}
		grads, err := G.Grad(loss, nodes...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for i, prefix := range []string{"GradXConvGemm#", "GradWConvGemm#", "ChannelSum"} {
			if i >= len(grads) {
				break
			}
			if _, ok := grads[i].Op().(kernelOp); !ok || !strings.HasPrefix(grads[i].Op().String(), prefix) {
				t.Errorf("%s: gradient %d computed by %v, want %s...", c.name, i, grads[i].Op(), prefix)
			}
		}
	}
}

// TestConvGradients checks the gradients of x, w and b of every
// convolution case against finite differences.
func TestConvGradients(t *testing.T) {
	for _, c := range convCases {
		t.Run(c.name, func(t *testing.T) {
			checkGradients(t, convInputs(c), c.build)
		})
	}
}

// TestConvErrors checks that bad convolutions are refused with an error
// naming the problem.
func TestConvErrors(t *testing.T) {
	k3 := window2([]int64{3, 3}, []int64{1, 1}, []int64{1, 1}, []int64{0, 0, 0, 0})
	tests := []struct {
		name    string
		x, w, b []int
		f32w    bool
		win     onnximport.Window
		group   int64
		want    string
	}{
		{name: "group zero", x: []int{1, 2, 5, 5}, w: []int{2, 2, 3, 3}, win: k3, group: 0, want: "conv: group 0 is not between 1 and the 2 input channels"},
		{name: "channels do not fit groups", x: []int{1, 4, 5, 5}, w: []int{4, 3, 3, 3}, win: k3, group: 2, want: "do not fit group 2"},
		{name: "outputs not a multiple", x: []int{1, 4, 5, 5}, w: []int{3, 2, 3, 3}, win: k3, group: 2, want: "output channels a multiple of 2"},
		{name: "1-D", x: []int{1, 2, 5, 5}, w: []int{2, 2, 3, 3}, win: window2([]int64{3}, []int64{1}, []int64{1}, []int64{0, 0}), group: 1, want: "only 2-D windows are supported"},
		{name: "kernel differs", x: []int{1, 2, 5, 5}, w: []int{2, 2, 3, 3}, win: window2([]int64{2, 2}, []int64{1, 1}, []int64{1, 1}, []int64{0, 0, 0, 0}), group: 1, want: "kernel_shape [2 2] differs from the weight's (3, 3)"},
		{name: "bias shape", x: []int{1, 2, 5, 5}, w: []int{2, 2, 3, 3}, b: []int{3}, win: k3, group: 1, want: "conv: bias has shape (3), want [2]"},
		{name: "input rank", x: []int{2, 5, 5}, w: []int{2, 2, 3, 3}, win: k3, group: 1, want: "want 4 dimensions"},
		{name: "too small", x: []int{1, 2, 2, 2}, w: []int{2, 2, 3, 3}, win: k3, group: 1, want: "smaller than the kernel extent"},
		{name: "element types", x: []int{1, 2, 5, 5}, w: []int{2, 2, 3, 3}, f32w: true, win: k3, group: 1, want: "has element type float32"},
		{name: "negative pads", x: []int{1, 2, 5, 5}, w: []int{2, 2, 3, 3}, win: window2([]int64{3, 3}, []int64{1, 1}, []int64{1, 1}, []int64{0, -1, 0, 0}), group: 1, want: "must not be negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := G.NewGraph()
			x := G.NewTensor(g, tensor.Float64, len(tc.x), G.WithShape(tc.x...), G.WithName("x"))
			wdt := tensor.Float64
			if tc.f32w {
				wdt = tensor.Float32
			}
			w := G.NewTensor(g, wdt, len(tc.w), G.WithShape(tc.w...), G.WithName("w"))
			var b *G.Node
			if tc.b != nil {
				b = G.NewTensor(g, tensor.Float64, len(tc.b), G.WithShape(tc.b...), G.WithName("b"))
			}
			_, err := conv(x, w, b, tc.win, tc.group)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// BenchmarkConv times a training step's convolution work (forward, and
// the gradients of x, w and b) of 32 images of 16x32x32 into 32
// channels, 3x3, pads 1, in float32: Gorgonia's Conv2d (without the
// bias), this package's, and this package's with 4 groups.
func BenchmarkConv(b *testing.B) {
	benches := []struct {
		name  string
		w     []int
		pads  []int64
		group int64
	}{
		{"Gorgonia Conv2d", []int{32, 16, 3, 3}, []int64{1, 1, 1, 1}, 1},
		{"gemm", []int{32, 16, 3, 3}, []int64{1, 1, 1, 1}, 1},
		{"gemm 4 groups", []int{32, 4, 3, 3}, []int64{1, 1, 1, 1}, 4},
	}
	for _, bc := range benches {
		b.Run(bc.name, func(b *testing.B) {
			r := rand.New(rand.NewPCG(1, 2))
			g := G.NewGraph()
			node := func(name string, shape ...int) *G.Node {
				in := randomInput(r, name, true, shape...)
				f := make([]float32, len(in.data))
				for i, v := range in.data {
					f[i] = float32(v)
				}
				return G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name),
					G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))))
			}
			x, w, bias := node("x", 32, 16, 32, 32), node("w", bc.w...), node("b", bc.w[0])
			var y *G.Node
			var err error
			wrt := []*G.Node{x, w, bias}
			if bc.name == "Gorgonia Conv2d" {
				y, err = G.Conv2d(x, w, tensor.Shape{3, 3}, []int{1, 1}, []int{1, 1}, []int{1, 1})
				wrt = wrt[:2]
			} else {
				y, err = conv(x, w, bias, window2([]int64{3, 3}, []int64{1, 1}, []int64{1, 1}, bc.pads), bc.group)
			}
			if err != nil {
				b.Fatal(err)
			}
			loss, err := G.Sum(y)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := G.Grad(loss, wrt...); err != nil {
				b.Fatal(err)
			}
			m := G.NewTapeMachine(g, G.BindDualValues(wrt...))
			defer m.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.Reset()
				if err := m.RunAll(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
