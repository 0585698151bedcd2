package engine

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// handler builds the Gorgonia form of one node.
type handler func(b *builder, i int, n *onnxpb.NodeProto) error

// handlers maps each supported default-domain operator to its builder.
// Decoupled convolutions (domain ai.dcnet) are handled apart.
var handlers = map[string]handler{
	onnximport.OpAdd:                (*builder).binary,
	onnximport.OpSub:                (*builder).binary,
	onnximport.OpMul:                (*builder).binary,
	onnximport.OpDiv:                (*builder).binary,
	onnximport.OpAveragePool:        (*builder).pool,
	onnximport.OpBatchNormalization: (*builder).batchNorm,
	onnximport.OpCast:               (*builder).cast,
	onnximport.OpClip:               (*builder).clip,
	onnximport.OpConcat:             (*builder).concat,
	onnximport.OpConstant:           (*builder).constant,
	onnximport.OpConv:               (*builder).conv,
	onnximport.OpDropout:            (*builder).dropout,
	onnximport.OpFlatten:            (*builder).reshape,
	onnximport.OpGather:             (*builder).gather,
	onnximport.OpGemm:               (*builder).gemm,
	onnximport.OpGlobalAveragePool:  (*builder).globalAvgPool,
	onnximport.OpIdentity:           (*builder).identity,
	onnximport.OpLeakyRelu:          (*builder).unary,
	onnximport.OpLogSoftmax:         (*builder).softmax,
	onnximport.OpMatMul:             (*builder).matMul,
	onnximport.OpMaxPool:            (*builder).pool,
	onnximport.OpRelu:               (*builder).unary,
	onnximport.OpReshape:            (*builder).reshape,
	onnximport.OpShape:              (*builder).shape,
	onnximport.OpSigmoid:            (*builder).unary,
	onnximport.OpSoftmax:            (*builder).softmax,
	onnximport.OpSqueeze:            (*builder).reshape,
	onnximport.OpTanh:               (*builder).unary,
	onnximport.OpUnsqueeze:          (*builder).reshape,
}

// decoupledOps names the decoupled convolutions in Supported.
const decoupledOps = onnximport.DecoupledDomain + "." + onnximport.DecoupledOpPrefix + "*"

