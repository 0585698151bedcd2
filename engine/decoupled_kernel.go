package engine

import (
	"math"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/dcconvert/dcconvert/dcnet"
)

// The magnitude functions, angular activations and weightings of
// dcnet.Config as small integers, so the element loops switch on ints.
const (
	decoupledMagSphere = iota
	decoupledMagBall
	decoupledMagTanh
	decoupledMagLinear
	decoupledMagSeg
	decoupledMagLog
	decoupledMagMix
)

const (
	decoupledAngCos = iota
	decoupledAngLinear
	decoupledAngSigmoid
	decoupledAngSqcos
)

const (
	decoupledWeightNone = iota
	decoupledWeightLinear
	decoupledWeightLog
)

// decoupledAcosMargin keeps the derivative of acos finite: it is evaluated
// at the cosine clamped to [-1+margin, 1-margin] (DCNET.md section 1).
const decoupledAcosMargin = 1e-6

// decoupledMath is the scalar part of a decoupled convolution's
// configuration in float64: h, g and m with their derivatives.
type decoupledMath struct {
	mag, ang, weighted int
	alpha, beta, eps   float64
	// sigK and sigInv2k are K = 1/tanh(pi/(4k)) and 1/(2k) of the sigmoid
	// activation.
	sigK, sigInv2k float64
	// rho is the fixed radius (used when learnRho is false).
	rho float64
	// hasRho reports whether the magnitude uses a radius; learnRho whether
	// it is rho_c = (v_c^2 + 1e-4) * scale.
	hasRho, learnRho bool
	// train selects the batch mean of N as scale (learnable radius only).
	train bool
}

// newDecoupledMath converts a validated configuration.
func newDecoupledMath(c dcnet.Config, train bool) decoupledMath {
	m := decoupledMath{
		alpha:    float64(c.Alpha),
		beta:     float64(c.Beta),
		eps:      float64(c.Eps),
		rho:      float64(c.Rho),
		hasRho:   c.NeedsRho(),
		learnRho: c.NeedsRho() && c.LearnRho,
		train:    train,
	}
	switch c.Magnitude {
	case dcnet.MagSphere:
		m.mag = decoupledMagSphere
	case dcnet.MagBall:
		m.mag = decoupledMagBall
	case dcnet.MagTanh:
		m.mag = decoupledMagTanh
	case dcnet.MagSeg:
		m.mag = decoupledMagSeg
	case dcnet.MagLog:
		m.mag = decoupledMagLog
	case dcnet.MagMix:
		m.mag = decoupledMagMix
	default:
		m.mag = decoupledMagLinear
	}
	switch c.Angular {
	case dcnet.AngLinear:
		m.ang = decoupledAngLinear
	case dcnet.AngSigmoid:
		m.ang = decoupledAngSigmoid
		k := float64(c.K)
		m.sigK = 1 / math.Tanh(math.Pi/(4*k))
		m.sigInv2k = 1 / (2 * k)
	case dcnet.AngSqcos:
		m.ang = decoupledAngSqcos
	default:
		m.ang = decoupledAngCos
	}
	switch c.Weighted {
	case dcnet.WeightLinear:
		m.weighted = decoupledWeightLinear
	case dcnet.WeightLog:
		m.weighted = decoupledWeightLog
	default:
		m.weighted = decoupledWeightNone
	}
	return m
}

// magnitude returns h(n) for patch norm n and radius rho.
func (m *decoupledMath) magnitude(n, rho float64) float64 {
	switch m.mag {
	case decoupledMagSphere:
		return m.alpha
	case decoupledMagBall:
		if n <= rho {
			return m.alpha * n / rho
		}
		return m.alpha
	case decoupledMagTanh:
		return m.alpha * math.Tanh(n/rho)
	case decoupledMagSeg:
		if n <= rho {
			return m.alpha * n
		}
		return m.beta*n + m.alpha*rho - m.beta*rho
	case decoupledMagLog:
		return m.alpha * math.Log1p(n)
	case decoupledMagMix:
		return m.alpha*n + m.beta*math.Log1p(n)
	default:
		return m.alpha * n
	}
}

