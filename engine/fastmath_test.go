package engine

import (
	"math"
	"testing"
)

// TestFastMath compares asin32, tanh32 and exp32 with the math package
// on dense grids over their ranges, ends included.
func TestFastMath(t *testing.T) {
	tests := []struct {
		name   string
		f, ref func(float64) float64
		lo, hi float64
		rel    bool    // relative error, not absolute
		tol    float64 // bound on the error
	}{
		{"asin32", asin32, math.Asin, -1, 1, false, 1e-8},
		{"tanh32", tanh32, math.Tanh, -25, 25, false, 1e-8},
		{"exp32", exp32, math.Exp, 0, 700, true, 1e-9},
	}
	const steps = 1 << 20
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			worst, at := 0.0, 0.0
			for i := 0; i <= steps; i++ {
				x := tc.lo + (tc.hi-tc.lo)*float64(i)/steps
				got, want := tc.f(x), tc.ref(x)
				e := math.Abs(got - want)
				if tc.rel {
					e /= want
				}
				if !(e <= worst) {
					worst, at = e, x
				}
			}
			if !(worst <= tc.tol) {
				t.Errorf("%s: error %.3g at %g, want at most %g", tc.name, worst, at, tc.tol)
			}
		})
	}
	if v := tanh32(math.NaN()); !math.IsNaN(v) {
		t.Errorf("tanh32(NaN) = %g, want NaN", v)
	}
}