// Supported returns the operators the engine runs, sorted: the
// default-domain operator types, then "ai.dcnet.DecoupledConv*" for the
// decoupled convolutions. Shape, Gather and Cast to an integer type are
// supported only where they compute constants (shape computations, such
// as the target of a Reshape).
func Supported() []string {
	ops := make([]string, 0, len(handlers)+1)
	for op := range handlers {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	return append(ops, decoupledOps)
}

// nodeDesc names a node in messages: `node "conv1" (Conv)`, or `node #3
// (Conv)` when it has no name; ops outside the default domain carry their
// domain.
func nodeDesc(i int, n *onnxpb.NodeProto) string {
	op := n.GetOpType()
	if !onnximport.IsDefaultDomain(n.GetDomain()) {
		op = n.GetDomain() + "." + op
	}
	if n.GetName() != "" {
		return fmt.Sprintf("node %q (%s)", n.GetName(), op)
	}
	return fmt.Sprintf("node #%d (%s)", i, op)
}

// Check reports, before anything is built or run, every node of the main
// graph the engine cannot run, by node name and operator type, followed
// by the list of supported operators; the problems are joined with
// errors.Join. A model whose decoupled convolutions have been inlined
// (no ai.dcnet nodes) runs as the standard operators it consists of if
// they are supported, and is refused here, naming them, if not.
func Check(m *onnximport.Model) error {
	if m == nil || m.Proto == nil || m.Graph() == nil {
		return errors.New("model has no graph")
	}
	opset := m.Opset("")
	static := staticInts(m)
	consts := constantValues(m)
	var errs []error
	for i, n := range m.Graph().GetNode() {
		if onnximport.IsDecoupledConv(n) {
			if _, err := dcnet.FromNode(n); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := checkNode(n, opset, static, consts); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", nodeDesc(i, n), err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	if inlinedDecoupled(m) {
		// The inline form spells each decoupled convolution out in
		// standard operators; the engine runs the function form, whose
		// nodes it computes in one fused operation.
		errs = append([]error{fmt.Errorf("the model holds decoupled convolutions in inline form (metadata %s lists them but no %s node is left); "+
			"the engine runs the function form: rewrite the source model without --inline", dcnet.MetaLayers, dcnet.Domain)}, errs...)
	}
	const most = 20
	if len(errs) > most {
		errs = append(errs[:most:most], fmt.Errorf("and %d more", len(errs)-most))
	}
	errs = append(errs, fmt.Errorf("the engine supports %s", strings.Join(Supported(), ", ")))
	return errors.Join(errs...)
}

// inlinedDecoupled reports whether m records decoupled layers in its
// metadata but has no decoupled node: a model rewritten with --inline.
func inlinedDecoupled(m *onnximport.Model) bool {
	listed := false
	for _, kv := range m.Proto.GetMetadataProps() {
		if kv.GetKey() == dcnet.MetaLayers && kv.GetValue() != "{}" && kv.GetValue() != "" {
			listed = true
		}
	}
	if !listed {
		return false
	}
	for _, n := range m.Graph().GetNode() {
		if onnximport.IsDecoupledConv(n) {
			return false
		}
	}
	return true
}

// checkNode reports why a default-domain node cannot run, or nil.
func checkNode(n *onnxpb.NodeProto, opset int64, static, consts map[string]bool) error {
	if !onnximport.IsDefaultDomain(n.GetDomain()) {
		return fmt.Errorf("domain %q is not supported", n.GetDomain())
	}
	op := n.GetOpType()
	if _, ok := handlers[op]; !ok {
		return errors.New("operator is not supported")
	}
	in := n.GetInput()
	input := func(i int) string {
		if i < len(in) {
			return in[i]
		}
		return ""
	}
	switch op {
	case onnximport.OpGather:
		if !static[input(0)] || !static[input(1)] {
			return errors.New("supported only on constant integer tensors (shape computations)")
		}
	case onnximport.OpCast:
		to := onnxpb.TensorProto_DataType(onnximport.AttrInt(n, "to", 0))
		switch {
		case to == onnxpb.TensorProto_FLOAT16 || to == onnxpb.TensorProto_BFLOAT16:
			return fmt.Errorf("casting to %s is not supported (the engine computes in float32 or float64)", to)
		case onnximport.IsFloatType(to):
		case !isIntType(to):
			return fmt.Errorf("casting to %s is not supported", to)
		case !static[input(0)]:
			return fmt.Errorf("casting to %s is supported only on constant integer tensors (shape computations)", to)
		}
	case onnximport.OpAdd, onnximport.OpSub, onnximport.OpMul, onnximport.OpDiv:
		if static[input(0)] || static[input(1)] {
			return errors.New("integer arithmetic is not supported")
		}
	case onnximport.OpReshape:
		if !static[input(1)] {
			return fmt.Errorf("target shape %q is not a constant", input(1))
		}
	case onnximport.OpClip:
		if opset >= 11 && (onnximport.Attr(n, "min") != nil || onnximport.Attr(n, "max") != nil) {
			return errors.New("attributes min and max were replaced by inputs in opset 11")
		}
		for _, name := range []string{input(1), input(2)} {
			if opset >= 11 && name != "" && !consts[name] {
				return fmt.Errorf("bound %q is not a constant", name)
			}
		}
	case onnximport.OpDropout:
		if opset >= 12 && input(1) != "" && !consts[input(1)] {
			return fmt.Errorf("ratio %q is not a constant", input(1))
		}
	case onnximport.OpBatchNormalization:
		if opset < 9 && onnximport.AttrInt(n, "spatial", 1) == 0 {
			return errors.New("spatial=0 (per-activation statistics) is not supported")
		}
	case onnximport.OpMaxPool:
		if len(n.GetOutput()) > 1 && n.GetOutput()[1] != "" {
			return errors.New("output Indices is not supported")
		}
	}
	return nil
}

// isIntType reports whether a data type is an integer or boolean type.
func isIntType(dt onnxpb.TensorProto_DataType) bool {
	switch dt {
	case onnxpb.TensorProto_INT8, onnxpb.TensorProto_INT16, onnxpb.TensorProto_INT32, onnxpb.TensorProto_INT64,
		onnxpb.TensorProto_UINT8, onnxpb.TensorProto_UINT16, onnxpb.TensorProto_UINT32, onnxpb.TensorProto_UINT64,
		onnxpb.TensorProto_BOOL:
		return true
	}
	return false
}

// shapeOnlyOps pass constant integer tensors through: their output is a
// constant integer tensor when all their inputs are.
var shapeOnlyOps = map[string]bool{
	onnximport.OpIdentity: true, onnximport.OpUnsqueeze: true, onnximport.OpSqueeze: true,
	onnximport.OpConcat: true, onnximport.OpGather: true, onnximport.OpReshape: true,
	onnximport.OpFlatten: true, onnximport.OpCast: true,
}

// staticInts returns the names of the values of the main graph that are
// constant integer tensors: integer initializers and Constants, Shape
// outputs, and what shapeOnlyOps compute from them.
func staticInts(m *onnximport.Model) map[string]bool {
	static := map[string]bool{}
	for _, t := range m.Graph().GetInitializer() {
		if isIntType(onnxpb.TensorProto_DataType(t.GetDataType())) {
			static[t.GetName()] = true
		}
	}
	for _, n := range m.Graph().GetNode() {
		if !onnximport.IsDefaultDomain(n.GetDomain()) || len(n.GetOutput()) == 0 {
			continue
		}
		out := n.GetOutput()[0]
		switch op := n.GetOpType(); {
		case op == onnximport.OpShape:
			static[out] = true
		case op == onnximport.OpConstant:
			static[out] = constantIsInt(n)
		case shapeOnlyOps[op]:
			all := len(n.GetInput()) > 0
			for _, in := range n.GetInput() {
				all = all && (in == "" || static[in])
			}
			if op == onnximport.OpCast {
				all = all && isIntType(onnxpb.TensorProto_DataType(onnximport.AttrInt(n, "to", 0)))
			}
			static[out] = all
		}
	}
	return static
}

// constantIsInt reports whether a Constant node produces integers.
func constantIsInt(n *onnxpb.NodeProto) bool {
	for _, a := range n.GetAttribute() {
		switch a.GetName() {
		case "value":
			return isIntType(onnxpb.TensorProto_DataType(a.GetT().GetDataType()))
		case "value_int", "value_ints":
			return true
		}
	}
	return false
}

// constantValues returns the names of the values known before the graph
// runs: initializers, Constant outputs, Shape outputs and what
// shapeOnlyOps compute from constants.
func constantValues(m *onnximport.Model) map[string]bool {
	consts := map[string]bool{}
	for _, t := range m.Graph().GetInitializer() {
		consts[t.GetName()] = true
	}
	for _, n := range m.Graph().GetNode() {
		if !onnximport.IsDefaultDomain(n.GetDomain()) || len(n.GetOutput()) == 0 {
			continue
		}
		out := n.GetOutput()[0]
		switch op := n.GetOpType(); {
		case op == onnximport.OpConstant || op == onnximport.OpShape:
			consts[out] = true
		case shapeOnlyOps[op]:
			all := len(n.GetInput()) > 0
			for _, in := range n.GetInput() {
				all = all && (in == "" || consts[in])
			}
			consts[out] = all
		}
	}
	return consts
}

// boundModel returns a shallow copy of m whose graph inputs (other than
// initializers) declare batch as their first dimension, so that shape
// inference gives static shapes. Nodes and initializers are shared, not
// copied.
func boundModel(m *onnximport.Model, batch int) (*onnximport.Model, []error) {
	g := m.Graph()
	inits := m.Initializers()
	var errs []error
	inputs := make([]*onnxpb.ValueInfoProto, 0, len(g.GetInput()))
	for _, in := range g.GetInput() {
		if _, ok := inits[in.GetName()]; ok {
			inputs = append(inputs, in)
			continue
		}
		bound, err := bindBatch(in, batch)
		if err != nil {
			errs = append(errs, fmt.Errorf("graph input %q: %w", in.GetName(), err))
			continue
		}
		inputs = append(inputs, bound)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	bm := *m
	bm.Proto = shallowModel(m, inputs)
	return &bm, nil
}

// bindBatch returns a copy of a graph input declaration whose first
// dimension is batch.
func bindBatch(in *onnxpb.ValueInfoProto, batch int) (*onnxpb.ValueInfoProto, error) {
	tt := in.GetType().GetTensorType()
	if tt == nil {
		return nil, errors.New("is not a tensor")
	}
	if dt := onnxpb.TensorProto_DataType(tt.GetElemType()); !onnximport.IsFloatType(dt) {
		return nil, fmt.Errorf("element type %s is not supported (only floating-point inputs are)", dt)
	}
	if tt.GetShape() == nil || len(tt.GetShape().GetDim()) == 0 {
		return nil, errors.New("declares no shape with a batch dimension")
	}
	out := proto.Clone(in).(*onnxpb.ValueInfoProto)
	dims := out.GetType().GetTensorType().GetShape().GetDim()
	dims[0].Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(batch)}
	for i, d := range dims[1:] {
		if _, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); !ok || d.GetDimValue() < 0 {
			return nil, fmt.Errorf("dimension %d is not fixed (only the first, the batch, may be symbolic)", i+1)
		}
	}
	return out, nil
}

// shallowModel returns a model message sharing m's nodes, initializers
// and metadata, with the given graph inputs.
func shallowModel(m *onnximport.Model, inputs []*onnxpb.ValueInfoProto) *onnxpb.ModelProto {
	p, g := m.Proto, m.Graph()
	return &onnxpb.ModelProto{
		IrVersion:     p.IrVersion,
		OpsetImport:   p.GetOpsetImport(),
		MetadataProps: p.GetMetadataProps(),
		Functions:     p.GetFunctions(),
		Graph: &onnxpb.GraphProto{
			Name:        g.Name,
			Node:        g.GetNode(),
			Initializer: g.GetInitializer(),
			Input:       inputs,
			Output:      g.GetOutput(),
			ValueInfo:   g.GetValueInfo(),
		},
	}
}

// value is one value of the ONNX graph as the builder knows it: a
// Gorgonia node, or a constant integer tensor folded at build time.
type value struct {
	node  *G.Node
	shape []int
	// ints holds the data of a folded integer tensor (node is nil).
	ints []int64
	// floats holds the data of a float constant known at build time.
	floats []float64
	// constant marks values known before the graph runs.
	constant bool
}

// builder turns the nodes of a model into a Gorgonia graph.
type builder struct {
	m      *onnximport.Model // the batch-bound model
	opts   Options
	dt     Float
	train  bool
	g      *G.ExprGraph
	opset  int64
	shapes onnximport.Shapes
	inits  map[string]*onnxpb.TensorProto
	vals   map[string]*value
	// source maps a value to the initializer it is (directly or through
	// Identity nodes).
	source map[string]string
	// uses counts the parameter and state uses of each initializer, for
	// naming the second and later ones.
	uses         map[string]int
	producer     map[string]*onnxpb.NodeProto
	uncalibrated map[string]bool
	e            *Engine
}

// Build checks the model (see Check) and builds its engine: a Gorgonia
// graph of the main graph's nodes in order, for opts.Batch samples, with,
// in Training mode, the loss and the gradient of every parameter (see
// Step and Params). The model is not changed; parameters and statistics
// are copied out of it.
func Build(m *onnximport.Model, opts Options) (e *Engine, err error) {
	if opts.DType == (Float{}) {
		opts.DType = Float32
	}
	var errs []error
	if opts.Mode != Inference && opts.Mode != Training {
		errs = append(errs, fmt.Errorf("mode %d is neither Inference nor Training", int(opts.Mode)))
	}
	if opts.Batch < 0 {
		errs = append(errs, fmt.Errorf("batch size %d must not be negative", opts.Batch))
	}
	if opts.DType != Float32 && opts.DType != Float64 {
		errs = append(errs, fmt.Errorf("element type %v is neither float32 nor float64", opts.DType))
	}
	if !(opts.LabelSmoothing >= 0 && opts.LabelSmoothing < 1) {
		errs = append(errs, fmt.Errorf("label smoothing %v is outside [0, 1)", opts.LabelSmoothing))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("building the engine: %w", errors.Join(errs...))
	}
	if err := Check(m); err != nil {
		return nil, err
	}
	bm := m // Batch 0: the shapes the model declares
	if opts.Batch > 0 {
		var berrs []error
		if bm, berrs = boundModel(m, opts.Batch); len(berrs) > 0 {
			return nil, errors.Join(berrs...)
		}
	}
	shapes, err := bm.InferShapes()
	if err != nil {
		return nil, fmt.Errorf("inferring shapes: %w", err)
	}

	// Gorgonia panics on some inputs it does not expect; no panic leaves
	// the engine.
	defer func() {
		if r := recover(); r != nil {
			e, err = nil, fmt.Errorf("building the engine: gorgonia: %v", r)
		}
	}()
	b := &builder{
		m:            bm,
		opts:         opts,
		dt:           opts.DType,
		train:        opts.Mode == Training,
		g:            G.NewGraph(),
		opset:        m.Opset(""),
		shapes:       shapes,
		inits:        m.Initializers(),
		vals:         map[string]*value{},
		source:       map[string]string{},
		uses:         map[string]int{},
		producer:     map[string]*onnxpb.NodeProto{},
		uncalibrated: uncalibratedLayers(m),
		e:            &Engine{opts: opts, byName: map[string]*param{}, slotBy: map[string]*stateSlot{}},
	}
	for name := range b.inits {
		b.source[name] = name
	}
	if err := b.graphInputs(); err != nil {
		return nil, err
	}
	for i, n := range bm.Graph().GetNode() {
		if len(n.GetOutput()) == 0 || n.GetOutput()[0] == "" {
			return nil, fmt.Errorf("%s: node has no output", nodeDesc(i, n))
		}
		for _, out := range n.GetOutput() {
			if out != "" {
				b.producer[out] = n
			}
		}
		h := handlers[n.GetOpType()]
		if onnximport.IsDecoupledConv(n) {
			h = (*builder).decoupled
		}
		if err := h(b, i, n); err != nil {
			return nil, fmt.Errorf("%s: %w", nodeDesc(i, n), err)
		}
	}
	if err := b.graphOutputs(); err != nil {
		return nil, err
	}
	if b.train {
		// A graph without [batch, classes] logits still trains its
		// statistics through Forward; Step reports why it cannot run.
		b.e.lossErr = b.lossAndGrads()
	}
	if err := b.machines(); err != nil {
		return nil, err
	}
	return b.e, nil
}

// uncalibratedLayers reads the names listed in the model's
// ai.dcnet.uncalibrated metadata.
func uncalibratedLayers(m *onnximport.Model) map[string]bool {
	out := map[string]bool{}
	for _, p := range m.Proto.GetMetadataProps() {
		if p.GetKey() != dcnet.MetaUncalibrated {
			continue
		}
		for _, name := range strings.Split(p.GetValue(), ",") {
			if name = strings.TrimSpace(name); name != "" {
				out[name] = true
			}
		}
	}
	return out
}

// graphInputs makes an input node for every graph input that is not an
// initializer.
func (b *builder) graphInputs() error {
	for _, in := range b.m.Graph().GetInput() {
		name := in.GetName()
		if _, ok := b.inits[name]; ok {
			continue
		}
		shape, ok := b.staticShape(name)
		if !ok {
			return fmt.Errorf("graph input %q: shape %v is not static", name, b.shapes[name])
		}
		v := newValue(b.dt, shape)
		node := newInputNode(b.g, b.dt, shape, "input:"+name, v)
		b.e.inputs = append(b.e.inputs, &port{name: name, shape: shape, node: node, value: v})
		b.vals[name] = &value{node: node, shape: shape}
	}
	return nil
}

// graphOutputs reads every graph output, then every tap, back through a
// Read node.
func (b *builder) graphOutputs() error {
	names := []string{}
	for _, out := range b.m.Graph().GetOutput() {
		names = append(names, out.GetName())
	}
	for _, tap := range b.opts.Taps {
		if !slices.Contains(names, tap) {
			names = append(names, tap)
		}
	}
	for _, name := range names {
		v, err := b.value(name)
		if err != nil {
			return fmt.Errorf("graph output %q: %w", name, err)
		}
		if v.node == nil {
			return fmt.Errorf("graph output %q: integer outputs are not supported", name)
		}
		p := &port{name: name, shape: v.shape}
		p.node = G.Read(v.node, &p.value)
		b.e.outputs = append(b.e.outputs, p)
	}
	return nil
}

// lossAndGrads adds the targets input, the loss on the logits and the
// gradient of every parameter the loss depends on.
func (b *builder) lossAndGrads() error {
	e := b.e
	if len(e.outputs) == 0 {
		return errors.New("the graph has no output to train")
	}
	first := e.outputs[0].name
	logitsName := first
	if n := b.producer[first]; n != nil && n.GetOpType() == onnximport.OpSoftmax && len(n.GetInput()) > 0 {
		// The loss takes the logits: a trailing Softmax over the classes
		// is folded away.
		logitsName = n.GetInput()[0]
		def := int64(-1)
		if b.opset < 13 {
			def = 1
		}
		if axis := onnximport.AttrInt(n, "axis", def); axis != 1 && axis != -1 {
			return fmt.Errorf("the first graph output %q is a Softmax over axis %d, not over the classes", first, axis)
		}
	}
	logits, err := b.value(logitsName)
	if err != nil {
		return fmt.Errorf("loss: logits %q: %w", logitsName, err)
	}
	if logits.node == nil || len(logits.shape) != 2 || (b.opts.Batch > 0 && logits.shape[0] != b.opts.Batch) {
		return fmt.Errorf("the loss needs logits of shape [%d, classes]; the first graph output gives %q of shape %v", b.opts.Batch, logitsName, logits.shape)
	}
	target := newValue(b.dt, logits.shape)
	targets := newInputNode(b.g, b.dt, logits.shape, "targets", target)
	loss, err := crossEntropy(logits.node, targets)
	if err != nil {
		return err
	}
	G.Read(loss, &e.loss)

	wrt := slices.Clone(e.params)
	for len(wrt) > 0 {
		nodes := make(G.Nodes, len(wrt))
		for i, p := range wrt {
			nodes[i] = p.node
		}
		grads, err := G.Grad(loss, nodes...)
		var sde G.SymDiffError
		if err != nil && errors.As(err, &sde) && len(sde.Nodes()) > 0 && sde.Node() == nil {
			// Parameters the loss does not depend on (those of another
			// output only) have a zero gradient.
			bad := sde.Nodes()
			wrt = slices.DeleteFunc(wrt, func(p *param) bool { return slices.Contains(bad, p.node) })
			continue
		}
		if err != nil {
			return fmt.Errorf("differentiating the loss: %w", err)
		}
		for i, p := range wrt {
			p.gradNode = grads[i]
			G.Read(grads[i], &p.grad)
		}
		break
	}
	e.targets, e.target, e.classes = targets, target, logits.shape[1]
	return nil
}

// machines compiles the tape machines.
func (b *builder) machines() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("compiling the graph: gorgonia: %v", r)
		}
	}()
	e := b.e
	e.g = b.g
	e.full = G.NewTapeMachine(b.g)
	if b.train {
		roots := make(G.Nodes, len(e.outputs))
		for i, p := range e.outputs {
			roots[i] = p.node
		}
		e.fwd = G.NewTapeMachine(b.g.ExactSubgraphRoots(roots...))
	}
	return nil
}

