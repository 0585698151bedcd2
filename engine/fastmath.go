package engine

import "math"

// Float32-accuracy versions of the transcendental functions that the
// decoupled convolution evaluates once per output value. Kernels on
// float32 values use them: their absolute error (below 1e-8, see
// fastmath_test.go) is a fraction of float32's rounding of the results,
// and they cost a fraction of the math package's functions, exact to
// float64. Kernels on float64 values, and so the gradient checks, use the
// math package.

// asin32 returns asin(x) for x in [-1, 1] with an absolute error below
// 1e-8: Cephes' asinf polynomial on [0, 1/2], and asin(x) = pi/2 -
// 2 asin(sqrt((1-x)/2)) above, evaluated in float64.
func asin32(x float64) float64 {
	a := math.Abs(x)
	z := a * a
	big := a > 0.5
	if big {
		z = 0.5 * (1 - a)
		a = math.Sqrt(z)
	}
	r := ((((4.2163199048e-2*z+2.4181311049e-2)*z+4.5470025998e-2)*z+7.4953002686e-2)*z+1.6666752422e-1)*z*a + a
	if big {
		r = math.Pi/2 - 2*r
	}
	return math.Copysign(r, x)
}

// exp32 returns e^x for x in [0, 700] with a relative error below 1e-9:
// x = n ln 2 + r with |r| <= ln(2)/2, e^r from its Taylor polynomial of
// degree 8, and 2^n from the exponent bits.
func exp32(x float64) float64 {
	n := float64(int64(x*math.Log2E + 0.5)) // x >= 0: the nearest integer
	r := x - n*math.Ln2
	p := 1 + r*(1+r*(1.0/2+r*(1.0/6+r*(1.0/24+r*(1.0/120+r*(1.0/720+r*(1.0/5040+r*(1.0/40320))))))))
	return p * math.Float64frombits(uint64(int64(n)+1023)<<52)
}

// tanh32 returns tanh(y) with an absolute error below 1e-8: Cephes'
// tanhf polynomial for |y| < 0.625, 1 - 2/(e^(2|y|)+1) (exp32) up to 20,
// and +-1 beyond; NaN stays NaN.
func tanh32(y float64) float64 {
	a := math.Abs(y)
	switch {
	case a < 0.625:
		z := y * y
		return ((((-5.70498872745e-3*z+2.06390887954e-2)*z-5.37397155531e-2)*z+1.33314422036e-1)*z-3.33332819422e-1)*z*y + y
	case a > 20:
		return math.Copysign(1, y)
	case a >= 0.625:
		return math.Copysign(1-2/(exp32(2*a)+1), y)
	}
	return y // NaN
}
