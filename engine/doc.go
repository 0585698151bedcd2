// Package engine runs and differentiates ONNX models on the Gorgonia
// engine: it turns the graph of an onnximport.Model, plain or rewritten
// into decoupled convolutions, into a Gorgonia expression graph with
// gradients, in inference or training mode.
//
// It is the only package that imports Gorgonia. Parameters, their
// gradients and running statistics are exposed by initializer name as
// plain float32 slices, so that the packages above it (finetune,
// checkpoint) never touch Gorgonia types.
//
// What Gorgonia lacks for ONNX (asymmetric pads, ceil_mode pooling,
// average pooling, batch normalization with ONNX's running statistics,
// seeded dropout, the decoupled convolution itself) is written here as
// Gorgonia operations with their own gradients; Gorgonia itself is not
// patched. Convolutions and Relu are operations of this package too,
// for speed: a convolution gathers its input's columns (im2col.go), one
// row per patch value and one column per output location, and multiplies
// them by the filters with one BLAS product, splitting its loops over the
// CPUs; the filter gradient reuses the forward pass's columns. The BLAS
// is gonum's pure Go one, or OpenBLAS with the openblas build tag (see
// BLAS and gemm.go).
package engine
