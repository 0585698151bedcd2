package rewrite

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// inlinePass replaces every call of a model-local function in the main
// graph by the function's body, then drops the functions and domain
// imports nothing uses any more.
func inlinePass(st *State) error {
	if err := Inline(st.Model); err != nil {
		return err
	}
	st.Report.Inlined = true
	return nil
}

// Inline replaces every call of a model-local function in the main graph
// of m by the function's body. Values inside a body are renamed
// "<node name>/<value>"; attributes the body references (ref_attr_name)
// take the calling node's values and are left out where the caller has
// none. Functions no node calls any more are removed, and so are the
// opset imports of domains no node uses.
func Inline(m *onnximport.Model) error {
	p := m.Proto
	g := p.GetGraph()
	funcs := map[string]*onnxpb.FunctionProto{}
	for _, f := range p.GetFunctions() {
		funcs[f.GetDomain()+"\x00"+f.GetName()] = f
	}
	used := map[string]bool{}
	for _, t := range g.GetInitializer() {
		used[t.GetName()] = true
	}
	for _, v := range g.GetInput() {
		used[v.GetName()] = true
	}
	for _, n := range g.GetNode() {
		used[n.GetName()] = true
		for _, o := range n.GetOutput() {
			used[o] = true
		}
	}
	var nodes []*onnxpb.NodeProto
	for i, n := range g.GetNode() {
		f, ok := funcs[n.GetDomain()+"\x00"+n.GetOpType()]
		if !ok {
			nodes = append(nodes, n)
			continue
		}
		body, err := expand(n, f, i, used)
		if err != nil {
			return err
		}
		nodes = append(nodes, body...)
	}
	g.Node = nodes

	// Keep what is still called, and the domains still used.
	domains := map[string]bool{}
	called := map[string]bool{}
	for _, n := range g.GetNode() {
		domains[canonical(n.GetDomain())] = true
		called[n.GetDomain()+"\x00"+n.GetOpType()] = true
	}
	var keep []*onnxpb.FunctionProto
	for _, f := range p.GetFunctions() {
		if called[f.GetDomain()+"\x00"+f.GetName()] {
			keep = append(keep, f)
			for _, imp := range f.GetOpsetImport() {
				domains[canonical(imp.GetDomain())] = true
			}
		}
	}
	p.Functions = keep
	var imports []*onnxpb.OperatorSetIdProto
	for _, imp := range p.GetOpsetImport() {
		if d := canonical(imp.GetDomain()); d == onnximport.DefaultDomain || domains[d] {
			imports = append(imports, imp)
		}
	}
	p.OpsetImport = imports
	return nil
}

func canonical(d string) string {
	if onnximport.IsDefaultDomain(d) {
		return onnximport.DefaultDomain
	}
	return d
}

// expand returns the body of f as called by node n (the i-th node), with
// names made unique against used, which it extends.
func expand(n *onnxpb.NodeProto, f *onnxpb.FunctionProto, i int, used map[string]bool) ([]*onnxpb.NodeProto, error) {
	prefix := n.GetName()
	if prefix == "" {
		prefix = fmt.Sprintf("%s_%d", n.GetOpType(), i)
	}
	rename := map[string]string{}
	for k, formal := range f.GetInput() {
		actual := ""
		if k < len(n.GetInput()) {
			actual = n.GetInput()[k]
		}
		rename[formal] = actual
	}
	for k, formal := range f.GetOutput() {
		actual := ""
		if k < len(n.GetOutput()) {
			actual = n.GetOutput()[k]
		}
		rename[formal] = actual
	}
	local := func(name string) string {
		if actual, ok := rename[name]; ok {
			return actual
		}
		fresh := prefix + "/" + name
		for k := 1; used[fresh]; k++ {
			fresh = fmt.Sprintf("%s/%s_%d", prefix, name, k)
		}
		used[fresh] = true
		rename[name] = fresh
		return fresh
	}
	callerAttrs := map[string]*onnxpb.AttributeProto{}
	for _, a := range n.GetAttribute() {
		callerAttrs[a.GetName()] = a
	}
	var out []*onnxpb.NodeProto
	for _, b := range f.GetNode() {
		c := &onnxpb.NodeProto{
			OpType: b.OpType,
			Domain: b.Domain,
		}
		if b.GetName() != "" {
			c.Name = proto.String(local(b.GetName()))
		}
		for _, in := range b.GetInput() {
			if in == "" {
				c.Input = append(c.Input, "")
				continue
			}
			c.Input = append(c.Input, local(in))
		}
		for _, o := range b.GetOutput() {
			c.Output = append(c.Output, local(o))
		}
		for _, a := range b.GetAttribute() {
			if a.GetG() != nil || len(a.GetGraphs()) > 0 {
				return nil, fmt.Errorf("node %q: function %s has a subgraph attribute, which inlining does not support", n.GetName(), f.GetName())
			}
			if ref := a.GetRefAttrName(); ref != "" {
				src, ok := callerAttrs[ref]
				if !ok {
					continue
				}
				resolved := proto.Clone(src).(*onnxpb.AttributeProto)
				resolved.Name = a.Name
				a = resolved
			}
			c.Attribute = append(c.Attribute, a)
		}
		out = append(out, c)
	}
	return out, nil
}
