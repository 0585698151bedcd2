package engine

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"
)

// The matrix products of the convolutions have one small dimension (the
// filters, or the patch length) and one very long one (every output
// location of the batch). Gonum's pure Go BLAS cuts every product into
// 64 x 64 blocks, each a loop of level-1 calls over 64 values, and runs a
// product on one goroutine when its result has fewer than four blocks;
// for these shapes that spends much of the time on call overhead, or on
// one CPU. With that BLAS (blasPureGo) gemm and gemmReduce therefore cut
// the long dimension themselves into gemmBlock-long runs, spread over the
// CPUs, and hand each run to the level-1 routines. With OpenBLAS every
// product goes to BLAS as it is.

// gemmBlock is the length of the runs the pure Go paths hand to one
// level-1 BLAS call.
const gemmBlock = 1024

// gemmMinWork is the number of multiply-adds below which a product goes
// to BLAS as it is.
const gemmMinWork = 1 << 20

// gemm computes c = a' * b' + beta * c, where a' is the m x k matrix a
// (or a transposed when transA) and b' the k x n matrix b (or b
// transposed when transB), all row-major with leading dimensions lda, ldb
// and ldc. It uses gonum's blas32 or blas64 implementation, whichever is
// installed there (see BLAS); with the pure Go one a product without
// transposes and with long rows is cut into column blocks (gemmWide).
func gemm[T opFloat](transA, transB bool, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if blasPureGo && !transA && !transB && n >= 2*gemmBlock && m*n*k >= gemmMinWork {
		gemmWide(m, n, k, a, lda, b, ldb, beta, c, ldc)
		return
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	switch a := any(a).(type) {
	case []float32:
		blas32.Implementation().Sgemm(ta, tb, m, n, k, 1, a, lda, any(b).([]float32), ldb, float32(beta), any(c).([]float32), ldc)
	case []float64:
		blas64.Implementation().Dgemm(ta, tb, m, n, k, 1, a, lda, any(b).([]float64), ldb, float64(beta), any(c).([]float64), ldc)
	}
}

// gemmWide computes c = a * b + beta * c like gemm, one block of
// gemmBlock columns of c at a time, the blocks spread over GOMAXPROCS
// goroutines: each row of a block is scaled by beta and gets one axpy of
// a row of b's block per value of a, in order (the order gonum's BLAS
// adds them in).
func gemmWide[T opFloat](m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	axpy, _ := levelOne[T]()
	blocks := (n + gemmBlock - 1) / gemmBlock
	im2colParallel(blocks, func(jb int) {
		j0, j1 := jb*gemmBlock, min((jb+1)*gemmBlock, n)
		for i := range m {
			crow := c[i*ldc+j0 : i*ldc+j1]
			switch beta {
			case 0:
				clear(crow)
			case 1:
			default:
				for j := range crow {
					crow[j] *= beta
				}
			}
			for l, v := range a[i*lda : i*lda+k] {
				if v != 0 {
					axpy(v, b[l*ldb+j0:l*ldb+j1], crow)
				}
			}
		}
	})
}

// gemmReduce computes c = a * b^T for an m x k matrix a and an n x k
// matrix b, both row-major with leading dimensions lda and ldb, into c
// with leading dimension ldc: a product with a small result and a long
// reduction, like the filter gradient of a convolution. With gonum's pure
// Go BLAS (blasPureGo) the reduction is split into one range per CPU,
// each on its own goroutine adding dot products of gemmBlock-long runs
// into its part of part (grown to workers*m*n values and returned), and
// the parts are added up in order. Otherwise it is one BLAS product.
func gemmReduce[T opFloat](m, n, k int, a []T, lda int, b []T, ldb int, c []T, ldc int, part []T) []T {
	if !blasPureGo || m*n*k < gemmMinWork {
		gemm(false, true, m, n, k, a, lda, b, ldb, 0, c, ldc)
		return part
	}
	_, dot := levelOne[T]()
	workers := im2colWorkers((k + gemmBlock - 1) / gemmBlock)
	part = decoupledGrow(part, workers*m*n)
	im2colParallelRange(workers, func(w, _, _ int) {
		lo, hi := w*k/workers, (w+1)*k/workers
		p := part[w*m*n : (w+1)*m*n]
		clear(p)
		for l0 := lo; l0 < hi; l0 += gemmBlock {
			l1 := min(l0+gemmBlock, hi)
			for i := range m {
				ar := a[i*lda+l0 : i*lda+l1]
				prow := p[i*n : (i+1)*n]
				for j := range prow {
					prow[j] += dot(ar, b[j*ldb+l0:j*ldb+l1])
				}
			}
		}
	})
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		copy(row, part[i*n:(i+1)*n])
		for w := 1; w < workers; w++ {
			for j, v := range part[w*m*n+i*n : w*m*n+(i+1)*n] {
				row[j] += v
			}
		}
	}
	return part
}

// levelOne returns the installed BLAS's axpy (y += alpha*x) and dot
// product for element type T, on unit-stride slices of equal length.
func levelOne[T opFloat]() (axpy func(alpha T, x, y []T), dot func(x, y []T) T) {
	var z T
	if _, ok := any(z).(float32); ok {
		impl := blas32.Implementation()
		axpy = func(alpha T, x, y []T) {
			impl.Saxpy(len(x), float32(alpha), any(x).([]float32), 1, any(y).([]float32), 1)
		}
		dot = func(x, y []T) T {
			return T(impl.Sdot(len(x), any(x).([]float32), 1, any(y).([]float32), 1))
		}
		return axpy, dot
	}
	impl := blas64.Implementation()
	axpy = func(alpha T, x, y []T) {
		impl.Daxpy(len(x), float64(alpha), any(x).([]float64), 1, any(y).([]float64), 1)
	}
	dot = func(x, y []T) T {
		return T(impl.Ddot(len(x), any(x).([]float64), 1, any(y).([]float64), 1))
	}
	return axpy, dot
}
