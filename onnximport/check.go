package onnximport

import (
	"errors"
	"fmt"
	"sort"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// maxReported bounds how many problems one error reports.
const maxReported = 20

// joinLimited joins errs, keeping the first maxReported of them.
func joinLimited(errs []error) error {
	if len(errs) > maxReported {
		more := len(errs) - maxReported
		errs = append(errs[:maxReported:maxReported], fmt.Errorf("and %d more problems", more))
	}
	return errors.Join(errs...)
}

// Check verifies the model's structure (see the package documentation) and
// returns every problem found, joined.
func (m *Model) Check() error {
	var errs []error
	p := m.Proto
	if p.GetIrVersion() < 3 {
		errs = append(errs, fmt.Errorf("IR version %d is not supported (3 or later is required)", p.GetIrVersion()))
	}
	errs = append(errs, checkOpsets(p)...)
	g := p.GetGraph()
	if g == nil {
		errs = append(errs, errors.New("model has no graph"))
		return joinLimited(errs)
	}
	if len(g.GetNode()) == 0 {
		errs = append(errs, errors.New("graph has no nodes"))
	}
	if len(g.GetOutput()) == 0 {
		errs = append(errs, errors.New("graph has no outputs"))
	}
	errs = append(errs, checkGraph(g, nil, "")...)
	errs = append(errs, checkDomains(p)...)
	eachTensor(p, func(t *onnxpb.TensorProto) {
		if err := m.checkTensor(t); err != nil {
			errs = append(errs, fmt.Errorf("tensor %q: %w", t.GetName(), err))
		}
	})
	return joinLimited(errs)
}

// checkOpsets verifies the operator-set imports: one entry per domain and
// a default-domain version dcconvert accepts.
func checkOpsets(p *onnxpb.ModelProto) []error {
	var errs []error
	seen := map[string]bool{}
	for _, o := range p.GetOpsetImport() {
		d := canonicalDomain(o.GetDomain())
		if seen[d] {
			errs = append(errs, fmt.Errorf("operator set %q is imported twice", d))
		}
		seen[d] = true
		if d == DefaultDomain && (o.GetVersion() < MinOpset || o.GetVersion() > MaxOpset) {
			errs = append(errs, fmt.Errorf("default-domain opset %d is not supported (%d to %d are)", o.GetVersion(), MinOpset, MaxOpset))
		}
	}
	if !seen[DefaultDomain] {
		errs = append(errs, errors.New("model imports no default-domain operator set"))
	}
	return errs
}

// checkDomains verifies that every node of the main graph uses an imported
// domain or one of the model's local functions.
func checkDomains(p *onnxpb.ModelProto) []error {
	imported := map[string]bool{}
	for _, o := range p.GetOpsetImport() {
		imported[canonicalDomain(o.GetDomain())] = true
	}
	var errs []error
	for i, n := range p.GetGraph().GetNode() {
		if d := canonicalDomain(n.GetDomain()); !imported[d] {
			errs = append(errs, fmt.Errorf("%s: domain %q is not imported", nodeLabel(i, n), d))
		}
	}
	return errs
}

// scope is the set of names visible in a graph, chained to the scope of
// the graph that contains it.
type scope struct {
	names  map[string]bool
	parent *scope
}

func (s *scope) has(name string) bool {
	for ; s != nil; s = s.parent {
		if s.names[name] {
			return true
		}
	}
	return false
}

// checkGraph verifies one graph; outer holds the names of enclosing graphs
// and where prefixes messages about subgraphs.
func checkGraph(g *onnxpb.GraphProto, outer *scope, where string) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(where+format, args...))
	}
	sc := &scope{names: map[string]bool{}, parent: outer}
	for _, in := range g.GetInput() {
		if sc.names[in.GetName()] {
			fail("graph input %q is declared twice", in.GetName())
		}
		sc.names[in.GetName()] = true
	}
	inits := map[string]bool{}
	for _, t := range g.GetInitializer() {
		if inits[t.GetName()] {
			fail("initializer %q is declared twice", t.GetName())
		}
		inits[t.GetName()] = true
		sc.names[t.GetName()] = true
	}
	for _, t := range g.GetSparseInitializer() {
		name := t.GetValues().GetName()
		if sc.names[name] && !inits[name] {
			inits[name] = true
		}
		sc.names[name] = true
	}

	// Who produces each name.
	producer := map[string]int{}
	nodes := g.GetNode()
	for i, n := range nodes {
		for _, out := range n.GetOutput() {
			if out == "" {
				continue
			}
			if j, ok := producer[out]; ok {
				fail("%s: output %q is also produced by %s", nodeLabel(i, n), out, nodeLabel(j, nodes[j]))
				continue
			}
			if sc.names[out] {
				fail("%s: output %q is also a graph input or initializer", nodeLabel(i, n), out)
				continue
			}
			producer[out] = i
		}
	}
	all := &scope{names: map[string]bool{}, parent: sc}
	for name := range producer {
		all.names[name] = true
	}

	outOfOrder := -1
	for i, n := range nodes {
		for _, in := range n.GetInput() {
			if in == "" {
				continue
			}
			j, produced := producer[in]
			switch {
			case produced && j < i:
			case produced:
				if outOfOrder < 0 {
					outOfOrder = i
				}
			case !sc.has(in):
				fail("%s: input %q is not defined", nodeLabel(i, n), in)
			}
		}
		for _, a := range n.GetAttribute() {
			sub := a.GetGraphs()
			if a.GetG() != nil {
				sub = append([]*onnxpb.GraphProto{a.GetG()}, sub...)
			}
			for _, sg := range sub {
				prefix := fmt.Sprintf("%s%s: attribute %q: ", where, nodeLabel(i, n), a.GetName())
				errs = append(errs, checkGraph(sg, all, prefix)...)
			}
		}
	}
	if outOfOrder >= 0 {
		errs = append(errs, orderError(nodes, producer, where))
	}
	for _, out := range g.GetOutput() {
		if !all.has(out.GetName()) {
			fail("graph output %q is not produced by any node", out.GetName())
		}
	}
	return errs
}

// orderError explains why nodes are not in topological order: a cycle, or
// a node placed before one it depends on.
func orderError(nodes []*onnxpb.NodeProto, producer map[string]int, where string) error {
	indeg := make([]int, len(nodes))
	users := make([][]int, len(nodes))
	for i, n := range nodes {
		for _, in := range n.GetInput() {
			if j, ok := producer[in]; ok && in != "" {
				indeg[i]++
				users[j] = append(users[j], i)
			}
		}
	}
	var ready []int
	for i, d := range indeg {
		if d == 0 {
			ready = append(ready, i)
		}
	}
	done := 0
	for len(ready) > 0 {
		i := ready[len(ready)-1]
		ready = ready[:len(ready)-1]
		done++
		for _, u := range users[i] {
			if indeg[u]--; indeg[u] == 0 {
				ready = append(ready, u)
			}
		}
	}
	if done < len(nodes) {
		var inCycle []int
		for i, d := range indeg {
			if d > 0 {
				inCycle = append(inCycle, i)
			}
		}
		sort.Ints(inCycle)
		i := inCycle[0]
		return fmt.Errorf("%sthe graph has a cycle through %s", where, nodeLabel(i, nodes[i]))
	}
	for i, n := range nodes {
		for _, in := range n.GetInput() {
			if j, ok := producer[in]; ok && in != "" && j > i {
				return fmt.Errorf("%snodes are not in topological order: %s uses %q before %s produces it",
					where, nodeLabel(i, n), in, nodeLabel(j, nodes[j]))
			}
		}
	}
	return nil
}
