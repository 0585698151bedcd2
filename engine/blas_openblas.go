//go:build openblas

package engine

import (
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/netlib/blas/netlib"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// With the openblas build tag every matrix product (Gorgonia's, the
// tensor package's and the engine's own kernels, which go through gonum's
// blas32/blas64) runs on the system's CBLAS through gonum's netlib
// binding: build with
//
//	CGO_LDFLAGS=-lopenblas go build -tags openblas ./...
//
// on a machine with libopenblas-dev. A build tag can only switch
// implementations at start-up, so this file uses init.
func init() {
	impl := netlib.Implementation{}
	blas32.Use(impl)
	blas64.Use(impl)
	G.Use(impl)
	tensor.Use(impl)
}

// BLAS names the BLAS implementation the engine uses.
const BLAS = "openblas"

// blasPureGo reports that the BLAS is not gonum's pure Go one: every
// product goes to OpenBLAS as it is (gemm.go).
const blasPureGo = false