// magnitudeDiff returns h(n) and its partial derivatives by n and by rho.
// At n == rho, ball and seg take the branch n <= rho.
func (m *decoupledMath) magnitudeDiff(n, rho float64) (h, dn, drho float64) {
	switch m.mag {
	case decoupledMagSphere:
		return m.alpha, 0, 0
	case decoupledMagBall:
		if n <= rho {
			return m.alpha * n / rho, m.alpha / rho, -m.alpha * n / (rho * rho)
		}
		return m.alpha, 0, 0
	case decoupledMagTanh:
		t := math.Tanh(n / rho)
		d := m.alpha * (1 - t*t) / rho
		return m.alpha * t, d, -d * n / rho
	case decoupledMagSeg:
		if n <= rho {
			return m.alpha * n, m.alpha, 0
		}
		return m.beta*n + m.alpha*rho - m.beta*rho, m.beta, m.alpha - m.beta
	case decoupledMagLog:
		return m.alpha * math.Log1p(n), m.alpha / (1 + n), 0
	case decoupledMagMix:
		return m.alpha*n + m.beta*math.Log1p(n), m.alpha + m.beta/(1+n), 0
	default:
		return m.alpha * n, m.alpha, 0
	}
}

// angular returns g(cos) for a cosine already clamped to [-1, 1].
func (m *decoupledMath) angular(cos float64) float64 {
	switch m.ang {
	case decoupledAngLinear:
		return 1 - 2*math.Acos(cos)/math.Pi
	case decoupledAngSigmoid:
		return m.sigK * math.Tanh((math.Pi/2-math.Acos(cos))*m.sigInv2k)
	case decoupledAngSqcos:
		return cos * math.Abs(cos)
	default:
		return cos
	}
}

// angularDiff returns g(cos) and dg/dcos for a cosine already clamped to
// [-1, 1]; the derivative of acos is taken at cos clamped to
// [-1+1e-6, 1-1e-6].
func (m *decoupledMath) angularDiff(cos float64) (g, d float64) {
	switch m.ang {
	case decoupledAngLinear:
		cc := max(-1+decoupledAcosMargin, min(1-decoupledAcosMargin, cos))
		return 1 - 2*math.Acos(cos)/math.Pi, 2 / (math.Pi * math.Sqrt(1-cc*cc))
	case decoupledAngSigmoid:
		cc := max(-1+decoupledAcosMargin, min(1-decoupledAcosMargin, cos))
		t := math.Tanh((math.Pi/2 - math.Acos(cos)) * m.sigInv2k)
		return m.sigK * t, m.sigK * (1 - t*t) * m.sigInv2k / math.Sqrt(1-cc*cc)
	case decoupledAngSqcos:
		return cos * math.Abs(cos), 2 * math.Abs(cos)
	default:
		return cos, 1
	}
}

// angularCached reports whether g is costly enough (it needs acos) that
// the forward keeps its values for the backward.
func (m *decoupledMath) angularCached() bool {
	return m.ang == decoupledAngLinear || m.ang == decoupledAngSigmoid
}

// angularDiffAt returns dg/dcos like angularDiff, given g = g(cos) as
// the forward computed it, without evaluating acos or tanh again.
func (m *decoupledMath) angularDiffAt(cos, g float64) float64 {
	cc := max(-1+decoupledAcosMargin, min(1-decoupledAcosMargin, cos))
	switch m.ang {
	case decoupledAngLinear:
		return 2 / (math.Pi * math.Sqrt(1-cc*cc))
	case decoupledAngSigmoid:
		t := g / m.sigK
		return m.sigK * (1 - t*t) * m.sigInv2k / math.Sqrt(1-cc*cc)
	default:
		_, d := m.angularDiff(cos)
		return d
	}
}

// weight returns m(|w|) and its derivative for filter norm wn.
func (m *decoupledMath) weight(wn float64) (mw, d float64) {
	switch m.weighted {
	case decoupledWeightLinear:
		return wn, 1
	case decoupledWeightLog:
		return math.Log1p(wn), 1 / (1 + wn)
	default:
		return 1, 0
	}
}

// decoupledTile is the number of output locations of one image that the
// element loops treat together, for every output channel.
const decoupledTile = 64

