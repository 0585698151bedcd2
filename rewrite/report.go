package rewrite

// Report says what a rewrite did.
type Report struct {
	// Total is the number of convolution layers (Conv and decoupled nodes)
	// in the model.
	Total int `json:"total"`
	// Layers lists the rewritten layers in graph order.
	Layers []Layer `json:"layers"`
	// Skipped lists the layers the selection reached implicitly but that
	// could not be rewritten.
	Skipped []Skipped `json:"skipped"`
	// Uncalibrated lists the rewritten layers whose learnable radius still
	// has RhoScale 1.
	Uncalibrated []string `json:"uncalibrated"`
	// Inlined is true when function bodies were written in place.
	Inlined bool `json:"inlined"`
}

// Layer is one rewritten layer.
type Layer struct {
	// Index is the layer's index among the convolution layers.
	Index int `json:"index"`
	// Name is the node name.
	Name string `json:"name"`
	// Weight is the shape of the weight, [C_out, C_in, kH, kW].
	Weight []int64 `json:"weight"`
	// Output is the output shape, e.g. "[N,64,224,224]", or empty when it
	// is not known.
	Output string `json:"output"`
	// Operator is the configuration in short form.
	Operator string `json:"operator"`
	// OpType is the op type of the decoupled node.
	OpType string `json:"op_type"`
}

// Skipped is a layer left as it was, and why.
type Skipped struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}
