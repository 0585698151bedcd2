package engine

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// update makes golden-file tests rewrite their files (go test -update).
var update = flag.Bool("update", false, "rewrite golden files")

// equalWithinAbsOrRel reports whether a and b are equal, or differ by at
// most abs, or by at most rel relative to the larger magnitude.
func equalWithinAbsOrRel(a, b, abs, rel float64) bool {
	if a == b {
		return true // infinities too
	}
	d := math.Abs(a - b)
	return d <= abs || d <= rel*math.Max(math.Abs(a), math.Abs(b))
}

// Finite-difference gradient checks run in float64 with central
// differences of step gradStep; an analytic gradient g passes against
// the numeric one n when |g-n| <= gradAbsTol + gradRelTol*|n|. Rounding
// in the loss (about 1e-14 here) over 2*gradStep contributes about 1e-8,
// truncation about gradStep^2; inputs keep every kink (max ties, clip
// bounds, zero for LeakyRelu) at least 1e-3 away.
const (
	gradStep   = 1e-6
	gradAbsTol = 1e-6
	gradRelTol = 1e-5
)

// gradInput is one input of a gradient check: a float64 tensor, whose
// gradient is checked against finite differences when diff is set.
type gradInput struct {
	name  string
	shape []int
	data  []float64
	diff  bool
}

// randomInput returns a gradInput of the given shape with values drawn
// uniformly from [-1, 1) by r.
func randomInput(r *rand.Rand, name string, diff bool, shape ...int) gradInput {
	n := 1
	for _, d := range shape {
		n *= d
	}
	data := make([]float64, n)
	for i := range data {
		data[i] = 2*r.Float64() - 1
	}
	return gradInput{name: name, shape: shape, data: data, diff: diff}
}

// spreadInput returns a gradInput whose values are distinct multiples of
// 0.01 in a random order plus a jitter in [0.002, 0.006), so that no two
// values are within 4e-3 of each other, and none within 2e-3 of 0 or of
// any k*0.01+0.008: maxima, signs and such clip bounds are stable under
// finite differences.
func spreadInput(r *rand.Rand, name string, diff bool, shape ...int) gradInput {
	in := randomInput(r, name, diff, shape...)
	perm := r.Perm(len(in.data))
	for i, p := range perm {
		v := float64(p-len(in.data)/2)*0.01 + 0.002 + 0.004*r.Float64()
		in.data[i] = v
	}
	return in
}

// gradGraph is a float64 graph computing loss = sum(weights * out) with
// out built from the inputs, with the gradient of loss for every diff
// input, ready to run on a tape machine.
type gradGraph struct {
	nodes   []*G.Node
	wrt     []*G.Node // the diff inputs, in order
	loss    G.Value   // read after each run
	outVal  G.Value
	grads   []G.Value // read after each run, one per wrt
	machine G.VM
}

// newGradGraph builds the graph for inputs and build, and compiles it
// with the dual values of the diff inputs bound.
func newGradGraph(t *testing.T, inputs []gradInput, build func(in []*G.Node) (*G.Node, error)) *gradGraph {
	t.Helper()
	g := G.NewGraph()
	gg := &gradGraph{}
	for _, in := range inputs {
		v := tensor.New(tensor.WithShape(in.shape...), tensor.WithBacking(slices.Clone(in.data)))
		n := G.NewTensor(g, tensor.Float64, len(in.shape), G.WithShape(in.shape...), G.WithName(in.name), G.WithValue(v))
		gg.nodes = append(gg.nodes, n)
		if in.diff {
			gg.wrt = append(gg.wrt, n)
		}
	}
	out, err := build(gg.nodes)
	if err != nil {
		t.Fatalf("building the graph: %v", err)
	}
	r := rand.New(rand.NewPCG(7, 11))
	w := make([]float64, out.Shape().TotalSize())
	for i := range w {
		w[i] = 2*r.Float64() - 1
	}
	wn := G.NewTensor(g, tensor.Float64, out.Dims(), G.WithShape(out.Shape()...), G.WithName("lossWeights"),
		G.WithValue(tensor.New(tensor.WithShape(out.Shape()...), tensor.WithBacking(w))))
	prod, err := G.HadamardProd(out, wn)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(loss, gg.wrt...)
	if err != nil {
		t.Fatalf("differentiating: %v", err)
	}
	G.Read(loss, &gg.loss)
	G.Read(out, &gg.outVal)
	gg.grads = make([]G.Value, len(grads))
	for i, gr := range grads {
		G.Read(gr, &gg.grads[i])
	}
	gg.machine = G.NewTapeMachine(g, G.BindDualValues(gg.wrt...))
	t.Cleanup(func() { gg.machine.Close() })
	return gg
}

// run runs the machine once and returns the loss.
func (gg *gradGraph) run(t *testing.T) float64 {
	t.Helper()
	gg.machine.Reset()
	if err := gg.machine.RunAll(); err != nil {
		t.Fatalf("running: %v", err)
	}
	return scalarValue(t, gg.loss)
}