// decoupledKernel computes a decoupled convolution and its gradients on
// plain slices: x is NCHW, w is [outC, inC, kH, kW], y and dy are
// [batch, outC, outH, outW]. It keeps its buffers between calls, and the
// intermediate values of the last forward (columns, P, N) for the
// backward that follows it. A kernel is not safe for concurrent use.
type decoupledKernel[T im2colFloat] struct {
	geom im2colGeom
	outC int
	m    decoupledMath

	// Filled by prepare.
	what    []T       // W_c/|w|_c as [outC, K]
	wnorm   []float64 // |w|_c
	mw, dmw []float64 // m(|w|_c) and m'(|w|_c)
	cols    []T       // [M, K] patches, M = geom.rows()
	p       []T       // [M, outC] = cols * what^T
	norm    []float64 // [M] patch norms N
	rho     []float64 // per-channel radius, nil without one
	rhoBuf  []float64 // the array behind rho
	scale   float64   // the radius scale: batch mean of N or RhoScale
	// gval holds g at every output value, [M, outC], when the angular
	// activation is costly (angularCached) and gReady is set: forward
	// fills it, prepare alone does not.
	gval   []T
	gReady bool
	// ready reports that cols, p and norm hold the values of the inputs
	// whose first elements are xKey and wKey (backward scales cols in
	// place, so it clears ready).
	ready      bool
	xKey, wKey *T

	// Backward buffers.
	dp, dpT []T       // dL/dP as [M, outC] and [outC, M]
	dwhat   []T       // dL/d(W/|w|) as [outC, K]
	dn      []float64 // dL/dN per row
	acc     []float64 // per-worker channel sums, 4*outC each
}

// newDecoupledKernel returns a kernel for geometry g, outC output
// channels and the configuration m; buffers are allocated on first use.
func newDecoupledKernel[T im2colFloat](g im2colGeom, outC int, m decoupledMath) *decoupledKernel[T] {
	return &decoupledKernel[T]{geom: g, outC: outC, m: m}
}

// decoupledGrow returns s resized to n values, reusing its array when it
// is large enough.
func decoupledGrow[E any](s []E, n int) []E {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]E, n)
}

// prepare computes the normalised filters, the columns of x, the patch
// norms, P and the radius of every channel. rhoV is nil unless the radius
// is learnable; rhoScale is used at inference only.
func (k *decoupledKernel[T]) prepare(x, w, rhoV []T, rhoScale float64) {
	g := k.geom
	rows, width, outC := g.rows(), g.width(), k.outC
	k.what = decoupledGrow(k.what, outC*width)
	k.wnorm = decoupledGrow(k.wnorm, outC)
	k.mw = decoupledGrow(k.mw, outC)
	k.dmw = decoupledGrow(k.dmw, outC)
	for c := range outC {
		wc := w[c*width : (c+1)*width]
		var s float64
		for _, v := range wc {
			s += float64(v) * float64(v)
		}
		wn := math.Sqrt(s + k.m.eps)
		k.wnorm[c] = wn
		k.mw[c], k.dmw[c] = k.m.weight(wn)
		for i, v := range wc {
			k.what[c*width+i] = T(float64(v) / wn)
		}
	}

	k.cols = decoupledGrow(k.cols, rows*width)
	k.norm = decoupledGrow(k.norm, rows)
	im2colRows(g, x, k.cols, k.norm)
	eps := k.m.eps
	im2colParallelRange(rows, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			k.norm[r] = math.Sqrt(k.norm[r] + eps)
		}
	})

	k.p = decoupledGrow(k.p, rows*outC)
	decoupledGemm(false, true, rows, outC, width, k.cols, width, k.what, width, 0, k.p, outC)

	k.rho = nil
	if k.m.hasRho {
		k.rhoBuf = decoupledGrow(k.rhoBuf, outC)
		k.rho = k.rhoBuf
		if k.m.learnRho {
			if k.m.train {
				var s float64
				for _, v := range k.norm {
					s += v
				}
				k.scale = s / float64(rows)
			} else {
				k.scale = rhoScale
			}
			for c := range outC {
				v := float64(rhoV[c])
				k.rho[c] = (v*v + dcnet.RhoFloor) * k.scale
			}
		} else {
			for c := range outC {
				k.rho[c] = k.m.rho
			}
		}
	}
	k.ready, k.xKey, k.wKey = true, &x[0], &w[0]
	k.gReady = false
}

