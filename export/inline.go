package export

import (
	"fmt"
	"slices"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// Inline returns the inline form of m: every call of a model-local
// function replaced by its body (rewrite.Inline), so that no ai.dcnet
// node, function or domain import is left, and in the body of each
// decoupled convolution the values that depend only on the filters and
// the learnable radius computed once and stored as initializers (see the
// package documentation for their names). The initializers only those
// computations read (W, RhoV, RhoScale) are removed. m is not changed.
func Inline(m *onnximport.Model) (*onnximport.Model, error) {
	p := proto.Clone(m.Proto).(*onnxpb.ModelProto)
	out := &onnximport.Model{Proto: p, Path: m.Path}
	funcs := map[string]*onnxpb.FunctionProto{}
	for _, f := range p.GetFunctions() {
		funcs[f.GetDomain()+"\x00"+f.GetName()] = f
	}
	// Inlining replaces each call by its body's nodes in order, so the
	// bodies are found by counting.
	var calls []*call
	at := 0
	for _, n := range p.GetGraph().GetNode() {
		f := funcs[n.GetDomain()+"\x00"+n.GetOpType()]
		if f == nil {
			at++
			continue
		}
		if dcnet.IsDecoupled(n) {
			calls = append(calls, &call{node: n, fn: f, start: at})
		}
		at += len(f.GetNode())
	}
	if err := rewrite.Inline(out); err != nil {
		return nil, err
	}
	g := p.GetGraph()
	if len(g.GetNode()) != at {
		return nil, fmt.Errorf("inlining gave %d nodes, expected %d", len(g.GetNode()), at)
	}
	for _, n := range g.GetNode() {
		if dcnet.IsDecoupled(n) {
			return nil, fmt.Errorf("node %q (%s) has no model-local function to inline", n.GetName(), n.GetOpType())
		}
	}
	for _, c := range calls {
		c.body = slices.Clone(g.GetNode()[c.start : c.start+len(c.fn.GetNode())])
	}
	f := &folder{m: m, g: g}
	for _, c := range calls {
		if err := f.fold(c); err != nil {
			return nil, fmt.Errorf("folding the constants of node %q: %w", c.node.GetName(), err)
		}
	}
	return out, nil
}

// call is one decoupled node and the nodes its function body became.
type call struct {
	node  *onnxpb.NodeProto
	fn    *onnxpb.FunctionProto
	start int                 // the index of the body's first node after inlining
	body  []*onnxpb.NodeProto // the inlined nodes, in the order of fn's nodes
}

// input returns the name of input k of the decoupled node, or "".
func (c *call) input(k int) string {
	if k < len(c.node.GetInput()) {
		return c.node.GetInput()[k]
	}
	return ""
}

// folder folds the constants of inlined decoupled bodies in graph g of
// a model decoded from m.
type folder struct {
	m *onnximport.Model
	g *onnxpb.GraphProto
}

// fold computes the values of c's body that depend on nothing but its
// filters, learnable radius and constants, stores those the rest of the
// graph reads as initializers and removes what is no longer read.
func (f *folder) fold(c *call) error {
	inits := map[string]*onnxpb.TensorProto{}
	for _, t := range f.g.GetInitializer() {
		inits[t.GetName()] = t
	}
	vals := map[string]*value{}
	derived := map[string]bool{} // computed from a seed
	var seeds []string
	for _, k := range []int{dcnet.IndexW, dcnet.IndexRhoV, dcnet.IndexRhoScale} {
		name := c.input(k)
		t, ok := inits[name]
		if !ok || derived[name] {
			continue
		}
		v, err := f.decode(t)
		if err != nil {
			return fmt.Errorf("initializer %q: %w", name, err)
		}
		vals[name], derived[name] = v, true
		seeds = append(seeds, name)
	}
	folded := map[*onnxpb.NodeProto]bool{}
	local := map[string]string{} // value -> its name in the function body
	for k, n := range c.body {
		for j, o := range n.GetOutput() {
			if j < len(c.fn.GetNode()[k].GetOutput()) {
				local[o] = c.fn.GetNode()[k].GetOutput()[j]
			}
		}
		if !onnximport.IsDefaultDomain(n.GetDomain()) || len(n.GetOutput()) != 1 {
			continue
		}
		if n.GetOpType() == onnximport.OpConstant {
			if v, err := f.constant(n); err == nil {
				vals[n.GetOutput()[0]] = v
			}
			continue
		}
		if !foldable(n.GetOpType()) {
			continue
		}
		var in []*value
		fromSeed := false
		for _, name := range n.GetInput() {
			v, ok := vals[name]
			if !ok {
				in = nil
				break
			}
			in = append(in, v)
			fromSeed = fromSeed || derived[name]
		}
		if in == nil || !fromSeed {
			continue
		}
		v, err := evaluate(n, in)
		if err != nil {
			return fmt.Errorf("node %q: %w", n.GetName(), err)
		}
		vals[n.GetOutput()[0]], derived[n.GetOutput()[0]] = v, true
		folded[n] = true
	}
	if len(folded) == 0 {
		return nil
	}

	// The folded values read by nodes that stay become initializers.
	reads := f.reads(folded)
	names := f.names()
	for _, n := range c.body {
		if !folded[n] {
			continue
		}
		v := n.GetOutput()[0]
		if !reads[v] {
			continue
		}
		name := f.unique(c.foldedName(local[v]), names)
		if name == "" || f.isOutput(v) {
			name = v
		}
		t := onnximport.FloatTensor(name, vals[v].dims, vals[v].f)
		f.g.Initializer = append(f.g.Initializer, t)
		if name != v {
			f.rename(v, name, folded)
		}
	}

	// Remove the folded nodes, then the nodes of the body and the seed
	// initializers nothing reads any more.
	keep := f.g.Node[:0]
	for _, n := range f.g.GetNode() {
		if !folded[n] {
			keep = append(keep, n)
		}
	}
	f.g.Node = keep
	for {
		reads := f.reads(nil)
		dead := map[*onnxpb.NodeProto]bool{}
		for _, n := range c.body {
			if folded[n] {
				continue
			}
			used := false
			for _, o := range n.GetOutput() {
				used = used || reads[o] || f.isOutput(o)
			}
			if !used {
				dead[n] = true
				folded[n] = true
			}
		}
		if len(dead) == 0 {
			break
		}
		keep := f.g.Node[:0]
		for _, n := range f.g.GetNode() {
			if !dead[n] {
				keep = append(keep, n)
			}
		}
		f.g.Node = keep
	}
	reads = f.reads(nil)
	gone := map[string]bool{}
	for _, s := range seeds {
		if !reads[s] && !f.isOutput(s) {
			gone[s] = true
		}
	}
	f.g.Initializer = slices.DeleteFunc(f.g.Initializer, func(t *onnxpb.TensorProto) bool { return gone[t.GetName()] })
	f.g.Input = slices.DeleteFunc(f.g.Input, func(v *onnxpb.ValueInfoProto) bool { return gone[v.GetName()] })
	return nil
}

// foldedName returns the initializer name of a folded value of the body
// by its name in the function, or "" to keep the inlined value's name.
func (c *call) foldedName(local string) string {
	w, node := c.input(dcnet.IndexW), c.node.GetName()
	if node == "" {
		node = w
	}
	switch local {
	case "wdir":
		return w + ".normalized"
	case "wnorm":
		return w + ".norm"
	case "m":
		cfg, err := dcnet.FromNode(c.node)
		if err == nil && cfg.Weighted == dcnet.WeightLog {
			return w + ".log1p_norm"
		}
		return w + ".norm"
	case "ones":
		return node + ".ones"
	case "rho", "rho_c":
		return node + ".rho"
	}
	return ""
}

// decode returns an initializer's values.
func (f *folder) decode(t *onnxpb.TensorProto) (*value, error) {
	d, err := f.m.Tensor(t)
	if err != nil {
		return nil, err
	}
	return &value{dims: slices.Clone(d.Dims), f: d.Float, i: d.Int}, nil
}

// constant returns the value of a Constant node holding a tensor.
func (f *folder) constant(n *onnxpb.NodeProto) (*value, error) {
	a := onnximport.Attr(n, "value")
	if a == nil || a.GetT() == nil {
		return nil, fmt.Errorf("constant %q holds no tensor value", n.GetName())
	}
	return f.decode(a.GetT())
}

// reads returns the values read by the nodes of the graph not in skip,
// including those that subgraphs read.
func (f *folder) reads(skip map[*onnxpb.NodeProto]bool) map[string]bool {
	out := map[string]bool{}
	var walk func(nodes []*onnxpb.NodeProto, top bool)
	walk = func(nodes []*onnxpb.NodeProto, top bool) {
		for _, n := range nodes {
			if top && skip[n] {
				continue
			}
			for _, in := range n.GetInput() {
				out[in] = true
			}
			for _, a := range n.GetAttribute() {
				if a.GetG() != nil {
					walk(a.GetG().GetNode(), false)
				}
				for _, sg := range a.GetGraphs() {
					walk(sg.GetNode(), false)
				}
			}
		}
	}
	walk(f.g.GetNode(), true)
	return out
}

// isOutput reports whether a value is a graph output.
func (f *folder) isOutput(v string) bool {
	return slices.ContainsFunc(f.g.GetOutput(), func(o *onnxpb.ValueInfoProto) bool { return o.GetName() == v })
}

// names returns every value name of the graph.
func (f *folder) names() map[string]bool {
	out := map[string]bool{}
	for _, t := range f.g.GetInitializer() {
		out[t.GetName()] = true
	}
	for _, v := range f.g.GetInput() {
		out[v.GetName()] = true
	}
	for _, n := range f.g.GetNode() {
		for _, o := range n.GetOutput() {
			out[o] = true
		}
	}
	return out
}

// unique returns name, or name with a numeric suffix when the graph
// already has a value of that name, and records it; "" stays "".
func (f *folder) unique(name string, names map[string]bool) string {
	if name == "" {
		return ""
	}
	fresh := name
	for k := 1; names[fresh]; k++ {
		fresh = name + "_" + strconv.Itoa(k)
	}
	names[fresh] = true
	return fresh
}

// rename makes the nodes not in skip read to instead of from.
func (f *folder) rename(from, to string, skip map[*onnxpb.NodeProto]bool) {
	for _, n := range f.g.GetNode() {
		if skip[n] {
			continue
		}
		for k, in := range n.GetInput() {
			if in == from {
				n.Input[k] = to
			}
		}
	}
}
