//go:build !openblas

package engine

// BLAS names the BLAS implementation the engine uses: gonum's pure Go one
// unless built with the openblas tag.
const BLAS = "gonum"

// blasPureGo reports that the BLAS is gonum's pure Go one, whose
// products the engine partly blocks itself (gemm.go).
const blasPureGo = true
