package engine

import (
	"math/rand/v2"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
)

// The benchmark layer: 64 -> 64 channels, 3x3, pad 1, a batch of 32
// images of 32x32, float32.
const (
	benchBatch, benchC, benchHW = 32, 64, 32
)

// benchTensor returns a float32 tensor of the shape with uniform values
// in [-1, 1).
func benchTensor(rng *rand.Rand, shape ...int) *tensor.Dense {
	n := 1
	for _, s := range shape {
		n *= s
	}
	d := make([]float32, n)
	for i := range d {
		d[i] = rng.Float32()*2 - 1
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(d))
}

// benchMachine is a graph computing sum(conv(x, w)) and its gradients by
// x and w, with the machine that runs it.
type benchMachine struct {
	vm G.VM
}

// run runs one forward and backward pass.
func (m benchMachine) run(b *testing.B) {
	if err := m.vm.RunAll(); err != nil {
		b.Fatal(err)
	}
	m.vm.Reset()
}

// newBenchMachine builds the graph with conv producing the layer's output
// from the nodes x and w (and the graph's other inputs it adds itself).
func newBenchMachine(b *testing.B, conv func(g *G.ExprGraph, x, w *G.Node) (*G.Node, []*G.Node, error)) benchMachine {
	rng := rand.New(rand.NewPCG(1, 2))
	g := G.NewGraph()
	x := G.NewTensor(g, G.Float32, 4, G.WithShape(benchBatch, benchC, benchHW, benchHW), G.WithName("x"),
		G.WithValue(benchTensor(rng, benchBatch, benchC, benchHW, benchHW)))
	w := G.NewTensor(g, G.Float32, 4, G.WithShape(benchC, benchC, 3, 3), G.WithName("w"),
		G.WithValue(benchTensor(rng, benchC, benchC, 3, 3)))
	y, extra, err := conv(g, x, w)
	if err != nil {
		b.Fatal(err)
	}
	cost, err := G.Sum(y)
	if err != nil {
		b.Fatal(err)
	}
	wrt := append([]*G.Node{x, w}, extra...)
	if _, err := G.Grad(cost, wrt...); err != nil {
		b.Fatal(err)
	}
	return benchMachine{vm: G.NewTapeMachine(g, G.BindDualValues(wrt...))}
}

// benchPlain is Gorgonia's own Conv2d.
func benchPlain(_ *G.ExprGraph, x, w *G.Node) (*G.Node, []*G.Node, error) {
	y, err := G.Conv2d(x, w, tensor.Shape{3, 3}, []int{1, 1}, []int{1, 1}, []int{1, 1})
	return y, nil, err
}

// benchDecoupled returns a builder of a decoupled convolution with the
// configuration in training mode; a learnable radius gets RhoV.
func benchDecoupled(cfg dcnet.Config) func(g *G.ExprGraph, x, w *G.Node) (*G.Node, []*G.Node, error) {
	return func(g *G.ExprGraph, x, w *G.Node) (*G.Node, []*G.Node, error) {
		in := decoupledInputs{X: x, W: w}
		var extra []*G.Node
		if cfg.LearnRho {
			ones := make([]float32, benchC)
			for i := range ones {
				ones[i] = 1
			}
			in.RhoV = G.NewTensor(g, G.Float32, 1, G.WithShape(benchC), G.WithName("rho_v"),
				G.WithValue(tensor.New(tensor.WithShape(benchC), tensor.WithBacking(ones))))
			extra = append(extra, in.RhoV)
		}
		win := onnximport.Window{Pads: []int64{1, 1, 1, 1}}
		y, _, err := decoupledConv(in, cfg, win, true)
		return y, extra, err
	}
}

// benchConfigs are the decoupled configurations benchmarked: the
// rewrite's default (linear x cos) and a costly one (learnable ball
// radius, sigmoid, log weighting).
func benchConfigs() map[string]dcnet.Config {
	heavy := dcnet.DefaultConfig()
	heavy.Magnitude, heavy.Angular, heavy.Weighted, heavy.LearnRho = dcnet.MagBall, dcnet.AngSigmoid, dcnet.WeightLog, true
	return map[string]dcnet.Config{"linear-cos": dcnet.DefaultConfig(), "ball-learn-sigmoid-log": heavy}
}

// BenchmarkDecoupledConv times forward + backward through a TapeMachine
// of Gorgonia's Conv2d and of decoupled convolutions, 64->64 3x3 pad 1,
// batch 32 of 32x32, float32, alternating them in every iteration, and
// reports each one's time per pass and their ratio decoupled/plain.
func BenchmarkDecoupledConv(b *testing.B) {
	for name, cfg := range benchConfigs() {
		b.Run(name, func(b *testing.B) {
			plain := newBenchMachine(b, benchPlain)
			dec := newBenchMachine(b, benchDecoupled(cfg))
			plain.run(b) // warm up: first allocations
			dec.run(b)
			var tPlain, tDec time.Duration
			for b.Loop() {
				t0 := time.Now()
				plain.run(b)
				t1 := time.Now()
				dec.run(b)
				tPlain += t1.Sub(t0)
				tDec += time.Since(t1)
			}
			n := float64(b.N)
			b.ReportMetric(float64(tPlain)/1e6/n, "plain-ms/op")
			b.ReportMetric(float64(tDec)/1e6/n, "decoupled-ms/op")
			b.ReportMetric(float64(tDec)/float64(tPlain), "decoupled/plain")
		})
	}
}

// BenchmarkDecoupledKernel times the kernel's forward + backward on plain
// slices, without Gorgonia, for the same layer.
func BenchmarkDecoupledKernel(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := benchTensor(rng, benchBatch, benchC, benchHW, benchHW).Data().([]float32)
	w := benchTensor(rng, benchC, benchC, 3, 3).Data().([]float32)
	geom := im2colGeom{batch: benchBatch, inC: benchC, inH: benchHW, inW: benchHW, kH: 3, kW: 3,
		outH: benchHW, outW: benchHW, strideH: 1, strideW: 1, dilH: 1, dilW: 1, padTop: 1, padLeft: 1}
	for name, cfg := range benchConfigs() {
		b.Run(name, func(b *testing.B) {
			k := newDecoupledKernel[float32](geom, benchC, newDecoupledMath(cfg, true))
			y := make([]float32, benchBatch*benchC*benchHW*benchHW)
			dy := make([]float32, len(y))
			for i := range dy {
				dy[i] = 1
			}
			var rhoV []float32
			g := decoupledGradients[float32]{dx: make([]float32, len(x)), dw: make([]float32, len(w))}
			if cfg.LearnRho {
				rhoV = make([]float32, benchC)
				for i := range rhoV {
					rhoV[i] = 1
				}
				g.drhoV = make([]float32, benchC)
			}
			for b.Loop() {
				k.forward(x, w, nil, nil, rhoV, 0, y)
				k.backward(x, w, nil, rhoV, 0, dy, &g)
			}
		})
	}
}