// staticShape returns the inferred shape of a value when all of its
// dimensions are known.
func (b *builder) staticShape(name string) ([]int, bool) {
	sh, ok := b.shapes[name]
	if !ok {
		return nil, false
	}
	s, ok := sh.Static()
	if !ok {
		return nil, false
	}
	out := make([]int, len(s))
	for i, d := range s {
		out[i] = int(d)
	}
	return out, true
}

// input returns a node's input i: present reports whether the node has it
// (a missing or empty name is absent).
func (b *builder) input(n *onnxpb.NodeProto, i int) (v *value, present bool, err error) {
	in := n.GetInput()
	if i >= len(in) || in[i] == "" {
		return nil, false, nil
	}
	v, err = b.value(in[i])
	return v, true, err
}

// node returns input i of n as a float node; it must be present.
func (b *builder) node(n *onnxpb.NodeProto, i int) (*G.Node, []int, error) {
	v, ok, err := b.input(n, i)
	switch {
	case err != nil:
		return nil, nil, err
	case !ok:
		return nil, nil, fmt.Errorf("input %d is missing", i)
	case v.node == nil:
		return nil, nil, fmt.Errorf("input %q is an integer tensor; only shape computations may use integers", n.GetInput()[i])
	}
	return v.node, v.shape, nil
}