// forward computes y = A*h(N)*m(|w|)*g(theta)+b into y and returns the
// radius scale it used (the batch mean of N in training with a learnable
// radius). b and alpha are nil when absent; rhoV is nil unless the radius
// is learnable.
func (k *decoupledKernel[T]) forward(x, w, b, alpha, rhoV []T, rhoScale float64, y []T) float64 {
	k.prepare(x, w, rhoV, rhoScale)
	g := k.geom
	outC, locs := k.outC, g.outH*g.outW
	tiles := (locs + decoupledTile - 1) / decoupledTile
	var gval []T
	if k.m.angularCached() {
		k.gval = decoupledGrow(k.gval, g.rows()*outC)
		gval = k.gval
	}
	im2colParallel(g.batch*tiles, func(unit int) {
		n, l0 := unit/tiles, unit%tiles*decoupledTile
		l1 := min(l0+decoupledTile, locs)
		for c := range outC {
			a, bias, rho := 1.0, 0.0, 0.0
			if alpha != nil {
				a = float64(alpha[c])
			}
			if b != nil {
				bias = float64(b[c])
			}
			if k.rho != nil {
				rho = k.rho[c]
			}
			scale := a * k.mw[c]
			yrow := y[(n*outC+c)*locs : (n*outC+c+1)*locs]
			for l := l0; l < l1; l++ {
				r := n*locs + l
				nr := k.norm[r]
				cos := max(-1, min(1, float64(k.p[r*outC+c])/nr))
				gv := k.m.angular(cos)
				if gval != nil {
					gval[r*outC+c] = T(gv)
				}
				yrow[l] = T(scale*k.m.magnitude(nr, rho)*gv + bias)
			}
		}
	})
	k.gReady = gval != nil
	return k.scale
}

// decoupledGradients receives the gradients of one backward pass; a nil
// slice is a gradient that is not wanted (its input is absent).
type decoupledGradients[T im2colFloat] struct {
	dx, dw, db, dalpha, drhoV []T
	// drhoScale is dL/dRhoScale at inference with a learnable radius.
	drhoScale float64
}

