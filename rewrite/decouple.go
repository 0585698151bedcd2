package rewrite

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// nameNodes gives every unnamed Conv a name unique in the graph, so that
// layers can be selected, reported and given initializers by name.
func nameNodes(st *State) error {
	g := st.Model.Graph()
	used := map[string]bool{}
	for _, n := range g.GetNode() {
		used[n.GetName()] = true
	}
	for _, t := range g.GetInitializer() {
		used[t.GetName()] = true
	}
	for i, n := range g.GetNode() {
		if n.GetName() != "" || n.GetOpType() != onnximport.OpConv {
			continue
		}
		name := fmt.Sprintf("Conv_%d", i)
		for k := 1; used[name]; k++ {
			name = fmt.Sprintf("Conv_%d_%d", i, k)
		}
		used[name] = true
		n.Name = proto.String(name)
	}
	return nil
}

// Names of the initializers a decoupled node adds.
func rhoVName(node string) string     { return node + ".rho_v" }
func rhoScaleName(node string) string { return node + ".rho_scale" }

// decouple replaces every selected Conv by a DecoupledConv node with the
// same name, inputs, output and attributes, adds the learnable-radius
// initializers where the configuration has them, and imports the ai.dcnet
// domain.
func decouple(st *State) error {
	g := st.Model.Graph()
	names := map[string]bool{}
	for _, t := range g.GetInitializer() {
		names[t.GetName()] = true
	}
	layers := convLayers(g)
	indexOf := map[int]int{}
	for _, l := range layers {
		indexOf[l.node] = l.index
	}
	selected := map[int]bool{}
	for _, i := range st.Selected {
		selected[i] = true
	}
	var nodes []*onnxpb.NodeProto
	for i, n := range g.GetNode() {
		if !selected[i] {
			nodes = append(nodes, n)
			continue
		}
		w, _ := st.Model.Initializer(n.GetInput()[1])
		cout := w.GetDims()[0]

		cfg := st.Options.Config
		cfg.LearnRho = cfg.LearnRho && cfg.NeedsRho()
		in := n.GetInput()
		cfg.Bias = len(in) > 2 && in[2] != ""
		cfg.ChannelScale = false
		summary := cfg.Summary() // before neutral inputs are filled in
		actual := []string{in[0], in[1], "", "", "", ""}
		if cfg.Bias {
			actual[2] = in[2]
		}
		if cfg.LearnRho {
			v, s := rhoVName(n.GetName()), rhoScaleName(n.GetName())
			for _, name := range []string{v, s} {
				if names[name] {
					return fmt.Errorf("layer %q: initializer %q already exists", n.GetName(), name)
				}
				names[name] = true
			}
			actual[4], actual[5] = v, s
			g.Initializer = append(g.Initializer, constTensor(v, []int64{cout}, 1), constTensor(s, nil, 1))

			// A function call with an empty input fails onnx's function
			// shape inference (and so onnx.checker's full check): the
			// absent bias and output scale before RhoV are fed their
			// neutral values by Constant nodes, which leaves the
			// outputs unchanged and adds no parameter.
			if !cfg.Bias {
				cfg.Bias = true
				actual[2] = neutralName(n.GetName(), "bias")
				nodes = append(nodes, constNode(actual[2], cout, 0))
			}
			cfg.ChannelScale = true
			actual[3] = neutralName(n.GetName(), "alpha")
			nodes = append(nodes, constNode(actual[3], cout, 1))
		}
		actual = actual[:len(cfg.Inputs())]

		attrs := make([]*onnxpb.AttributeProto, 0, len(n.GetAttribute())+8)
		for _, a := range n.GetAttribute() {
			attrs = append(attrs, a)
		}
		attrs = append(attrs, cfg.Attributes()...)
		nodes = append(nodes, &onnxpb.NodeProto{
			Name:      n.Name,
			Input:     actual,
			Output:    n.GetOutput(),
			OpType:    proto.String(cfg.OpType()),
			Domain:    proto.String(dcnet.Domain),
			Attribute: attrs,
			DocString: n.DocString,
		})
		out := ""
		if sh, ok := st.Shapes[n.GetOutput()[0]]; ok {
			out = sh.String()
		}
		st.Report.Layers = append(st.Report.Layers, Layer{
			Index:    indexOf[i],
			Name:     n.GetName(),
			Weight:   append([]int64(nil), w.GetDims()...),
			Output:   out,
			Operator: summary,
			OpType:   cfg.OpType(),
		})
		if cfg.LearnRho {
			st.Report.Uncalibrated = append(st.Report.Uncalibrated, n.GetName())
		}
	}
	g.Node = nodes
	importDomain(st.Model)
	return nil
}

// neutralName names the output of a Constant node that feeds a decoupled
// node's optional input its neutral value.
func neutralName(node, input string) string { return node + "." + input + "_const" }

// constNode is a Constant node producing a float32 vector of n values v,
// named after its output.
func constNode(output string, n int64, v float32) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{
		Name:   proto.String(output),
		OpType: proto.String(onnximport.OpConstant),
		Output: []string{output},
		Attribute: []*onnxpb.AttributeProto{{
			Name: proto.String("value"),
			Type: onnxpb.AttributeProto_TENSOR.Enum(),
			T:    constTensor("", []int64{n}, v),
		}},
	}
}

// constTensor returns a float32 initializer filled with v.
func constTensor(name string, dims []int64, v float32) *onnxpb.TensorProto {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = v
	}
	return onnximport.FloatTensor(name, dims, vals)
}
