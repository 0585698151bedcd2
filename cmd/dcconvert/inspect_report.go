package main

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// InspectSchema is the version of the layout of InspectReport's JSON form.
// Fields may be added without changing it; it is increased when a field is
// renamed or removed or changes its meaning.
const InspectSchema = 1

// InspectReport is what "dcconvert inspect" reports about a model, and the
// JSON document "dcconvert inspect --json" writes. Its JSON field names are
// an interface for scripts (see InspectSchema). Every list is present,
// empty rather than null; a shape that is not known is null.
//
//	{
//	  "schema": 1,
//	  "file": "vgg16.onnx",
//	  "producer_name": "pytorch",
//	  "producer_version": "2.1.0",
//	  "ir_version": 8,
//	  "opsets": [{"domain": "ai.onnx", "version": 17}],
//	  "graph": "main_graph",
//	  "inputs": [{"name": "input", "type": "FLOAT", "shape": ["batch_size", 3, 224, 224], "shape_from": "declared"}],
//	  "outputs": [{"name": "output", "type": "FLOAT", "shape": ["batch_size", 1000], "shape_from": "inferred"}],
//	  "nodes": 41,
//	  "operators": [{"op": "Relu", "count": 15}, {"op": "Conv", "count": 13}],
//	  "convs": [{"name": "/features/features.0/Conv", "in_channels": 3, ...}],
//	  "rewritable": 13,
//	  "parameters": 138357544,
//	  "warnings": []
//	}
type InspectReport struct {
	// Schema is InspectSchema.
	Schema int `json:"schema"`
	// File is the model file as it was named on the command line.
	File string `json:"file"`
	// ProducerName and ProducerVersion say what wrote the model; either may
	// be empty.
	ProducerName    string `json:"producer_name"`
	ProducerVersion string `json:"producer_version"`
	// IRVersion is the ONNX IR version of the file.
	IRVersion int64 `json:"ir_version"`
	// Opsets lists the imported operator sets, the default domain
	// ("ai.onnx") first, then by domain.
	Opsets []InspectOpset `json:"opsets"`
	// Graph is the name of the main graph.
	Graph string `json:"graph"`
	// Inputs lists the graph inputs the caller feeds, in graph order. Inputs
	// that only give an initializer its place (as IR 3 requires) are left
	// out.
	Inputs []InspectValue `json:"inputs"`
	// Outputs lists the graph outputs in graph order.
	Outputs []InspectValue `json:"outputs"`
	// Nodes is the number of nodes of the main graph.
	Nodes int `json:"nodes"`
	// Operators counts the nodes of each operator type, most frequent first,
	// then by name. Operators of other domains than the default one are
	// written "domain.Op".
	Operators []InspectOpCount `json:"operators"`
	// Convs describes each Conv node, in graph order.
	Convs []InspectConv `json:"convs"`
	// Rewritable is the number of Convs that can be rewritten.
	Rewritable int `json:"rewritable"`
	// Decoupled is the number of decoupled convolutions.
	Decoupled int `json:"decoupled"`
	// Parameters is the number of elements of every floating-point
	// initializer (float, double, float16, bfloat16), counted from the
	// dimensions. It includes BatchNormalization running statistics, which
	// torch's parameters() leaves out, and leaves out tensors of Constant
	// nodes and integer initializers.
	Parameters int64 `json:"parameters"`
	// Warnings lists problems that did not stop the inspection, one per
	// element: nodes whose output shapes could not be inferred (an
	// unsupported operator, say) and outputs whose declared shape
	// contradicts the inferred one.
	Warnings []string `json:"warnings"`
}

// InspectOpset is one imported operator set.
type InspectOpset struct {
	// Domain is the operator domain, "ai.onnx" for the default one.
	Domain string `json:"domain"`
	// Version is the imported version.
	Version int64 `json:"version"`
}

// InspectValue is a graph input or output.
type InspectValue struct {
	// Name is the value's name.
	Name string `json:"name"`
	// Type is the declared element type ("FLOAT", "INT64", ...), or empty
	// when the value is not declared as a tensor.
	Type string `json:"type"`
	// Shape is the value's shape, or null when it is not known.
	Shape Shape `json:"shape"`
	// ShapeFrom says where Shape comes from: "declared" (the model's own
	// declaration), "inferred" (shape inference, preferred for outputs),
	// or "" when the shape is not known.
	ShapeFrom string `json:"shape_from"`
}