// value returns the value of a name, making constants of initializers
// on first use.
func (b *builder) value(name string) (*value, error) {
	if v, ok := b.vals[name]; ok {
		return v, nil
	}
	src, ok := b.source[name]
	if !ok {
		return nil, fmt.Errorf("value %q is neither a graph input, an initializer nor an output of an earlier node", name)
	}
	if v, ok := b.vals[src]; ok {
		b.vals[name] = v
		return v, nil
	}
	v, err := b.initValue(src)
	if err != nil {
		return nil, err
	}
	b.vals[src] = v
	b.vals[name] = v
	return v, nil
}

// initValue makes the value of an initializer used as a constant: a
// folded tensor for integers, a constant input node for floats.
func (b *builder) initValue(name string) (*value, error) {
	t, err := b.m.Tensor(b.inits[name])
	if err != nil {
		return nil, err
	}
	return b.tensorValue("const:"+name, t)
}

// tensorValue turns a decoded tensor into a constant value.
func (b *builder) tensorValue(nodeName string, t *onnximport.Tensor) (*value, error) {
	shape := make([]int, len(t.Dims))
	for i, d := range t.Dims {
		shape[i] = int(d)
	}
	if t.Float == nil {
		return &value{shape: shape, ints: slices.Clone(t.Int), constant: true}, nil
	}
	floats := make([]float64, len(t.Float))
	for i, x := range t.Float {
		floats[i] = float64(x)
	}
	return b.floatConst(nodeName, shape, floats)
}

