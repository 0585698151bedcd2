package engine

import (
	"errors"
	"fmt"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Mode says whether an engine is built for inference or for training.
type Mode int

// The modes of an engine.
const (
	// Inference uses the running statistics stored in the model, makes
	// Dropout the identity and computes no gradients.
	Inference Mode = iota
	// Training normalises with batch statistics and updates the running
	// statistics after every batch, draws dropout masks, and builds the
	// loss and the gradient of every parameter for Step.
	Training
)

// String returns "inference" or "training".
func (m Mode) String() string {
	switch m {
	case Inference:
		return "inference"
	case Training:
		return "training"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Options configures Build.
type Options struct {
	// Mode is Inference or Training.
	Mode Mode
	// Batch is the batch size the graph is built for: Gorgonia shapes are
	// static, so the first dimension of every graph input (symbolic or
	// not) is bound to it, and every batch given to Forward and Step must
	// have exactly this size. Zero builds the graph for the shapes the
	// model declares, which must then all be fixed.
	Batch int
	// DType is the element type the engine computes in: Float32 (the
	// default when zero) or Float64 (for gradient checks).
	DType Float
	// Seed seeds the dropout masks: the mask of a Dropout node derives
	// from (Seed, training step, node index) only.
	Seed uint64
	// LabelSmoothing is the label smoothing s of Step's loss, in [0, 1):
	// the target of each sample is (1-s) on its label plus s/K on every
	// one of the K classes. 0 (the default) is the plain negative
	// log-likelihood.
	LabelSmoothing float64
	// Taps names intermediate values of the graph that Forward returns
	// next to the graph outputs (calibration reads a layer's input this
	// way).
	Taps []string
}

// Tensor is a dense float32 tensor in row-major order, as the engine
// exchanges inputs, outputs, parameters, gradients and statistics.
type Tensor struct {
	Shape []int
	Data  []float32
}

// numElements returns the number of elements a shape describes.
func numElements(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// check reports a tensor whose data does not fit its shape or the shape
// want.
func (t Tensor) check(want []int) error {
	if !slices.Equal(t.Shape, want) {
		return fmt.Errorf("shape %v, want %v", t.Shape, want)
	}
	if len(t.Data) != numElements(want) {
		return fmt.Errorf("%d values for shape %v (%d elements)", len(t.Data), want, numElements(want))
	}
	return nil
}

// Engine runs one ONNX model as a Gorgonia graph built for one batch size,
// in one mode. Its parameters, gradients and running statistics are
// exchanged by name as Tensors. An Engine is not safe for concurrent use.
type Engine struct {
	opts Options
	g    *G.ExprGraph
	// full runs the whole graph: the forward pass and, in Training mode,
	// the loss and every gradient. fwd, in Training mode only, runs the
	// forward pass alone for Forward.
	full, fwd G.VM

	inputs  []*port
	outputs []*port
	params  []*param
	byName  map[string]*param
	slots   []*stateSlot
	slotBy  map[string]*stateSlot
	bns     []*bnUpdate
	rhos    []*rhoUpdate
	drops   []*dropMask

	// Training mode: the targets input, the loss read back, the number
	// of classes, or why the graph has no loss.
	targets *G.Node
	target  G.Value
	loss    G.Value
	classes int
	lossErr error // why Step cannot run, when the graph has no loss

	steps    uint64 // training batches run so far
	hasGrads bool   // a Step has run and the gradients are current
	closed   bool
}

// port is a graph input or output: the node, its shape and its value
// (bound for inputs, read back for outputs).
type port struct {
	name  string
	shape []int
	node  *G.Node
	value G.Value
}

// param is one trainable parameter: an initializer at one of its uses.
type param struct {
	name     string
	init     string // the initializer it was made from
	shape    []int
	node     *G.Node
	value    G.Value
	grad     G.Value // read back by Step; nil when the loss does not depend on it
	gradNode *G.Node
}

// errClosed is returned by every method of a closed engine.
var errClosed = errors.New("engine is closed")

// Close releases the engine's machines. Every later call fails.
func (e *Engine) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	var errs []error
	for _, vm := range []G.VM{e.full, e.fwd} {
		if vm != nil {
			errs = append(errs, vm.Close())
		}
	}
	return errors.Join(errs...)
}

// Options returns the options the engine was built with, defaults filled
// in.
func (e *Engine) Options() Options { return e.opts }

// Inputs returns the names of the graph inputs that are not initializers,
// in graph order: the tensors Forward and Step need.
func (e *Engine) Inputs() []string {
	names := make([]string, len(e.inputs))
	for i, p := range e.inputs {
		names[i] = p.name
	}
	return names
}

// InputShape returns the shape a graph input must have, batch included.
func (e *Engine) InputShape(name string) ([]int, bool) {
	for _, p := range e.inputs {
		if p.name == name {
			return slices.Clone(p.shape), true
		}
	}
	return nil, false
}

// Outputs returns the names of the graph outputs, in graph order.
func (e *Engine) Outputs() []string {
	names := make([]string, len(e.outputs))
	for i, p := range e.outputs {
		names[i] = p.name
	}
	return names
}

// Forward runs the graph on one batch and returns every graph output by
// name. inputs holds every name of Inputs with shape [Batch, ...]. In
// Training mode batch normalization uses the batch statistics, dropout is
// active, and the running statistics are updated afterwards (see State).
func (e *Engine) Forward(inputs map[string]Tensor) (map[string]Tensor, error) {
	if e.closed {
		return nil, errClosed
	}
	if err := e.bindInputs(inputs); err != nil {
		return nil, err
	}
	vm := e.full
	if e.opts.Mode == Training {
		vm = e.fwd
		e.beforeTraining()
	}
	if err := runVM(vm); err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	out := make(map[string]Tensor, len(e.outputs))
	for _, p := range e.outputs {
		data, err := loadF32(p.value)
		if err != nil {
			return nil, fmt.Errorf("forward: output %q: %w", p.name, err)
		}
		out[p.name] = Tensor{Shape: slices.Clone(p.shape), Data: data}
	}
	if e.opts.Mode == Training {
		e.afterTraining()
	}
	return out, nil
}

// Output returns a graph output as the last Forward or Step computed it
// (Step computes every output along with the loss, so that training
// accuracy needs no second pass).
func (e *Engine) Output(name string) (Tensor, error) {
	if e.closed {
		return Tensor{}, errClosed
	}
	for _, p := range e.outputs {
		if p.name != name {
			continue
		}
		data, err := loadF32(p.value)
		if err != nil {
			return Tensor{}, fmt.Errorf("output %q: %w", name, err)
		}
		return Tensor{Shape: slices.Clone(p.shape), Data: data}, nil
	}
	return Tensor{}, fmt.Errorf("%q is not a graph output (outputs: %v)", name, e.Outputs())
}

// Step runs the forward and backward pass of one training batch and
// returns the loss: the batch mean of -log softmax(logits)[label] (with
// Options.LabelSmoothing, the cross-entropy against the smoothed
// targets), where the logits are the first graph output, or the input of
// the Softmax node that produces it. It computes the gradient of every
// parameter (see Grad) and updates the running statistics. labels holds
// one class index per sample. Step requires Training mode.
func (e *Engine) Step(inputs map[string]Tensor, labels []int) (float64, error) {
	if e.closed {
		return 0, errClosed
	}
	if e.opts.Mode != Training {
		return 0, errors.New("step: the engine was built for inference; build it with Mode Training")
	}
	if e.lossErr != nil {
		return 0, fmt.Errorf("step: %w", e.lossErr)
	}
	if e.opts.Batch > 0 && len(labels) != e.opts.Batch {
		return 0, fmt.Errorf("step: %d labels for a batch of %d", len(labels), e.opts.Batch)
	}
	for i, l := range labels {
		if l < 0 || l >= e.classes {
			return 0, fmt.Errorf("step: label %d of sample %d is outside the %d classes", l, i, e.classes)
		}
	}
	if err := e.bindInputs(inputs); err != nil {
		return 0, err
	}
	switch t := e.target.(type) {
	case *tensor.Dense:
		switch d := t.Data().(type) {
		case []float32:
			smoothedTargets(d, labels, e.classes, e.opts.LabelSmoothing)
		case []float64:
			smoothedTargets(d, labels, e.classes, e.opts.LabelSmoothing)
		}
	}
	e.hasGrads = false
	e.beforeTraining()
	if err := runVM(e.full); err != nil {
		return 0, fmt.Errorf("step: %w", err)
	}
	loss, err := scalarOf(e.loss)
	if err != nil {
		return 0, fmt.Errorf("step: reading the loss: %w", err)
	}
	e.hasGrads = true
	e.afterTraining()
	return loss, nil
}

// bindInputs copies a batch into the input nodes.
func (e *Engine) bindInputs(inputs map[string]Tensor) error {
	var errs []error
	for name := range inputs {
		if !slices.ContainsFunc(e.inputs, func(p *port) bool { return p.name == name }) {
			errs = append(errs, fmt.Errorf("input %q is not a graph input (inputs: %v)", name, e.Inputs()))
		}
	}
	for _, p := range e.inputs {
		t, ok := inputs[p.name]
		if !ok {
			errs = append(errs, fmt.Errorf("input %q is missing", p.name))
			continue
		}
		if err := t.check(p.shape); err != nil {
			errs = append(errs, fmt.Errorf("input %q: %w", p.name, err))
			continue
		}
		if err := storeF32(p.value, t.Data); err != nil {
			errs = append(errs, fmt.Errorf("input %q: %w", p.name, err))
		}
	}
	return errors.Join(errs...)
}

// runVM runs a machine once and resets it; a panic inside Gorgonia
// becomes an error.
func runVM(vm G.VM) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gorgonia: %v", r)
		}
	}()
	defer vm.Reset()
	return vm.RunAll()
}