// InspectOpCount is the number of nodes of one operator type.
type InspectOpCount struct {
	// Op is the operator type, prefixed with "domain." outside the default
	// domain.
	Op string `json:"op"`
	// Count is the number of nodes.
	Count int `json:"count"`
}

// InspectConv describes one Conv node. Sizes that cannot be known (the
// input shape could not be inferred, say) are 0 and lists null.
type InspectConv struct {
	// Name is the node's name, or "#i" (its index in the graph) when it has
	// none.
	Name string `json:"name"`
	// Input, Weight and Bias name the node's inputs; Bias is empty when the
	// node has none.
	Input  string `json:"input"`
	Weight string `json:"weight"`
	Bias   string `json:"bias"`
	// InChannels and OutChannels are the channels of the input and output.
	InChannels  int64 `json:"in_channels"`
	OutChannels int64 `json:"out_channels"`
	// Kernel, Strides and Dilations hold one value per spatial axis.
	Kernel    []int64 `json:"kernel"`
	Strides   []int64 `json:"strides"`
	Dilations []int64 `json:"dilations"`
	// AutoPad is the auto_pad attribute: NOTSET, SAME_UPPER, SAME_LOWER or
	// VALID.
	AutoPad string `json:"auto_pad"`
	// Pads holds the begin pad of each spatial axis, then the end pads, as
	// ONNX's pads attribute does. For SAME_UPPER and SAME_LOWER they are
	// the pads the input shape resolves to, and null when it is not known.
	Pads []int64 `json:"pads"`
	// Group is the group attribute.
	Group int64 `json:"group"`
	// Parameters is the number of elements of the weight and the bias.
	Parameters int64 `json:"parameters"`
	// OutputShape is the shape of the output, or null when not known.
	OutputShape Shape `json:"output_shape"`
	// Rewritable says whether the rewrite into a decoupled convolution
	// applies: a default-domain Conv with group 1 and a 4-D weight stored
	// as an initializer.
	Rewritable bool `json:"rewritable"`
	// Reason says why the node is not rewritable, problems separated by
	// "; "; empty when it is or when the node is already decoupled.
	Reason string `json:"reason"`
	// Decoupled describes a decoupled convolution; null for a plain Conv.
	Decoupled *InspectDecoupled `json:"decoupled"`
}

// InspectDecoupled is the configuration of a decoupled convolution.
type InspectDecoupled struct {
	// OpType is the node's op type, DecoupledConv_<key>.
	OpType string `json:"op_type"`
	// Operator is the configuration in short form, e.g. "ball(rho=learn) x
	// cos".
	Operator string `json:"operator"`
	// Config is the configuration as in metadata ai.dcnet.layers.
	Config *dcnet.LayerInfo `json:"config"`
	// Calibrated is false for a learnable radius whose RhoScale has not
	// been estimated from data yet.
	Calibrated bool `json:"calibrated"`
	// Error says why the configuration could not be read; empty when it
	// could.
	Error string `json:"error,omitempty"`
}

// Where a value's shape comes from (InspectValue.ShapeFrom).
const (
	shapeDeclared = "declared"
	shapeInferred = "inferred"
)