// floatConst returns a constant float value as an input node no gradient
// is taken for.
func (b *builder) floatConst(nodeName string, shape []int, floats []float64) (*value, error) {
	v := newValue(b.dt, shape)
	if err := storeF64(v, floats); err != nil {
		return nil, err
	}
	node := newInputNode(b.g, b.dt, shape, nodeName, v)
	return &value{node: node, shape: shape, floats: floats, constant: true}, nil
}

// useName names a parameter or state slot made from an initializer at
// node n: the initializer's name at its first use, "<name>@<node>" at
// later ones.
func (b *builder) useName(init string, i int, n *onnxpb.NodeProto) string {
	b.uses[init]++
	if b.uses[init] == 1 {
		return init
	}
	node := n.GetName()
	if node == "" {
		node = fmt.Sprintf("#%d", i)
	}
	return init + "@" + node
}

// floatInit returns the float initializer input k of n resolves to
// (through Identity nodes), if any.
func (b *builder) floatInit(n *onnxpb.NodeProto, k int) (string, bool) {
	in := n.GetInput()
	if k >= len(in) || in[k] == "" {
		return "", false
	}
	src, ok := b.source[in[k]]
	if !ok {
		return "", false
	}
	if !onnximport.IsFloatType(onnxpb.TensorProto_DataType(b.inits[src].GetDataType())) {
		return "", false
	}
	return src, true
}

// param returns input k of node i as a trainable parameter when it
// resolves to a float initializer (a new parameter for every use), and as
// its plain value otherwise. A nil node means the input is absent.
func (b *builder) param(i int, n *onnxpb.NodeProto, k int) (*G.Node, error) {
	init, ok := b.floatInit(n, k)
	if !ok {
		v, present, err := b.input(n, k)
		if err != nil || !present {
			return nil, err
		}
		if v.node == nil {
			return nil, fmt.Errorf("input %q is an integer tensor", n.GetInput()[k])
		}
		return v.node, nil
	}
	t, err := b.m.Tensor(b.inits[init])
	if err != nil {
		return nil, err
	}
	name := b.useName(init, i, n)
	shape := intShape(t.Dims)
	v := newValue(b.dt, shape)
	if err := storeF32(v, t.Float); err != nil {
		return nil, fmt.Errorf("initializer %q: %w", init, err)
	}
	p := &param{name: name, init: init, shape: shape, value: v}
	p.node = newInputNode(b.g, b.dt, shape, "param:"+name, v)
	b.e.params = append(b.e.params, p)
	b.e.byName[name] = p
	return p.node, nil
}

// state returns input k of node i, which must resolve to a float
// initializer, as a running statistic: a slot of the engine's State that
// the engine rewrites between runs (a new slot for every use).
func (b *builder) state(i int, n *onnxpb.NodeProto, k int, what string) (*stateSlot, error) {
	init, ok := b.floatInit(n, k)
	if !ok {
		return nil, fmt.Errorf("%s %q is not a float initializer", what, inputName(n, k))
	}
	t, err := b.m.Tensor(b.inits[init])
	if err != nil {
		return nil, err
	}
	name := b.useName(init, i, n)
	s := &stateSlot{name: name, shape: intShape(t.Dims), data: make([]float64, len(t.Float))}
	for j, x := range t.Float {
		s.data[j] = float64(x)
	}
	s.value = newValue(b.dt, s.shape)
	if err := s.store(); err != nil {
		return nil, fmt.Errorf("initializer %q: %w", init, err)
	}
	s.node = newInputNode(b.g, b.dt, s.shape, "state:"+name, s.value)
	b.e.slots = append(b.e.slots, s)
	b.e.slotBy[name] = s
	return s, nil
}

// inputName returns the name of input k of n, or "".
func inputName(n *onnxpb.NodeProto, k int) string {
	if k < len(n.GetInput()) {
		return n.GetInput()[k]
	}
	return ""
}

// intShape converts ONNX dimensions.
func intShape(dims []int64) []int {
	out := make([]int, len(dims))
	for i, d := range dims {
		out[i] = int(d)
	}
	return out
}

// set records output k of n. The node's shape is checked against shape
// inference; a node of the right size but another shape is reshaped.
func (b *builder) set(n *onnxpb.NodeProto, k int, x *G.Node) error {
	name := n.GetOutput()[k]
	got := []int(x.Shape())
	want, ok := b.staticShape(name)
	if !ok {
		want = got
	}
	if !slices.Equal(got, want) {
		// Some Gorgonia operations drop or add dimensions of size 1;
		// any other difference is an error.
		if !slices.Equal(withoutOnes(got), withoutOnes(want)) || len(want) == 0 || x.IsScalar() {
			return fmt.Errorf("output %q has shape %v, shape inference says %v", name, got, want)
		}
		var err error
		if x, err = G.Reshape(x, tensor.Shape(slices.Clone(want))); err != nil {
			return fmt.Errorf("output %q: %w", name, err)
		}
	}
	b.vals[name] = &value{node: x, shape: want}
	return nil
}

// withoutOnes returns a shape without its dimensions of size 1.
func withoutOnes(shape []int) []int {
	return slices.DeleteFunc(slices.Clone(shape), func(d int) bool { return d == 1 })
}

// setValue records output k of n as a given value.
func (b *builder) setValue(n *onnxpb.NodeProto, k int, v *value) {
	b.vals[n.GetOutput()[k]] = v
}

// setInts records output k of n as a folded integer tensor.
func (b *builder) setInts(n *onnxpb.NodeProto, k int, shape []int, ints []int64) {
	b.setValue(n, k, &value{shape: shape, ints: ints, constant: true})
}

// window reads and resolves the window of a Conv, pooling or decoupled
// node for an input of the given shape: auto_pad becomes explicit pads.
func window(n *onnxpb.NodeProto, kernel []int64, x []int) (onnximport.Window, error) {
	win, err := onnximport.ParseWindow(n, kernel)
	if err != nil {
		return win, err
	}
	if len(x) != 2+len(win.Kernel) {
		return win, fmt.Errorf("input shape %v does not fit kernel %v", x, win.Kernel)
	}
	spatial := make([]onnximport.Dim, len(x)-2)
	for i, d := range x[2:] {
		spatial[i] = onnximport.Dim{Size: int64(d)}
	}
	_, pads, err := win.Output(spatial)
	if err != nil {
		return win, err
	}
	win.Pads, win.AutoPad = pads, "NOTSET"
	return win, nil
}

