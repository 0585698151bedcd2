// Package onnximport reads, checks and writes ONNX models.
//
// It owns the in-memory Model that every other stage of dcconvert works on:
// the decoded protobuf message plus what is derived from it (operator sets,
// external data, decoded tensors, inferred shapes). It does not run models
// (see package engine) or change them (see package rewrite).
//
// # Reading
//
// ReadFile reads a model file together with the tensors it keeps in
// external data files, checks its structure and returns a Model. ReadBytes
// does the same for a model held in memory (a model with external data must
// be read from a file). Decode is the wire-level step alone: it accepts any
// well-formed ModelProto, whatever operators or opsets it uses.
//
// # Checking
//
// Check verifies what every later stage relies on: a graph is present, a
// default-domain operator set between MinOpset and MaxOpset is imported,
// every node input is a graph input, an initializer, the output of an
// earlier node or the empty name of an absent optional input; no name is
// produced twice; the nodes are in topological order (a cycle is reported as
// such); every initializer's data matches its declared shape. All problems
// are reported together.
//
// # Writing
//
// Encode and WriteFile write a model back. A model that was read and not
// changed is written byte for byte as it was read: fields are emitted in
// field-number order and fields this version of onnx.proto does not know are
// kept. WriteFile writes to a temporary file in the destination directory
// and renames it, so a failed write leaves no partial file.
//
// # Tensors and shapes
//
// Model.Tensor decodes an initializer or constant to float32 (from raw_data
// or the typed fields; float, double, float16, bfloat16) or int64 (the
// integer types). Float32 raw data is aliased, not copied, where the
// platform allows. InferShapes computes static shapes with a symbolic batch
// dimension for the operators of plain CNNs, folding the
// Shape/Gather/Unsqueeze/Concat chains that exporters put before Reshape.
//
// Nothing here trusts a size read from a file: element counts are checked
// against the bytes actually present before anything is allocated.
package onnximport
