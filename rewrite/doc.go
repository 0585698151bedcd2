// Package rewrite changes ONNX models: it turns selected Conv nodes into
// decoupled convolutions with the same weights, and can inline model-local
// functions so that no custom domain is left.
//
// # Passes
//
// A rewrite is an ordered list of passes, each a plain value with a name,
// a one-line description and a function over the shared State; Passes
// returns the list for a set of Options and Run runs it. Run takes an
// optional checker that is called after every pass (tests validate the
// graph with it), so a pass that leaves the graph broken is caught where it
// happened.
//
//	name-nodes  give every unnamed Conv a unique name
//	select      resolve the layer selection to Conv nodes
//	decouple    replace each selected Conv by a DecoupledConv node
//	functions   add one model-local function per distinct configuration
//	metadata    record the configurations in metadata_props
//	inline      (optional) replace function calls by their bodies
//
// The operator, its attributes and its function bodies are defined by
// package dcnet; rewrite only edits the graph. The model's default-domain
// opset is never changed; the IR version is raised to 8 where it is lower,
// as model-local functions require.
//
// # Layer selection
//
// A selection is a comma-separated list of items, applied in order:
//
//	conv1            a node name, or a layer name (the weight's name
//	                 without ".weight")
//	features.*       a glob pattern over the same names (* and ? match
//	                 any characters, including "/" and ".")
//	3, -1            zero-based index among the convolution layers of the
//	                 graph (Conv and decoupled nodes, in graph order);
//	                 negative counts from the end
//	0-3              an inclusive range of indices
//	!features.0      an exclusion of any of the above
//
// A selection that starts with an exclusion starts from every layer. An
// empty selection means every rewritable Conv. A layer named explicitly
// (by name or single index) that cannot be rewritten is an error; one
// reached implicitly (by default, a pattern or a range) is skipped with a
// warning.
package rewrite
