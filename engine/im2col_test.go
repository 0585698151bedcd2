package engine

import (
	"math"
	"math/rand/v2"
	"testing"
)

// im2colNaive is the definition of the column matrix, one value at a
// time, for checking im2colCols.
func im2colNaive(g im2colGeom, x []float64) []float64 {
	rows := g.locations()
	cols := make([]float64, rows*g.patch())
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
							cols[((c*g.kH+ki)*g.kW+kj)*rows+row] = x[((n*g.inC+c)*g.inH+ih)*g.inW+iw]
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

// TestIm2colCols compares the columns and their sums of squares with
// the one-value-at-a-time definition, in float64 and float32.
func TestIm2colCols(t *testing.T) {
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
			im2colCols(g, x, cols)
			for i := range want {
				if cols[i] != want[i] { // a copy: exact
					t.Fatalf("cols[%d] = %g, want %g", i, cols[i], want[i])
				}
			}
			sq := make([]float64, g.locations())
			for i := range sq {
				sq[i] = math.NaN() // every value must be written
			}
			im2colSquares(g, x, sq)
			rows := g.locations()
			for r := range rows {
				var s float64
				for k := range g.patch() {
					s += want[k*rows+r] * want[k*rows+r]
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
			im2colCols(g, x32, cols32)
			for i := range want {
				if cols32[i] != float32(want[i]) { // a copy: exact
					t.Fatalf("float32 cols[%d] = %g, want %g", i, cols32[i], want[i])
				}
			}
		})
	}
}

// TestCol2imColsAdjoint checks <im2col(x), c> = <x, col2im(c)> for
// random x and c, which makes col2imCols the exact adjoint.
func TestCol2imColsAdjoint(t *testing.T) {
	for name, g := range im2colTestGeoms() {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(3, 4))
			x := make([]float64, g.inSize())
			for i := range x {
				x[i] = rng.Float64()*2 - 1
			}
			c := make([]float64, g.locations()*g.patch())
			for i := range c {
				c[i] = rng.Float64()*2 - 1
			}
			cols := make([]float64, len(c))
			im2colCols(g, x, cols)
			dx := make([]float64, len(x))
			for i := range dx {
				dx[i] = 7 // must be overwritten, not accumulated into
			}
			col2imCols(g, c, dx)
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

// TestCol2imAddScaled compares col2imAddScaled with col2imCols of the
// columns scaled per location, added to what dx held.
func TestCol2imAddScaled(t *testing.T) {
	for name, g := range im2colTestGeoms() {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(5, 6))
			x := make([]float64, g.inSize())
			for i := range x {
				x[i] = rng.Float64()*2 - 1
			}
			s := make([]float64, g.locations())
			for i := range s {
				s[i] = rng.Float64()*2 - 1
			}
			cols := im2colNaive(g, x)
			rows := g.locations()
			for i := range cols {
				cols[i] *= s[i%rows]
			}
			want := make([]float64, len(x))
			col2imCols(g, cols, want)
			got := make([]float64, len(x))
			for i := range got {
				got[i] = 3
				want[i] += 3
			}
			col2imAddScaled(g, x, s, got)
			for i := range want {
				if math.Abs(got[i]-want[i]) > 1e-14*(1+math.Abs(want[i])) { // tolerance: summation order
					t.Fatalf("dx[%d] = %.17g, want %.17g", i, got[i], want[i])
				}
			}
		})
	}
}
