package engine

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// gemmNaive returns a' * b' + beta * c for row-major matrices with leading
// dimensions lda, ldb and ldc, one value at a time in float64.
func gemmNaive(transA, transB bool, m, n, k int, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) []float64 {
	out := make([]float64, len(c))
	copy(out, c)
	for i := range m {
		for j := range n {
			var s float64
			for l := range k {
				ai, bi := i*lda+l, l*ldb+j
				if transA {
					ai = l*lda + i
				}
				if transB {
					bi = j*ldb + l
				}
				s += a[ai] * b[bi]
			}
			out[i*ldc+j] = s + beta*c[i*ldc+j]
		}
	}
	return out
}

// gemmCase is one product of the gemm tests: sizes, transposes and the
// padding of every leading dimension beyond its minimum.
type gemmCase struct {
	m, n, k        int
	transA, transB bool
	pad            int
}

// gemmCases are products that go to BLAS as they are and products long
// enough for the blocked paths (with gonum's BLAS), with padded leading
// dimensions.
var gemmCases = []gemmCase{
	{m: 3, n: 5, k: 4},
	{m: 4, n: 3, k: 5, transA: true, pad: 2},
	{m: 5, n: 4, k: 3, transB: true, pad: 1},
	{m: 9, n: 3*gemmBlock + 17, k: 40},
	{m: 12, n: 2*gemmBlock + 5, k: 50, pad: 3},
	{m: 40, n: 2 * gemmBlock, k: 16, transA: true},
}

// randomFloats returns n values uniform in [-1, 1).
func randomFloats(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.Float64()*2 - 1
	}
	return v
}

// toFloat32 rounds values to float32.
func toFloat32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

// checkGemm compares got with want, |got - want| <= tol * (1 + |want|).
func checkGemm[T opFloat](t *testing.T, what string, got []T, want []float64, tol float64) {
	t.Helper()
	for i, w := range want {
		if g := float64(got[i]); !(math.Abs(g-w) <= tol*(1+math.Abs(w))) {
			t.Fatalf("%s[%d] = %.10g, want %.10g (tolerance %g)", what, i, g, w, tol)
		}
	}
}

// TestGemm compares gemm with the one-value-at-a-time product for every
// case and beta 0, 1 and 0.5, in float64 and float32.
func TestGemm(t *testing.T) {
	for _, c := range gemmCases {
		for _, beta := range []float64{0, 1, 0.5} {
			t.Run(fmt.Sprintf("%+v beta %g", c, beta), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(5, uint64(c.n)))
				ar, ac, br, bc := c.m, c.k, c.k, c.n
				if c.transA {
					ar, ac = ac, ar
				}
				if c.transB {
					br, bc = bc, br
				}
				lda, ldb, ldc := ac+c.pad, bc+c.pad, c.n+c.pad
				a := randomFloats(rng, (ar-1)*lda+ac)
				b := randomFloats(rng, (br-1)*ldb+bc)
				cv := randomFloats(rng, (c.m-1)*ldc+c.n)
				want := gemmNaive(c.transA, c.transB, c.m, c.n, c.k, a, lda, b, ldb, beta, cv, ldc)

				got := append([]float64(nil), cv...)
				gemm(c.transA, c.transB, c.m, c.n, c.k, a, lda, b, ldb, beta, got, ldc)
				checkGemm(t, "float64", got, want, 1e-12) // tolerance: summation order

				got32 := toFloat32(cv)
				gemm(c.transA, c.transB, c.m, c.n, c.k, toFloat32(a), lda, toFloat32(b), ldb, float32(beta), got32, ldc)
				checkGemm(t, "float32", got32, want, 1e-4) // tolerance: float32 rounding over k terms
			})
		}
	}
}

// TestGemmReduce compares gemmReduce (a * b^T) with the one-value-at-a-
// time product, for a short and a long reduction, reusing its partial
// sums buffer, in float64 and float32.
func TestGemmReduce(t *testing.T) {
	for _, c := range []gemmCase{{m: 3, n: 4, k: 7, pad: 1}, {m: 6, n: 10, k: 5*gemmBlock*4 + 3, pad: 2}, {m: 16, n: 9, k: 8 * gemmBlock}} {
		t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(6, uint64(c.k)))
			lda, ldb, ldc := c.k+c.pad, c.k+c.pad, c.n+c.pad
			a := randomFloats(rng, (c.m-1)*lda+c.k)
			b := randomFloats(rng, (c.n-1)*ldb+c.k)
			cv := randomFloats(rng, (c.m-1)*ldc+c.n) // overwritten: beta 0
			want := gemmNaive(false, true, c.m, c.n, c.k, a, lda, b, ldb, 0, cv, ldc)
			var part []float64
			for range 2 {
				got := append([]float64(nil), cv...)
				part = gemmReduce(c.m, c.n, c.k, a, lda, b, ldb, got, ldc, part)
				checkGemm(t, "float64", got, want, 1e-12) // tolerance: summation order
			}
			got32 := toFloat32(cv)
			gemmReduce(c.m, c.n, c.k, toFloat32(a), lda, toFloat32(b), ldb, got32, ldc, nil)
			checkGemm(t, "float32", got32, want, 1e-3) // tolerance: float32 sums of up to 40000 terms
		})
	}
}
