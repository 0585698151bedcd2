package finetune

import (
	"math"

	"github.com/dcconvert/dcconvert/dcnet"
)

// filterNorms returns |w|_c = sqrt(sum W_c^2 + eps) of each of the rows
// (output channels) of a filter bank w with rows of length n.
func filterNorms(w []float32, n int, eps float64) []float64 {
	rows := len(w) / n
	out := make([]float64, rows)
	for c := range rows {
		var s float64
		for _, x := range w[c*n : (c+1)*n] {
			s += float64(x) * float64(x)
		}
		out[c] = math.Sqrt(s + eps)
	}
	return out
}

// project sets each filter W_c to W_c / |w|_c (DCNET.md section 4).
func project(w []float32, n int, eps float64) {
	for c, norm := range filterNorms(w, n, eps) {
		row := w[c*n : (c+1)*n]
		for i, x := range row {
			row[i] = float32(float64(x) / norm)
		}
	}
}

// orthPenalty returns the orthogonality regulariser of a filter bank,
// l * 0.5 * ||What^T What - I||_F^2 with What the normalised filters
// W_c / |w|_c as columns, and adds its gradient with respect to w to
// grad when grad is not nil.
//
// With G = What^T What - I, the gradient with respect to What is
// 2 l What G; through the normalisation what_c = w_c / |w|_c it is
// g_c / |w|_c - w_c <w_c, g_c> / |w|_c^3 for column c's gradient g_c.
func orthPenalty(w []float32, n int, eps, l float64, grad []float32) float64 {
	norms := filterNorms(w, n, eps)
	rows := len(norms)
	hat := make([]float64, len(w))
	for c := range rows {
		for i := range n {
			hat[c*n+i] = float64(w[c*n+i]) / norms[c]
		}
	}
	gram := make([]float64, rows*rows) // G = What^T What - I
	var penalty float64
	for a := range rows {
		for b := a; b < rows; b++ {
			var s float64
			ra, rb := hat[a*n:(a+1)*n], hat[b*n:(b+1)*n]
			for i := range n {
				s += ra[i] * rb[i]
			}
			if a == b {
				s--
			}
			gram[a*rows+b], gram[b*rows+a] = s, s
			if a == b {
				penalty += s * s
			} else {
				penalty += 2 * s * s
			}
		}
	}
	if grad == nil {
		return 0.5 * l * penalty
	}
	gc := make([]float64, n)
	for c := range rows {
		// g_c = 2 l sum_b hat_b G[b, c]
		clear(gc)
		for b := range rows {
			k := 2 * l * gram[b*rows+c]
			if k == 0 {
				continue
			}
			for i, x := range hat[b*n : (b+1)*n] {
				gc[i] += k * x
			}
		}
		var dot float64
		wc := w[c*n : (c+1)*n]
		for i, x := range wc {
			dot += float64(x) * gc[i]
		}
		nc := norms[c]
		for i, x := range wc {
			grad[c*n+i] += float32(gc[i]/nc - float64(x)*dot/(nc*nc*nc))
		}
	}
	return 0.5 * l * penalty
}

// filterEps returns the eps of a decoupled layer's filter norm.
func filterEps(c dcnet.Config) float64 { return float64(c.Eps) }

// clipScale returns the factor that brings the global L2 norm of the
// gradients to at most limit, as PyTorch's clip_grad_norm_ computes it
// (limit / (norm + 1e-6) when that is below 1, else 1), and the norm.
func clipScale(grads [][]float32, limit float64) (scale, norm float64) {
	var s float64
	for _, g := range grads {
		for _, x := range g {
			s += float64(x) * float64(x)
		}
	}
	norm = math.Sqrt(s)
	if limit <= 0 {
		return 1, norm
	}
	if k := limit / (norm + 1e-6); k < 1 {
		return k, norm
	}
	return 1, norm
}