// newInspectReport describes m; file is the name to report for it. It
// decodes no tensor data: sizes come from the declared dimensions.
func newInspectReport(file string, m *onnximport.Model) *InspectReport {
	p := m.Proto
	g := m.Graph()
	r := &InspectReport{
		Schema:          InspectSchema,
		File:            file,
		ProducerName:    p.GetProducerName(),
		ProducerVersion: p.GetProducerVersion(),
		IRVersion:       p.GetIrVersion(),
		Opsets:          inspectOpsets(m.Opsets()),
		Graph:           g.GetName(),
		Inputs:          []InspectValue{},
		Outputs:         []InspectValue{},
		Nodes:           len(g.GetNode()),
		Operators:       inspectOperators(g.GetNode()),
		Convs:           []InspectConv{},
		Warnings:        []string{},
	}

	shapes, err := m.InferShapes()
	if err != nil {
		r.Warnings = append(r.Warnings, errorLines(err)...)
	}
	r.Parameters = floatParameters(g)
	inits := m.Initializers()

	for _, in := range g.GetInput() {
		if _, ok := inits[in.GetName()]; ok {
			continue
		}
		v := InspectValue{Name: in.GetName(), Type: elemType(in)}
		if sh, ok := onnximport.DeclaredShape(in); ok {
			v.Shape, v.ShapeFrom = Shape(sh), shapeDeclared
		}
		r.Inputs = append(r.Inputs, v)
	}
	for _, out := range g.GetOutput() {
		v := InspectValue{Name: out.GetName(), Type: elemType(out)}
		declared, hasDeclared := onnximport.DeclaredShape(out)
		if sh, ok := shapes[out.GetName()]; ok {
			v.Shape, v.ShapeFrom = Shape(sh), shapeInferred
			if hasDeclared && contradicts(Shape(declared), v.Shape) {
				r.Warnings = append(r.Warnings, fmt.Sprintf("output %q is declared %v but inferred %v", out.GetName(), declared, v.Shape))
			}
		} else if hasDeclared {
			v.Shape, v.ShapeFrom = Shape(declared), shapeDeclared
		}
		r.Outputs = append(r.Outputs, v)
	}

	constants := map[string]bool{} // outputs of Constant nodes
	for _, n := range g.GetNode() {
		if n.GetOpType() == onnximport.OpConstant && len(n.GetOutput()) > 0 {
			constants[n.GetOutput()[0]] = true
		}
	}
	uncalibrated := map[string]bool{}
	if v, ok := rewrite.Metadata(p, dcnet.MetaUncalibrated); ok {
		for _, name := range strings.Split(v, ",") {
			uncalibrated[name] = true
		}
	}
	for i, n := range g.GetNode() {
		decoupled := onnximport.IsDecoupledConv(n)
		if !decoupled && (n.GetOpType() != onnximport.OpConv || !onnximport.IsDefaultDomain(n.GetDomain())) {
			continue
		}
		c := inspectConv(i, n, m, shapes, inits)
		if decoupled {
			c.Decoupled = inspectDecoupled(n, uncalibrated, constants)
			r.Decoupled++
		}
		if c.Rewritable {
			r.Rewritable++
		}
		r.Convs = append(r.Convs, c)
	}
	return r
}

// inspectOpsets lists opsets with the default domain first.
func inspectOpsets(opsets map[string]int64) []InspectOpset {
	out := make([]InspectOpset, 0, len(opsets))
	for d, v := range opsets {
		out = append(out, InspectOpset{Domain: d, Version: v})
	}
	slices.SortFunc(out, func(a, b InspectOpset) int {
		ad, bd := a.Domain == onnximport.DefaultDomain, b.Domain == onnximport.DefaultDomain
		if ad != bd {
			if ad {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Domain, b.Domain)
	})
	return out
}

// inspectOperators counts nodes by operator, most frequent first.
func inspectOperators(nodes []*onnxpb.NodeProto) []InspectOpCount {
	counts := map[string]int{}
	for _, n := range nodes {
		counts[opName(n)]++
	}
	out := make([]InspectOpCount, 0, len(counts))
	for op, c := range counts {
		out = append(out, InspectOpCount{Op: op, Count: c})
	}
	slices.SortFunc(out, func(a, b InspectOpCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Op, b.Op)
	})
	return out
}

// opName is a node's operator type, prefixed with its domain outside the
// default one.
func opName(n *onnxpb.NodeProto) string {
	if d := n.GetDomain(); !onnximport.IsDefaultDomain(d) {
		return d + "." + n.GetOpType()
	}
	return n.GetOpType()
}