// Params returns the names of the trainable parameters in graph order:
// the float initializers used as the weight and bias of Conv, as an
// input of Gemm or MatMul, as the bias operand of Add, as the scale and
// bias of BatchNormalization, and as the W, B, Alpha and RhoV inputs of a
// decoupled convolution, looked up through Identity nodes. An initializer
// used by several such nodes (exporters de-duplicate equal tensors,
// sometimes through Identity nodes) becomes one parameter per use: the
// first use keeps the initializer's name, later ones are named
// "<initializer>@<node>" after the node that uses them (a node without a
// name is called "#<index>").
func (e *Engine) Params() []string {
	names := make([]string, len(e.params))
	for i, p := range e.params {
		names[i] = p.name
	}
	return names
}

// lookup returns the named parameter.
func (e *Engine) lookup(name string) (*param, error) {
	if e.closed {
		return nil, errClosed
	}
	p, ok := e.byName[name]
	if !ok {
		return nil, fmt.Errorf("no parameter %q", name)
	}
	return p, nil
}

// Param returns a copy of the current value of a parameter.
func (e *Engine) Param(name string) (Tensor, error) {
	p, err := e.lookup(name)
	if err != nil {
		return Tensor{}, err
	}
	data, err := loadF32(p.value)
	if err != nil {
		return Tensor{}, fmt.Errorf("parameter %q: %w", name, err)
	}
	return Tensor{Shape: slices.Clone(p.shape), Data: data}, nil
}