// kernelOf returns the spatial dimensions of a weight shape.
func kernelOf(w []int) []int64 {
	k := make([]int64, 0, len(w))
	for _, d := range w[min(2, len(w)):] {
		k = append(k, int64(d))
	}
	return k
}

func (b *builder) conv(i int, n *onnxpb.NodeProto) error {
	x, xs, err := b.node(n, 0)
	if err != nil {
		return err
	}
	w, err := b.param(i, n, 1)
	if err != nil {
		return err
	}
	if w == nil {
		return errors.New("input W is missing")
	}
	bias, err := b.param(i, n, 2)
	if err != nil {
		return err
	}
	win, err := window(n, kernelOf(w.Shape()), xs)
	if err != nil {
		return err
	}
	y, err := conv(x, w, bias, win, onnximport.AttrInt(n, "group", 1))
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

func (b *builder) decoupled(i int, n *onnxpb.NodeProto) error {
	cfg, err := dcnet.FromNode(n)
	if err != nil {
		return err
	}
	x, xs, err := b.node(n, dcnet.IndexX)
	if err != nil {
		return err
	}
	in := decoupledInputs{X: x}
	for _, p := range []struct {
		k  int
		to **G.Node
	}{{dcnet.IndexW, &in.W}, {dcnet.IndexB, &in.B}, {dcnet.IndexAlpha, &in.Alpha}, {dcnet.IndexRhoV, &in.RhoV}} {
		if *p.to, err = b.param(i, n, p.k); err != nil {
			return err
		}
	}
	if in.W == nil {
		return errors.New("input W is missing")
	}
	var scale *stateSlot
	if inputName(n, dcnet.IndexRhoScale) != "" {
		if scale, err = b.state(i, n, dcnet.IndexRhoScale, "RhoScale"); err != nil {
			return err
		}
		if len(scale.shape) != 0 {
			return fmt.Errorf("input RhoScale %q has shape %v, want a scalar", inputName(n, dcnet.IndexRhoScale), scale.shape)
		}
		in.RhoScale = scale.node
	}
	win, err := window(n, kernelOf(in.W.Shape()), xs)
	if err != nil {
		return err
	}
	y, stat, err := decoupledConv(in, cfg, win, b.train)
	if err != nil {
		return err
	}
	if b.train && scale != nil && stat != nil {
		b.e.rhos = append(b.e.rhos, &rhoUpdate{
			node:         n.GetName(),
			scale:        scale,
			stat:         stat,
			uncalibrated: b.uncalibrated[n.GetName()],
		})
	}
	return b.set(n, 0, y)
}

func (b *builder) unary(i int, n *onnxpb.NodeProto) error {
	x, _, err := b.node(n, 0)
	if err != nil {
		return err
	}
	var y *G.Node
	switch n.GetOpType() {
	case onnximport.OpRelu:
		y, err = relu(x)
	case onnximport.OpSigmoid:
		y, err = G.Sigmoid(x)
	case onnximport.OpTanh:
		y, err = G.Tanh(x)
	case onnximport.OpLeakyRelu:
		y, err = leakyRelu(x, float64(onnximport.AttrFloat(n, "alpha", 0.01)))
	}
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

// constScalar returns input k of n as a constant scalar, or def when the
// input is absent.
func (b *builder) constScalar(n *onnxpb.NodeProto, k int, what string, def float64) (float64, error) {
	v, ok, err := b.input(n, k)
	switch {
	case err != nil:
		return 0, err
	case !ok:
		return def, nil
	case v.floats == nil || len(v.floats) != 1:
		return 0, fmt.Errorf("%s %q is not a constant scalar", what, n.GetInput()[k])
	}
	return v.floats[0], nil
}

func (b *builder) clip(i int, n *onnxpb.NodeProto) error {
	x, _, err := b.node(n, 0)
	if err != nil {
		return err
	}
	lo, hi := -math.MaxFloat32, math.MaxFloat32
	if b.opset < 11 {
		lo = float64(onnximport.AttrFloat(n, "min", float32(lo)))
		hi = float64(onnximport.AttrFloat(n, "max", float32(hi)))
	} else {
		if lo, err = b.constScalar(n, 1, "min", lo); err != nil {
			return err
		}
		if hi, err = b.constScalar(n, 2, "max", hi); err != nil {
			return err
		}
	}
	y, err := clip(x, lo, hi)
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

func (b *builder) pool(i int, n *onnxpb.NodeProto) error {
	x, xs, err := b.node(n, 0)
	if err != nil {
		return err
	}
	if onnximport.AttrInts(n, "kernel_shape") == nil {
		return errors.New("attribute kernel_shape is missing")
	}
	win, err := window(n, nil, xs)
	if err != nil {
		return err
	}
	var y *G.Node
	if n.GetOpType() == onnximport.OpMaxPool {
		y, err = maxPool(x, win)
	} else {
		y, err = avgPool(x, win, onnximport.AttrInt(n, "count_include_pad", 0) != 0)
	}
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

func (b *builder) globalAvgPool(i int, n *onnxpb.NodeProto) error {
	x, _, err := b.node(n, 0)
	if err != nil {
		return err
	}
	y, err := globalAvgPool(x)
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

// reshape handles Reshape, Flatten, Squeeze and Unsqueeze: the output
// shape comes from shape inference (which folds constant targets and
// axes); folded integer tensors stay folded.
func (b *builder) reshape(i int, n *onnxpb.NodeProto) error {
	v, ok, err := b.input(n, 0)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("input 0 is missing")
	}
	out, known := b.staticShape(n.GetOutput()[0])
	if !known {
		return fmt.Errorf("the shape of output %q is unknown", n.GetOutput()[0])
	}
	if numElements(out) != numElements(v.shape) {
		return fmt.Errorf("cannot reshape %v to %v", v.shape, out)
	}
	if v.node == nil {
		b.setInts(n, 0, out, v.ints)
		return nil
	}
	if slices.Equal(out, v.shape) {
		b.setValue(n, 0, &value{node: v.node, shape: out, floats: v.floats, constant: v.constant})
		return nil
	}
	y, err := G.Reshape(v.node, tensor.Shape(slices.Clone(out)))
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

func (b *builder) gemm(i int, n *onnxpb.NodeProto) error {
	var ab [3]*G.Node
	for k := range ab {
		var err error
		if ab[k], err = b.param(i, n, k); err != nil {
			return err
		}
	}
	if ab[0] == nil || ab[1] == nil {
		return errors.New("inputs A and B are required")
	}
	y, err := matProd(ab[0], ab[1], onnximport.AttrInt(n, "transA", 0) != 0, onnximport.AttrInt(n, "transB", 0) != 0)
	if err != nil {
		return err
	}
	if alpha := onnximport.AttrFloat(n, "alpha", 1); alpha != 1 {
		if y, err = G.HadamardProd(scalarConst(b.dt, float64(alpha)), y); err != nil {
			return err
		}
	}
	if c := ab[2]; c != nil {
		if beta := onnximport.AttrFloat(n, "beta", 1); beta != 1 {
			if c, err = G.HadamardProd(scalarConst(b.dt, float64(beta)), c); err != nil {
				return err
			}
		}
		if y, err = broadcastBinary(binAdd, y, c); err != nil {
			return err
		}
	}
	return b.set(n, 0, y)
}

func (b *builder) matMul(i int, n *onnxpb.NodeProto) error {
	x, err := b.param(i, n, 0)
	if err != nil {
		return err
	}
	w, err := b.param(i, n, 1)
	if err != nil {
		return err
	}
	if x == nil || w == nil {
		return errors.New("inputs A and B are required")
	}
	xs, ws := []int(x.Shape()), []int(w.Shape())
	switch {
	case len(xs) >= 1 && len(ws) <= 2 && len(ws) >= 1:
		// Fold every leading axis of A into the rows; a vector operand
		// is a one-row or one-column matrix.
		k := xs[len(xs)-1]
		a2, err := reshapeTo(x, []int{numElements(xs) / k, k})
		if err != nil {
			return err
		}
		w2 := w
		if len(ws) == 1 {
			if w2, err = reshapeTo(w, []int{ws[0], 1}); err != nil {
				return err
			}
		}
		y, err := matProd(a2, w2, false, false)
		if err != nil {
			return fmt.Errorf("shapes %v and %v: %w", xs, ws, err)
		}
		out := slices.Clone(xs[:len(xs)-1])
		if len(ws) == 2 {
			out = append(out, ws[1])
		}
		if y, err = reshapeTo(y, out); err != nil {
			return err
		}
		return b.set(n, 0, y)
	}
	return fmt.Errorf("operands of shapes %v and %v are not supported (batched matrix products)", xs, ws)
}

// reshapeTo reshapes x unless it already has the shape.
func reshapeTo(x *G.Node, shape []int) (*G.Node, error) {
	if slices.Equal([]int(x.Shape()), shape) {
		return x, nil
	}
	return G.Reshape(x, tensor.Shape(slices.Clone(shape)))
}

func (b *builder) binary(i int, n *onnxpb.NodeProto) error {
	kind := map[string]binaryKind{
		onnximport.OpAdd: binAdd, onnximport.OpSub: binSub,
		onnximport.OpMul: binMul, onnximport.OpDiv: binDiv,
	}[n.GetOpType()]
	var in [2]*G.Node
	var vals [2]*value
	for k := range in {
		v, ok, err := b.input(n, k)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("input %d is missing", k)
		}
		if v.node == nil {
			return errors.New("integer arithmetic is not supported")
		}
		vals[k], in[k] = v, v.node
	}
	// The constant operand of an Add to a computed value is a bias: a
	// parameter.
	if kind == binAdd {
		for k := range in {
			if _, isInit := b.floatInit(n, k); isInit && !vals[1-k].constant {
				var err error
				if in[k], err = b.param(i, n, k); err != nil {
					return err
				}
			}
		}
	}
	y, err := broadcastBinary(kind, in[0], in[1])
	if err != nil {
		return err
	}
	if err := b.set(n, 0, y); err != nil {
		return err
	}
	if vals[0].constant && vals[1].constant {
		b.vals[n.GetOutput()[0]].constant = true
	}
	return nil
}

func (b *builder) batchNorm(i int, n *onnxpb.NodeProto) error {
	x, _, err := b.node(n, 0)
	if err != nil {
		return err
	}
	scale, err := b.param(i, n, 1)
	if err != nil {
		return err
	}
	bias, err := b.param(i, n, 2)
	if err != nil {
		return err
	}
	if scale == nil || bias == nil {
		return errors.New("inputs scale and B are required")
	}
	mean, err := b.state(i, n, 3, "running mean")
	if err != nil {
		return err
	}
	variance, err := b.state(i, n, 4, "running variance")
	if err != nil {
		return err
	}
	eps := float64(onnximport.AttrFloat(n, "epsilon", 1e-5))
	momentum := float64(onnximport.AttrFloat(n, "momentum", 0.9))
	y, stat, err := batchNorm(x, scale, bias, mean.node, variance.node, eps, b.train)
	if err != nil {
		return err
	}
	if b.train && stat != nil {
		b.e.bns = append(b.e.bns, &bnUpdate{node: n.GetName(), momentum: momentum, mean: mean, variance: variance, stat: stat})
	}
	return b.set(n, 0, y)
}

func (b *builder) dropout(i int, n *onnxpb.NodeProto) error {
	v, ok, err := b.input(n, 0)
	if err != nil {
		return err
	}
	if !ok || v.node == nil {
		return errors.New("input data is missing")
	}
	ratio := 0.5
	if b.opset < 12 {
		ratio = float64(onnximport.AttrFloat(n, "ratio", 0.5))
	} else if ratio, err = b.constScalar(n, 1, "ratio", 0.5); err != nil {
		return err
	}
	if !(ratio >= 0 && ratio < 1) {
		return fmt.Errorf("ratio %v is outside [0, 1)", ratio)
	}
	if !b.train || ratio == 0 {
		b.setValue(n, 0, v)
		return nil
	}
	mask := &dropMask{index: i, ratio: ratio, value: newValue(b.dt, v.shape)}
	mask.node = newInputNode(b.g, b.dt, v.shape, fmt.Sprintf("dropout-mask:%d", i), mask.value)
	b.e.drops = append(b.e.drops, mask)
	y, err := G.HadamardProd(v.node, mask.node)
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

func (b *builder) softmax(i int, n *onnxpb.NodeProto) error {
	x, xs, err := b.node(n, 0)
	if err != nil {
		return err
	}
	def := int64(-1)
	if b.opset < 13 {
		def = 1
	}
	r := len(xs)
	axis := onnximport.AttrInt(n, "axis", def)
	if axis < 0 {
		axis += int64(r)
	}
	if axis < 0 || axis >= int64(max(r, 1)) {
		return fmt.Errorf("axis %d is out of range for rank %d", onnximport.AttrInt(n, "axis", def), r)
	}
	a := int(axis)
	outer := numElements(xs[:a])
	var inner, size int
	if b.opset < 13 {
		// Before opset 13 the input is flattened to 2-D at axis and
		// normalised over the second dimension.
		size, inner = numElements(xs[a:]), 1
	} else {
		size, inner = xs[a], numElements(xs[a+1:])
	}
	y, err := softmax(x, n.GetOpType() == onnximport.OpLogSoftmax, outer, size, inner)
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

func (b *builder) identity(i int, n *onnxpb.NodeProto) error {
	in := inputName(n, 0)
	if in == "" {
		return errors.New("input is missing")
	}
	out := n.GetOutput()[0]
	if src, ok := b.source[in]; ok {
		// An Identity of an initializer stays one: a parameter use
		// through it still finds the initializer.
		b.source[out] = src
		if v, ok := b.vals[in]; ok {
			b.vals[out] = v
		}
		return nil
	}
	v, err := b.value(in)
	if err != nil {
		return err
	}
	b.vals[out] = v
	return nil
}

func (b *builder) constant(i int, n *onnxpb.NodeProto) error {
	if len(n.GetAttribute()) != 1 {
		return fmt.Errorf("%d attributes, want exactly one value", len(n.GetAttribute()))
	}
	a := n.GetAttribute()[0]
	name := "constant:" + n.GetOutput()[0]
	switch a.GetName() {
	case "value":
		t, err := b.m.Tensor(a.GetT())
		if err != nil {
			return err
		}
		v, err := b.tensorValue(name, t)
		if err != nil {
			return err
		}
		b.setValue(n, 0, v)
	case "value_float":
		v, err := b.floatConst(name, nil, []float64{float64(a.GetF())})
		if err != nil {
			return err
		}
		b.setValue(n, 0, v)
	case "value_floats":
		fs := make([]float64, len(a.GetFloats()))
		for k, f := range a.GetFloats() {
			fs[k] = float64(f)
		}
		v, err := b.floatConst(name, []int{len(fs)}, fs)
		if err != nil {
			return err
		}
		b.setValue(n, 0, v)
	case "value_int":
		b.setInts(n, 0, nil, []int64{a.GetI()})
	case "value_ints":
		b.setInts(n, 0, []int{len(a.GetInts())}, slices.Clone(a.GetInts()))
	default:
		return fmt.Errorf("attribute %q is not supported", a.GetName())
	}
	return nil
}

func (b *builder) concat(i int, n *onnxpb.NodeProto) error {
	var vals []*value
	ints := 0
	for k, name := range n.GetInput() {
		if name == "" {
			continue
		}
		v, _, err := b.input(n, k)
		if err != nil {
			return err
		}
		if v.node == nil {
			ints++
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return errors.New("no inputs")
	}
	r := len(vals[0].shape)
	axis := onnximport.AttrInt(n, "axis", 0)
	if axis < 0 {
		axis += int64(r)
	}
	if axis < 0 || axis >= int64(r) {
		return fmt.Errorf("axis %d is out of range for rank %d", onnximport.AttrInt(n, "axis", 0), r)
	}
	switch ints {
	case len(vals):
		if r != 1 {
			return fmt.Errorf("concatenating rank-%d integer tensors is not supported", r)
		}
		var data []int64
		for _, v := range vals {
			data = append(data, v.ints...)
		}
		b.setInts(n, 0, []int{len(data)}, data)
		return nil
	case 0:
	default:
		return errors.New("inputs mix integer and float tensors")
	}
	if len(vals) == 1 {
		b.setValue(n, 0, vals[0])
		return nil
	}
	nodes := make(G.Nodes, len(vals))
	for k, v := range vals {
		nodes[k] = v.node
	}
	y, err := G.Concat(int(axis), nodes...)
	if err != nil {
		return err
	}
	return b.set(n, 0, y)
}

func (b *builder) cast(i int, n *onnxpb.NodeProto) error {
	v, ok, err := b.input(n, 0)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("input is missing")
	}
	to := onnxpb.TensorProto_DataType(onnximport.AttrInt(n, "to", 0))
	switch {
	case onnximport.IsFloatType(to) && v.node != nil:
		b.setValue(n, 0, v)
	case onnximport.IsFloatType(to):
		fs := make([]float64, len(v.ints))
		for k, x := range v.ints {
			fs[k] = float64(x)
		}
		c, err := b.floatConst("cast:"+n.GetOutput()[0], v.shape, fs)
		if err != nil {
			return err
		}
		b.setValue(n, 0, c)
	case isIntType(to) && v.node == nil:
		b.setValue(n, 0, v)
	default:
		return fmt.Errorf("casting to %s is supported only on constant integer tensors (shape computations)", to)
	}
	return nil
}

func (b *builder) shape(i int, n *onnxpb.NodeProto) error {
	v, ok, err := b.input(n, 0)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("input is missing")
	}
	r := int64(len(v.shape))
	clampAxis := func(a int64) int64 {
		if a < 0 {
			a += r
		}
		return min(max(a, 0), r)
	}
	start, end := clampAxis(onnximport.AttrInt(n, "start", 0)), clampAxis(onnximport.AttrInt(n, "end", r))
	end = max(end, start)
	dims := make([]int64, 0, end-start)
	for _, d := range v.shape[start:end] {
		dims = append(dims, int64(d))
	}
	b.setInts(n, 0, []int{len(dims)}, dims)
	return nil
}

func (b *builder) gather(i int, n *onnxpb.NodeProto) error {
	data, ok1, err := b.input(n, 0)
	if err != nil {
		return err
	}
	idx, ok2, err := b.input(n, 1)
	if err != nil {
		return err
	}
	if !ok1 || !ok2 || data.node != nil || idx.node != nil {
		return errors.New("supported only on constant integer tensors (shape computations)")
	}
	if len(data.shape) != 1 || len(idx.shape) > 1 {
		return fmt.Errorf("gathering from shape %v by indices of shape %v is not supported", data.shape, idx.shape)
	}
	out := make([]int64, len(idx.ints))
	for k, j := range idx.ints {
		if j < 0 {
			j += int64(len(data.ints))
		}
		if j < 0 || j >= int64(len(data.ints)) {
			return fmt.Errorf("index %d is out of range for %d values", idx.ints[k], len(data.ints))
		}
		out[k] = data.ints[j]
	}
	b.setInts(n, 0, slices.Clone(idx.shape), out)
	return nil
}