// inspectConv describes the Conv node n, the i-th node of the graph.
func inspectConv(i int, n *onnxpb.NodeProto, m *onnximport.Model, shapes onnximport.Shapes, inits map[string]*onnxpb.TensorProto) InspectConv {
	c := InspectConv{
		Name:    n.GetName(),
		Group:   onnximport.AttrInt(n, "group", 1),
		AutoPad: onnximport.AttrString(n, "auto_pad", "NOTSET"),
	}
	if c.Name == "" {
		c.Name = fmt.Sprintf("#%d", i)
	}
	in := n.GetInput()
	input := func(k int) string {
		if k < len(in) {
			return in[k]
		}
		return ""
	}
	c.Input, c.Weight, c.Bias = input(0), input(1), input(2)
	if out := n.GetOutput(); len(out) > 0 {
		if sh, ok := shapes[out[0]]; ok {
			c.OutputShape = Shape(sh)
		}
	}
	x := Shape(shapes[c.Input])
	w := Shape(shapes[c.Weight])
	if t, ok := inits[c.Weight]; ok {
		w = Shape(onnximport.ShapeOf(t.GetDims()...))
	}

	reasons := rewrite.Problems(m, n)
	if onnximport.IsDecoupledConv(n) {
		reasons = nil // reported as decoupled instead
	}

	// Geometry.
	var kernel []int64
	if len(w) > 2 {
		kernel, _ = onnximport.Shape(w[2:]).Static()
	}
	win, err := onnximport.ParseWindow(n, kernel)
	if err != nil {
		reasons = append(reasons, err.Error())
		c.Kernel = onnximport.AttrInts(n, "kernel_shape")
		if c.Kernel == nil {
			c.Kernel = kernel
		}
	} else {
		c.Kernel, c.Strides, c.Dilations = win.Kernel, win.Strides, win.Dilations
		switch win.AutoPad {
		case "NOTSET":
			c.Pads = win.Pads
		case "VALID":
			c.Pads = make([]int64, len(win.Pads))
		default: // SAME_UPPER, SAME_LOWER: the input size decides.
			if len(x) == len(win.Kernel)+2 {
				if _, known := onnximport.Shape(x[2:]).Static(); known {
					if _, pads, err := win.Output(x[2:]); err == nil {
						c.Pads = pads
					}
				}
			}
		}
	}

	// Channels and parameters.
	if len(x) > 1 && x[1].Known() {
		c.InChannels = x[1].Size
	} else if len(w) > 1 && w[1].Known() {
		c.InChannels = w[1].Size * c.Group
	}
	if len(w) > 0 && w[0].Known() {
		c.OutChannels = w[0].Size
	}
	if nw, ok := w.elements(); ok {
		c.Parameters += nw
	}
	if c.Bias != "" {
		b := Shape(shapes[c.Bias])
		if t, ok := inits[c.Bias]; ok {
			b = Shape(onnximport.ShapeOf(t.GetDims()...))
		}
		if nb, ok := b.elements(); ok {
			c.Parameters += nb
		}
	}

	c.Rewritable = len(reasons) == 0 && !onnximport.IsDecoupledConv(n)
	c.Reason = strings.Join(reasons, "; ")
	return c
}

// inspectDecoupled describes the configuration of a decoupled node.
func inspectDecoupled(n *onnxpb.NodeProto, uncalibrated, constants map[string]bool) *InspectDecoupled {
	d := &InspectDecoupled{OpType: n.GetOpType()}
	cfg, err := dcnet.FromNode(n)
	if err != nil {
		d.Error = err.Error()
		return d
	}
	// An output scale fed by a Constant (the neutral ones a rewrite adds
	// before a learnable radius) is not a trained scale.
	if in := n.GetInput(); cfg.ChannelScale && len(in) > dcnet.IndexAlpha && constants[in[dcnet.IndexAlpha]] {
		cfg.ChannelScale = false
	}
	info := dcnet.LayerInfoOf(cfg)
	d.Operator, d.Config = cfg.Summary(), &info
	d.Calibrated = !(cfg.LearnRho && uncalibrated[n.GetName()])
	return d
}

// elemType names the element type of a value declared as a tensor.
func elemType(v *onnxpb.ValueInfoProto) string {
	tt := v.GetType().GetTensorType()
	if tt == nil {
		return ""
	}
	return onnxpb.TensorProto_DataType(tt.GetElemType()).String()
}

// contradicts reports whether a declared and an inferred shape disagree:
// different ranks, or a dimension both know with different sizes.
func contradicts(declared, inferred Shape) bool {
	if len(declared) != len(inferred) {
		return true
	}
	for i, d := range declared {
		if d.Known() && inferred[i].Known() && d.Size != inferred[i].Size {
			return true
		}
	}
	return false
}

// errorLines splits an error that joins several problems into one message
// per problem.
func errorLines(err error) []string {
	var out []string
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, errorLines(e)...)
		}
		return out
	}
	for _, l := range strings.Split(err.Error(), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}