// SetParam sets the value of a parameter; t must have the parameter's
// shape. The gradients of the last Step are kept.
func (e *Engine) SetParam(name string, t Tensor) error {
	p, err := e.lookup(name)
	if err != nil {
		return err
	}
	if err := t.check(p.shape); err != nil {
		return fmt.Errorf("parameter %q: %w", name, err)
	}
	return storeF32(p.value, t.Data)
}

// ParamData returns a parameter's values in place, in a float32 engine:
// writing to the slice changes the parameter as SetParam does, without a
// copy, and the slice stays valid as long as the engine. A float64 engine
// gives an error (use Param and SetParam).
func (e *Engine) ParamData(name string) ([]float32, error) {
	p, err := e.lookup(name)
	if err != nil {
		return nil, err
	}
	return liveF32(p.value, numElements(p.shape), true)
}

// GradData returns the gradient of the last Step with respect to a
// parameter in place, in a float32 engine, valid until the next Step (the
// caller may change it, say to clip it): nil for a parameter the loss does
// not depend on. It fails before the first Step, and in a float64 engine.
func (e *Engine) GradData(name string) ([]float32, error) {
	p, err := e.lookup(name)
	if err != nil {
		return nil, err
	}
	if !e.hasGrads {
		return nil, fmt.Errorf("parameter %q: no gradient: Step has not run", name)
	}
	if p.grad == nil {
		return nil, nil
	}
	return liveF32(p.grad, numElements(p.shape), false)
}

// liveF32 returns the float32 elements of a dense value in place; a view
// of another tensor is an error when alias is set, and a copy otherwise.
func liveF32(v G.Value, n int, alias bool) ([]float32, error) {
	if d, ok := v.(*tensor.Dense); ok && alias && d.IsMaterializable() {
		return nil, fmt.Errorf("value of shape %v is a view, not its own storage", d.Shape())
	}
	d, err := denseOf(v)
	if err != nil {
		return nil, err
	}
	data, ok := d.Data().([]float32)
	if !ok || len(data) < n {
		return nil, fmt.Errorf("value of type %v holds no %d float32 values", d.Dtype(), n)
	}
	return data[:n], nil
}