// scalarValue returns the value of a float64 scalar.
func scalarValue(t *testing.T, v G.Value) float64 {
	t.Helper()
	switch v := v.(type) {
	case *G.F64:
		return float64(*v)
	case *tensor.Dense:
		if v.Shape().TotalSize() == 1 {
			return v.Float64s()[0]
		}
	}
	t.Fatalf("value %v (%T) is not a float64 scalar", v, v)
	return 0
}

// floatsOf returns the values of a float32 or float64 dense tensor as
// float64.
func floatsOf(t *testing.T, v G.Value) []float64 {
	t.Helper()
	d, ok := v.(*tensor.Dense)
	if !ok {
		t.Fatalf("value %T is not a dense tensor", v)
	}
	if d.RequiresIterator() {
		d = d.Materialize().(*tensor.Dense)
	}
	n := d.Shape().TotalSize()
	switch d.Dtype() {
	case tensor.Float64:
		return slices.Clone(d.Float64s()[:n])
	case tensor.Float32:
		out := make([]float64, n)
		for i, x := range d.Float32s()[:n] {
			out[i] = float64(x)
		}
		return out
	}
	t.Fatalf("value has element type %v", d.Dtype())
	return nil
}

// checkGradients checks the gradient of sum(weights * build(inputs)),
// weights fixed and random, for every diff input against central finite
// differences, through Gorgonia's symbolic Grad and a tape machine with
// dual values bound. It also checks that running leaves the inputs as
// they were, and returns the forward output of the unperturbed inputs.
func checkGradients(t *testing.T, inputs []gradInput, build func(in []*G.Node) (*G.Node, error)) []float64 {
	t.Helper()
	gg := newGradGraph(t, inputs, build)
	gg.run(t)
	out := floatsOf(t, gg.outVal)
	analytic := make([][]float64, len(gg.wrt))
	for i, n := range gg.wrt {
		analytic[i] = floatsOf(t, gg.grads[i])
		dv, err := n.Grad()
		if err != nil {
			t.Fatalf("%s: no gradient bound to the dual value: %v", n.Name(), err)
		}
		bound := floatsOf(t, dv)
		for j := range bound {
			if !equalWithinAbsOrRel(bound[j], analytic[i][j], 1e-12, 1e-12) {
				t.Fatalf("%s[%d]: dual value's gradient %g, gradient node %g", n.Name(), j, bound[j], analytic[i][j])
			}
		}
	}
	for i, in := range inputs {
		if got := floatsOf(t, gg.nodes[i].Value()); !slices.Equal(got, in.data) {
			t.Fatalf("%s: running the graph changed the input", in.name)
		}
	}
	wrt := 0
	for i, in := range inputs {
		if !in.diff {
			continue
		}
		data := gg.nodes[i].Value().Data().([]float64)
		bad := 0
		for j := range data {
			orig := data[j]
			data[j] = orig + gradStep
			plus := gg.run(t)
			data[j] = orig - gradStep
			minus := gg.run(t)
			data[j] = orig
			numeric := (plus - minus) / (2 * gradStep)
			got := analytic[wrt][j]
			if math.Abs(got-numeric) > gradAbsTol+gradRelTol*math.Abs(numeric) {
				if bad < 5 {
					t.Errorf("d loss / d %s[%d] (of %v): analytic %.9g, numeric %.9g", in.name, j, in.shape, got, numeric)
				}
				bad++
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d gradient values differ from finite differences", in.name, bad, len(data))
		}
		wrt++
	}
	return out
}

// runForward builds out from the inputs in a graph of element type dt
// (the inputs' float64 values converted), runs it once and returns the
// output as float64.
func runForward(t *testing.T, dt tensor.Dtype, inputs []gradInput, build func(in []*G.Node) (*G.Node, error)) ([]float64, error) {
	t.Helper()
	g := G.NewGraph()
	nodes := make([]*G.Node, len(inputs))
	for i, in := range inputs {
		var v *tensor.Dense
		if dt == tensor.Float32 {
			f := make([]float32, len(in.data))
			for j, x := range in.data {
				f[j] = float32(x)
			}
			v = tensor.New(tensor.WithShape(in.shape...), tensor.WithBacking(f))
		} else {
			v = tensor.New(tensor.WithShape(in.shape...), tensor.WithBacking(slices.Clone(in.data)))
		}
		nodes[i] = G.NewTensor(g, dt, len(in.shape), G.WithShape(in.shape...), G.WithName(in.name), G.WithValue(v))
	}
	out, err := build(nodes)
	if err != nil {
		return nil, err
	}
	var val G.Value
	G.Read(out, &val)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return nil, fmt.Errorf("running: %w", err)
	}
	return floatsOf(t, val), nil
}

// compareFloats reports the first few elements of got that differ from
// want by more than abs and rel (equalWithinAbsOrRel; NaN equals NaN),
// and returns whether all agree.
func compareFloats(t *testing.T, what string, got, want []float64, abs, rel float64) bool {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return false
	}
	bad := 0
	for i := range got {
		if !equalWithinAbsOrRel(got[i], want[i], abs, rel) && !(math.IsNaN(got[i]) && math.IsNaN(want[i])) {
			if bad < 5 {
				t.Errorf("%s[%d] = %.9g, want %.9g", what, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(got))
	}
	return bad == 0
}
