package engine

import (
	"fmt"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestBroadcastShape checks numpy's broadcasting rules.
func TestBroadcastShape(t *testing.T) {
	tests := []struct {
		a, b, want []int
		ok         bool
	}{
		{[]int{2, 3, 4}, []int{4}, []int{2, 3, 4}, true},
		{[]int{2, 1, 4}, []int{3, 1}, []int{2, 3, 4}, true},
		{[]int{1}, []int{5, 2}, []int{5, 2}, true},
		{[]int{2, 3}, []int{3, 2}, nil, false},
		{[]int{}, []int{2, 2}, []int{2, 2}, true},
	}
	for _, tt := range tests {
		got, err := broadcastShape(tt.a, tt.b)
		if (err == nil) != tt.ok || !slices.Equal(got, tt.want) {
			t.Errorf("broadcastShape(%v, %v) = %v, %v; want %v (ok %t)", tt.a, tt.b, got, err, tt.want, tt.ok)
		}
	}
	if _, err := alignShapes([]int{3, 2}, []int{2}); err == nil {
		t.Error("alignShapes accepted a larger rank")
	}
}

// TestForBroadcast checks the index map of a broadcast and that the
// expansion and the sum are adjoint: <expand(a), b> = <a, sumTo(b)>.
func TestForBroadcast(t *testing.T) {
	var got [][2]int
	forBroadcast([]int{3, 1}, []int{2, 3, 2}, func(i, j int) { got = append(got, [2]int{i, j}) })
	want := [][2]int{{0, 0}, {1, 0}, {2, 1}, {3, 1}, {4, 2}, {5, 2}, {6, 0}, {7, 0}, {8, 1}, {9, 1}, {10, 2}, {11, 2}}
	if !slices.Equal(got, want) {
		t.Errorf("forBroadcast = %v, want %v", got, want)
	}

	small, big := []int{1, 3, 1}, []int{2, 3, 4}
	a := tensor.New(tensor.WithShape(small...), tensor.WithBacking([]float64{1, 2, 3}))
	bData := make([]float64, 24)
	for i := range bData {
		bData[i] = float64(i%7) - 3
	}
	b := tensor.New(tensor.WithShape(big...), tensor.WithBacking(bData))
	ea, err := (&expandOp{from: small, to: big}).Do(a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := (&sumToOp{from: big, to: small}).Do(b)
	if err != nil {
		t.Fatal(err)
	}
	lhs, rhs := 0.0, 0.0
	for i, v := range ea.Data().([]float64) {
		lhs += v * bData[i]
	}
	for i, v := range sb.Data().([]float64) {
		rhs += v * []float64{1, 2, 3}[i]
	}
	if !closeTo(lhs, rhs, 1e-12) {
		t.Errorf("<expand(a), b> = %v, <a, sumTo(b)> = %v", lhs, rhs)
	}
}

// TestMatProd checks every transposition of the matrix product against
// direct sums, in both element types, including the [1, K] shapes
// Gorgonia's Mul treats as vectors.
func TestMatProd(t *testing.T) {
	for _, dims := range [][3]int{{2, 3, 4}, {1, 5, 2}, {3, 1, 1}} {
		m, k, n := dims[0], dims[1], dims[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, dt := range []Float{Float32, Float64} {
					name := fmt.Sprintf("%dx%dx%d tA=%t tB=%t %v", m, k, n, ta, tb, dt)
					as, bs := []int{m, k}, []int{k, n}
					if ta {
						as = []int{k, m}
					}
					if tb {
						bs = []int{n, k}
					}
					ad, bd := pattern(m*k, 1), pattern(k*n, 2)
					g := G.NewGraph()
					av, bv := newValue(dt, as), newValue(dt, bs)
					if err := storeF32(av, ad); err != nil {
						t.Fatal(err)
					}
					if err := storeF32(bv, bd); err != nil {
						t.Fatal(err)
					}
					an := newInputNode(g, dt, as, "a", av)
					bn := newInputNode(g, dt, bs, "b", bv)
					y, err := matProd(an, bn, ta, tb)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if !slices.Equal([]int(y.Shape()), []int{m, n}) {
						t.Fatalf("%s: shape %v", name, y.Shape())
					}
					out, err := y.Op().Do(av, bv)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					got, _ := loadF32(out)
					var want []float64
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							s := 0.0
							for l := 0; l < k; l++ {
								x, w := ad[i*k+l], bd[l*n+j]
								if ta {
									x = ad[l*m+i]
								}
								if tb {
									w = bd[j*k+l]
								}
								s += float64(x) * float64(w)
							}
							want = append(want, s)
						}
					}
					checkClose(t, name, got, want, 1e-5)
				}
			}
		}
	}
	g := G.NewGraph()
	a := newInputNode(g, Float32, []int{2, 3}, "a", newValue(Float32, []int{2, 3}))
	if _, err := matProd(a, a, false, false); err == nil {
		t.Error("matProd of [2,3] by [2,3] succeeded")
	}
}