// Grad returns the gradient of the loss of the last Step with respect to
// a parameter: zero for a parameter the loss does not depend on (one
// used only by another graph output). It fails before the first Step.
func (e *Engine) Grad(name string) (Tensor, error) {
	p, err := e.lookup(name)
	if err != nil {
		return Tensor{}, err
	}
	if !e.hasGrads {
		return Tensor{}, fmt.Errorf("parameter %q: no gradient: Step has not run", name)
	}
	if p.grad == nil {
		return Tensor{Shape: slices.Clone(p.shape), Data: make([]float32, numElements(p.shape))}, nil
	}
	data, err := loadF32(p.grad)
	if err != nil {
		return Tensor{}, fmt.Errorf("gradient of %q: %w", name, err)
	}
	return Tensor{Shape: slices.Clone(p.shape), Data: data}, nil
}

// newValue returns a zero value of the element type and shape: a
// Gorgonia scalar for rank 0, else a dense tensor.
func newValue(dt Float, shape []int) G.Value {
	if len(shape) == 0 {
		if dt == Float64 {
			return G.NewF64(0)
		}
		return G.NewF32(0)
	}
	return tensor.New(tensor.Of(dt), tensor.WithShape(slices.Clone(shape)...))
}

// newInputNode returns an input node of the graph holding v, which has the
// given shape.
func newInputNode(g *G.ExprGraph, dt Float, shape []int, name string, v G.Value) *G.Node {
	if len(shape) == 0 {
		return G.NewScalar(g, dt, G.WithName(name), G.WithValue(v))
	}
	return G.NewTensor(g, dt, len(shape), G.WithShape(slices.Clone(shape)...), G.WithName(name), G.WithValue(v))
}

// loadF32 returns a copy of a value's data as float32.
func loadF32(v G.Value) ([]float32, error) { return load[float32](v) }

// loadF64 returns a copy of a value's data as float64.
func loadF64(v G.Value) ([]float64, error) { return load[float64](v) }

// load returns a copy of a value's data converted to T.
func load[T float32 | float64](v G.Value) ([]T, error) {
	switch s := v.(type) {
	case *G.F32:
		return []T{T(*s)}, nil
	case *G.F64:
		return []T{T(*s)}, nil
	case nil:
		return nil, errors.New("no value")
	}
	d, err := denseOf(v)
	if err != nil {
		return nil, err
	}
	switch data := d.Data().(type) {
	case []float32:
		return convertSlice[T](data), nil
	case []float64:
		return convertSlice[T](data), nil
	}
	return nil, fmt.Errorf("element type %v is not supported", d.Dtype())
}

// convertSlice returns a copy of data converted to T.
func convertSlice[T, S float32 | float64](data []S) []T {
	out := make([]T, len(data))
	for i, x := range data {
		out[i] = T(x)
	}
	return out
}

// storeF32 copies data into a value in place, converting to its element
// type.
func storeF32(v G.Value, data []float32) error {
	return storeFunc(v, len(data), func(i int) float64 { return float64(data[i]) })
}

// storeF64 copies data into a value in place, converting to its element
// type.
func storeF64(v G.Value, data []float64) error {
	return storeFunc(v, len(data), func(i int) float64 { return data[i] })
}

// storeFunc sets the n elements of a value in place to at(i).
func storeFunc(v G.Value, n int, at func(int) float64) error {
	switch s := v.(type) {
	case *G.F32:
		if n != 1 {
			return fmt.Errorf("%d values for a scalar", n)
		}
		*s = G.F32(at(0))
		return nil
	case *G.F64:
		if n != 1 {
			return fmt.Errorf("%d values for a scalar", n)
		}
		*s = G.F64(at(0))
		return nil
	}
	d, ok := v.(*tensor.Dense)
	if !ok {
		return fmt.Errorf("value of type %T is not a dense tensor", v)
	}
	switch data := d.Data().(type) {
	case []float32:
		if len(data) != n {
			return fmt.Errorf("%d values for %d elements", n, len(data))
		}
		for i := range data {
			data[i] = float32(at(i))
		}
		return nil
	case []float64:
		if len(data) != n {
			return fmt.Errorf("%d values for %d elements", n, len(data))
		}
		for i := range data {
			data[i] = at(i)
		}
		return nil
	}
	return fmt.Errorf("element type %v is not supported", d.Dtype())
}