// backward computes the gradients of sum(dy * y) for the inputs of the
// last forward (recomputing its intermediate values when they are not for
// x and w) and writes them into out. dx, dw must be given; db, dalpha and
// drhoV exactly when the forward had b, alpha and rhoV.
func (k *decoupledKernel[T]) backward(x, w, alpha, rhoV []T, rhoScale float64, dy []T, out *decoupledGradients[T]) {
	if !k.ready || k.xKey != &x[0] || k.wKey != &w[0] {
		k.prepare(x, w, rhoV, rhoScale)
	}
	k.ready, k.xKey, k.wKey = false, nil, nil // cols become dL/dcols below
	var gval []T
	if k.gReady {
		gval = k.gval
	}
	g := k.geom
	rows, width, outC, locs := g.rows(), g.width(), k.outC, g.outH*g.outW
	tiles := (locs + decoupledTile - 1) / decoupledTile
	units := g.batch * tiles
	workers := im2colWorkers(units)
	k.dp = decoupledGrow(k.dp, rows*outC)
	k.dpT = decoupledGrow(k.dpT, outC*rows)
	k.dn = decoupledGrow(k.dn, rows)
	k.acc = decoupledGrow(k.acc, workers*4*outC)
	clear(k.acc)

	// Element loop: dL/dP, dL/dN and the per-channel sums for B, A,
	// m(|w|) and rho.
	im2colParallelRange(units, func(worker, lo, hi int) {
		acc := k.acc[worker*4*outC : (worker+1)*4*outC]
		accB, accA, accM, accRho := acc[:outC], acc[outC:2*outC], acc[2*outC:3*outC], acc[3*outC:]
		for unit := lo; unit < hi; unit++ {
			n, l0 := unit/tiles, unit%tiles*decoupledTile
			l1 := min(l0+decoupledTile, locs)
			r0 := n * locs
			clear(k.dn[r0+l0 : r0+l1])
			for c := range outC {
				a, rho := 1.0, 0.0
				if alpha != nil {
					a = float64(alpha[c])
				}
				if k.rho != nil {
					rho = k.rho[c]
				}
				mw := k.mw[c]
				dyrow := dy[(n*outC+c)*locs : (n*outC+c+1)*locs]
				dpTrow := k.dpT[c*rows+r0 : c*rows+r0+locs]
				var sB, sA, sM, sRho float64
				for l := l0; l < l1; l++ {
					r := r0 + l
					nr := k.norm[r]
					q := float64(k.p[r*outC+c]) / nr
					cos := max(-1, min(1, q))
					var gv, gd float64
					if gval != nil {
						gv = float64(gval[r*outC+c])
						gd = k.m.angularDiffAt(cos, gv)
					} else {
						gv, gd = k.m.angularDiff(cos)
					}
					hv, hn, hrho := k.m.magnitudeDiff(nr, rho)
					d := float64(dyrow[l])
					sB += d
					sA += d * hv * mw * gv
					t := d * a
					sM += t * hv * gv
					dh := t * mw * gv
					sRho += dh * hrho
					var dq float64
					if q >= -1 && q <= 1 {
						dq = t * hv * mw * gd
					}
					k.dn[r] += dh*hn - dq*q/nr
					dpv := T(dq / nr)
					k.dp[r*outC+c] = dpv
					dpTrow[l] = dpv
				}
				accB[c] += sB
				accA[c] += sA
				accM[c] += sM
				accRho[c] += sRho
			}
		}
	})
	for wk := 1; wk < workers; wk++ {
		for i, v := range k.acc[wk*4*outC : (wk+1)*4*outC] {
			k.acc[i] += v
		}
	}
	accB, accA, accM, accRho := k.acc[:outC], k.acc[outC:2*outC], k.acc[2*outC:3*outC], k.acc[3*outC:4*outC]
	for c := range outC {
		if out.db != nil {
			out.db[c] = T(accB[c])
		}
		if out.dalpha != nil {
			out.dalpha[c] = T(accA[c])
		}
	}

	// The learnable radius: rho_c = (v_c^2 + 1e-4) * scale.
	var dnAll float64 // added to every dL/dN_r: the batch mean's share
	out.drhoScale = 0
	if k.m.learnRho {
		var dscale float64
		for c := range outC {
			v := float64(rhoV[c])
			if out.drhoV != nil {
				out.drhoV[c] = T(accRho[c] * 2 * v * k.scale)
			}
			dscale += accRho[c] * (v*v + dcnet.RhoFloor)
		}
		if k.m.train {
			dnAll = dscale / float64(rows)
		} else {
			out.drhoScale = dscale
		}
	}

	// dL/d(W/|w|) = dP^T cols, before cols is overwritten.
	k.dwhat = decoupledGrow(k.dwhat, outC*width)
	decoupledGemm(false, false, outC, width, rows, k.dpT, rows, k.cols, width, 0, k.dwhat, width)

	// dL/dcols = dP what + (dL/dN / N) cols, in place of cols.
	im2colParallelRange(rows, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			s := T((k.dn[r] + dnAll) / k.norm[r])
			row := k.cols[r*width : (r+1)*width]
			for i := range row {
				row[i] *= s
			}
		}
	})
	decoupledGemm(false, false, rows, width, outC, k.dp, outC, k.what, width, 1, k.cols, width)
	col2imRows(g, k.cols, out.dx)

	// Through W/|w| and m(|w|): with u = W_c/|w|_c,
	// dW_c = (dU_c - <dU_c, u> u) / |w|_c + dL/d|w|_c * u.
	for c := range outC {
		du := k.dwhat[c*width : (c+1)*width]
		u := k.what[c*width : (c+1)*width]
		var dot float64
		for i, v := range du {
			dot += float64(v) * float64(u[i])
		}
		dwn := accM[c] * k.dmw[c]
		inv := 1 / k.wnorm[c]
		dw := out.dw[c*width : (c+1)*width]
		for i, v := range du {
			uv := float64(u[i])
			dw[i] = T((float64(v)-dot*uv)*inv + dwn*uv)
		}
	}
}

// decoupledGemm computes c = a' * b' + beta * c with BLAS, where a' is the
// m x k matrix a (or a transposed when transA) and b' the k x n matrix b
// (or b transposed when transB), all row-major with leading dimensions
// lda, ldb and ldc. It uses gonum's blas32 or blas64 implementation,
// whichever is installed there.
func decoupledGemm[T im2colFloat](transA, transB bool, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
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
