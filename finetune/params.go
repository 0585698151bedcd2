package finetune

import (
	"fmt"
	"path"
	"strings"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Role is what a parameter is to the training rules.
type Role int

// The roles of parameters.
const (
	// RoleOther is any parameter not named below (plain Conv weights and
	// biases, BatchNormalization scales and shifts, hidden Gemm layers).
	RoleOther Role = iota
	// RoleFilter is a decoupled convolution's W.
	RoleFilter
	// RoleDecoupled is a decoupled convolution's B or Alpha.
	RoleDecoupled
	// RoleRhoV is a decoupled convolution's RhoV.
	RoleRhoV
	// RoleHead is the classifier's weight or bias: the last Gemm or MatMul
	// of the graph and the bias added to its output.
	RoleHead
)

// String names the role.
func (r Role) String() string {
	switch r {
	case RoleFilter:
		return "filter"
	case RoleDecoupled:
		return "decoupled"
	case RoleRhoV:
		return "rho_v"
	case RoleHead:
		return "head"
	}
	return "other"
}

// head is the classifier of a graph: its last Gemm or MatMul node, the
// weight and bias initializers and how the weight is laid out.
type head struct {
	node    int    // index of the Gemm or MatMul node
	weight  string // the weight initializer
	bias    string // the bias initializer, or ""
	biasAdd int    // index of the Add node that adds the bias after a MatMul, or -1
	// outFirst is true when the weight is [classes, features] (Gemm with
	// transB = 1), false when it is [features, classes].
	outFirst bool
}

// findHead finds the classifier: the last Gemm or MatMul node whose
// second operand is an initializer.
func findHead(m *onnximport.Model) (*head, error) {
	nodes := m.Graph().GetNode()
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		if !onnximport.IsDefaultDomain(n.GetDomain()) {
			continue
		}
		op := n.GetOpType()
		if op != onnximport.OpGemm && op != onnximport.OpMatMul {
			continue
		}
		in := n.GetInput()
		if len(in) < 2 {
			continue
		}
		if _, ok := m.Initializer(in[1]); !ok {
			continue
		}
		h := &head{node: i, weight: in[1], biasAdd: -1}
		if op == onnximport.OpGemm {
			if onnximport.AttrInt(n, "transA", 0) != 0 {
				return nil, fmt.Errorf("classifier node %q (Gemm) has transA = 1", n.GetName())
			}
			h.outFirst = onnximport.AttrInt(n, "transB", 0) != 0
			if len(in) > 2 && in[2] != "" {
				if _, ok := m.Initializer(in[2]); ok {
					h.bias = in[2]
				}
			}
			return h, nil
		}
		// MatMul: a bias is an initializer added to its output.
		out := n.GetOutput()[0]
		for j := i + 1; j < len(nodes); j++ {
			a := nodes[j]
			if a.GetOpType() != onnximport.OpAdd || !onnximport.IsDefaultDomain(a.GetDomain()) || len(a.GetInput()) != 2 {
				continue
			}
			for k, x := range a.GetInput() {
				if x != out {
					continue
				}
				if _, ok := m.Initializer(a.GetInput()[1-k]); ok {
					h.bias, h.biasAdd = a.GetInput()[1-k], j
				}
			}
			break
		}
		return h, nil
	}
	return nil, fmt.Errorf("the graph has no Gemm or MatMul node with an initializer weight to act as the classifier")
}

// roles returns the role of every float initializer the training rules
// single out, by initializer name, and the decoupled filters'
// configurations by initializer name.
func roles(m *onnximport.Model) (map[string]Role, map[string]dcnet.Config, error) {
	out := map[string]Role{}
	filters := map[string]dcnet.Config{}
	for i, n := range m.Graph().GetNode() {
		if !dcnet.IsDecoupled(n) {
			continue
		}
		cfg, err := dcnet.FromNode(n)
		if err != nil {
			return nil, nil, fmt.Errorf("node %d %q: %w", i, n.GetName(), err)
		}
		in := n.GetInput()
		set := func(k int, r Role) {
			if k < len(in) && in[k] != "" {
				if _, ok := m.Initializer(in[k]); ok {
					out[in[k]] = r
				}
			}
		}
		set(dcnet.IndexW, RoleFilter)
		set(dcnet.IndexB, RoleDecoupled)
		set(dcnet.IndexAlpha, RoleDecoupled)
		set(dcnet.IndexRhoV, RoleRhoV)
		if dcnet.IndexW < len(in) {
			filters[in[dcnet.IndexW]] = cfg
		}
	}
	if h, err := findHead(m); err == nil {
		out[h.weight] = RoleHead
		if h.bias != "" {
			out[h.bias] = RoleHead
		}
	}
	return out, filters, nil
}

// initOf returns the initializer an engine parameter name refers to: the
// name itself, or for a later use of a shared initializer,
// "<initializer>@<node>", the part before the last "@".
func initOf(m *onnximport.Model, name string) string {
	if _, ok := m.Initializer(name); ok {
		return name
	}
	if i := strings.LastIndex(name, "@"); i > 0 {
		return name[:i]
	}
	return name
}

// trains reports whether a parameter of the given role and initializer
// name trains under the configuration.
func (c Config) trains(r Role, init string) bool {
	switch c.Train {
	case TrainDecoupled:
		if r != RoleFilter && r != RoleDecoupled && r != RoleRhoV {
			return false
		}
	case TrainHead:
		if r != RoleHead {
			return false
		}
	}
	for _, g := range c.Freeze {
		if globMatch(g, init) {
			return false
		}
	}
	return true
}

// globMatch reports whether an initializer name matches a --freeze
// pattern: path.Match's syntax, except that "*" and "?" match "/" too
// (exporters name initializers like "/features/features.0/Conv.rho_v").
func globMatch(pattern, name string) bool {
	ok, _ := path.Match(strings.ReplaceAll(pattern, "/", "\x00"), strings.ReplaceAll(name, "/", "\x00"))
	return ok
}

// decays reports whether weight decay applies to a parameter of the role
// (DCNET.md section 4).
func (c Config) decays(r Role) bool {
	switch r {
	case RoleRhoV:
		return false
	case RoleFilter:
		return c.WDFilters
	}
	return true
}
