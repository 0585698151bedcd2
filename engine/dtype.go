package engine

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Float is the element type of an engine: float32 for work, float64 for
// gradient checks.
type Float = tensor.Dtype

// Element types an engine computes in.
var (
	Float32 Float = G.Float32
	Float64 Float = G.Float64
)
