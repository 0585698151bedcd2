package dcnet

import (
	"fmt"
	"math"
)

// tolerance bounds the difference of a value from its reference:
// |got - want| <= abs + rel*|want|.
type tolerance struct {
	abs, rel float64
}

// absTol and relTol build one-sided tolerances.
func absTol(a float64) tolerance { return tolerance{abs: a} }
func relTol(r float64) tolerance { return tolerance{rel: r} }

// within reports whether got is within tol of want; NaN is never within.
func (tol tolerance) within(got, want float64) bool {
	return math.Abs(got-want) <= tol.abs+tol.rel*math.Abs(want)
}

// compare returns an error naming the first value of got outside tol of
// want, and the largest difference.
func (tol tolerance) compare(got, want []float64) (float64, error) {
	if len(got) != len(want) {
		return 0, fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	var worst float64
	var first error
	for i := range want {
		d := math.Abs(got[i] - want[i])
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		worst = max(worst, d)
		if !tol.within(got[i], want[i]) && first == nil {
			first = fmt.Errorf("value %d: got %.9g, want %.9g (difference %.3g, tolerance %g + %g*|want|)",
				i, got[i], want[i], d, tol.abs, tol.rel)
		}
	}
	return worst, first
}

// maxAbs returns the largest magnitude in v.
func maxAbs(v []float64) float64 {
	var m float64
	for _, x := range v {
		m = max(m, math.Abs(x))
	}
	return m
}

// allConfigs returns every magnitude x angular x weighting, with a fixed
// radius of rho, and once more with a learnable radius for magnitudes that
// need one. Alpha, beta and k vary with the index so that the constants 1
// and not 1 are both exercised.
func allConfigs(rho float32) []Config {
	var out []Config
	i := 0
	for _, learn := range []bool{false, true} {
		for _, m := range Magnitudes() {
			for _, a := range Angulars() {
				for _, w := range Weightings() {
					c := DefaultConfig()
					c.Magnitude, c.Angular, c.Weighted = m, a, w
					if learn && !c.NeedsRho() {
						continue
					}
					c.LearnRho = learn
					if c.NeedsRho() && !learn {
						c.Rho = rho
					}
					if i%3 == 1 {
						c.Alpha = 1.5
					}
					if i%4 == 2 {
						c.Beta, c.K = 0.25, 0.5
					}
					c.ChannelScale = i%2 == 1
					out = append(out, c)
					i++
				}
			}
		}
	}
	return out
}
