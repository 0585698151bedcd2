package engine

import (
	"math"
	"math/rand/v2"
	"testing"
)

// im2colNaive is the definition of the column matrix, one value at a
// time, for checking im2colRows.
func im2colNaive(g im2colGeom, x []float64) []float64 {
	k := g.width()
	cols := make([]float64, g.rows()*k)
	for n := range g.batch {
		for oh := range g.outH {
			for ow := range g.outW {
				row := (n*g.outH+oh)*g.outW + ow
				for c := range g.inC {
					for ki := range g.kH {
						for kj := range g.kW {
							ih := oh*g.strideH - g.padTop + ki*g.dilH
							iw := ow*g.strideW - g.padLeft + kj*g.dilW
							if ih < 0 || ih >= g.inH || iw < 0 || iw >= g.inW {
								continue
							}
							cols[row*k+(c*g.kH+ki)*g.kW+kj] = x[((n*g.inC+c)*g.inH+ih)*g.inW+iw]
						}
					}
				}
			}
		}
	}
	return cols
}

// im2colTestGeoms are geometries with asymmetric pads, strides,
// dilations, a 1x1 kernel and windows reaching past both ends.
func im2colTestGeoms() map[string]im2colGeom {
	return map[string]im2colGeom{
		"3x3 pad 1": {batch: 2, inC: 3, inH: 5, inW: 6, kH: 3, kW: 3, outH: 5, outW: 6,
			strideH: 1, strideW: 1, dilH: 1, dilW: 1, padTop: 1, padLeft: 1},
		"pads 1,0,2,1 strides 2,1 dilations 1,2": {batch: 2, inC: 2, inH: 5, inW: 6, kH: 3, kW: 3, outH: 3, outW: 3,
			strideH: 2, strideW: 1, dilH: 1, dilW: 2, padTop: 1, padLeft: 0},
		"1x1 stride 2": {batch: 3, inC: 4, inH: 5, inW: 4, kH: 1, kW: 1, outH: 3, outW: 2,
			strideH: 2, strideW: 2, dilH: 1, dilW: 1},
		"window past both ends": {batch: 1, inC: 2, inH: 3, inW: 3, kH: 3, kW: 3, outH: 4, outW: 4,
			strideH: 1, strideW: 1, dilH: 2, dilW: 2, padTop: 3, padLeft: 3},
	}
}

// TestIm2colRows compares the columns and their row sums of squares with
// the one-value-at-a-time definition, in float64 and float32.
func TestIm2colRows(t *testing.T) {
	for name, g := range im2colTestGeoms() {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			x := make([]float64, g.inSize())
			for i := range x {
				x[i] = rng.Float64()*2 - 1
			}
			want := im2colNaive(g, x)
			cols := make([]float64, len(want))
			for i := range cols {
				cols[i] = math.NaN() // every value must be written
			}
			sq := make([]float64, g.rows())
			im2colRows(g, x, cols, sq)
			for i := range want {
				if cols[i] != want[i] { // a copy: exact
					t.Fatalf("cols[%d] = %g, want %g", i, cols[i], want[i])
				}
			}
			k := g.width()
			for r := range g.rows() {
				var s float64
				for _, v := range want[r*k : (r+1)*k] {
					s += v * v
				}
				if math.Abs(sq[r]-s) > 1e-14*(1+s) { // tolerance: float64 summation order
					t.Errorf("sq[%d] = %g, want %g", r, sq[r], s)
				}
			}

			x32 := make([]float32, len(x))
			for i, v := range x {
				x32[i] = float32(v)
			}
			cols32 := make([]float32, len(want))
			im2colRows(g, x32, cols32, nil)
			for i := range want {
				if cols32[i] != float32(want[i]) { // a copy: exact
					t.Fatalf("float32 cols[%d] = %g, want %g", i, cols32[i], want[i])
				}
			}
		})
	}
}

// TestCol2imRowsAdjoint checks <im2col(x), c> = <x, col2im(c)> for
// random x and c, which makes col2imRows the exact adjoint.
func TestCol2imRowsAdjoint(t *testing.T) {
	for name, g := range im2colTestGeoms() {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			x := make([]float64, g.inSize())
			for i := range x {
				x[i] = rng.Float64()*2 - 1
			}
			c := make([]float64, g.rows()*g.width())
			for i := range c {
				c[i] = rng.Float64()*2 - 1
			}
			cols := make([]float64, len(c))
			im2colRows(g, x, cols, nil)
			dx := make([]float64, len(x))
			for i := range dx {
				dx[i] = 7 // must be overwritten, not accumulated into
			}
			col2imRows(g, c, dx)
			var lhs, rhs, scale float64
			for i := range c {
				lhs += cols[i] * c[i]
				scale += math.Abs(cols[i] * c[i])
			}
			for i := range x {
				rhs += x[i] * dx[i]
			}
			if math.Abs(lhs-rhs) > 1e-13*scale { // tolerance: summation order
				t.Errorf("<im2col(x), c> = %.17g, <x, col2im(c)> = %.17g", lhs, rhs)
			}
		})
	}
}
