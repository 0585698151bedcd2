package engine

import (
	"math"

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

// The row forms below evaluate the functions above over a run of values,
// choosing the function once per run: the element loops call them on
// every (tile, channel) pair. They give the scalar forms' results exactly,
// except that angularRow with fast set evaluates acos and tanh to float32
// accuracy (asin32, tanh32), for kernels on float32 values.

// angularRow sets g[i] = g(cos[i]) for cosines already clamped to
// [-1, 1].
func (m *decoupledMath) angularRow(cos, g []float64, fast bool) {
	g = g[:len(cos)]
	switch {
	case m.ang == decoupledAngCos:
		copy(g, cos)
	case fast && m.ang == decoupledAngLinear:
		// 1 - 2 acos(c)/pi = 2 asin(c)/pi.
		for i, c := range cos {
			g[i] = 2 / math.Pi * asin32(c)
		}
	case fast && m.ang == decoupledAngSigmoid:
		// pi/2 - acos(c) = asin(c).
		for i, c := range cos {
			g[i] = m.sigK * tanh32(asin32(c)*m.sigInv2k)
		}
	default:
		for i, c := range cos {
			g[i] = m.angular(c)
		}
	}
}

// angularDiffRow sets d[i] to dg/dcos at cos[i] (clamped to [-1, 1]),
// given g[i] = g(cos[i]) when cached (angularCached: the forward kept
// them), and sets g[i] too otherwise.
func (m *decoupledMath) angularDiffRow(cos, g, d []float64, cached bool) {
	g, d = g[:len(cos)], d[:len(cos)]
	switch {
	case !cached:
		for i, c := range cos {
			g[i], d[i] = m.angularDiff(c)
		}
	case m.ang == decoupledAngSigmoid:
		for i, c := range cos {
			cc := max(-1+decoupledAcosMargin, min(1-decoupledAcosMargin, c))
			t := g[i] / m.sigK
			d[i] = m.sigK * (1 - t*t) * m.sigInv2k / math.Sqrt(1-cc*cc)
		}
	default:
		for i, c := range cos {
			d[i] = m.angularDiffAt(c, g[i])
		}
	}
}

// magnitudeRow sets h[i] = h(n[i]) for the radius rho.
func (m *decoupledMath) magnitudeRow(n []float64, rho float64, h []float64) {
	h = h[:len(n)]
	switch m.mag {
	case decoupledMagLinear:
		for i, v := range n {
			h[i] = m.alpha * v
		}
	case decoupledMagBall:
		for i, v := range n {
			if v <= rho {
				h[i] = m.alpha * v / rho
			} else {
				h[i] = m.alpha
			}
		}
	default:
		for i, v := range n {
			h[i] = m.magnitude(v, rho)
		}
	}
}

// magnitudeDiffRow sets h[i], dn[i] and drho[i] to h(n[i]) and its
// partial derivatives by n and by rho (magnitudeDiff).
func (m *decoupledMath) magnitudeDiffRow(n []float64, rho float64, h, dn, drho []float64) {
	h, dn, drho = h[:len(n)], dn[:len(n)], drho[:len(n)]
	switch m.mag {
	case decoupledMagLinear:
		for i, v := range n {
			h[i], dn[i], drho[i] = m.alpha*v, m.alpha, 0
		}
	case decoupledMagBall:
		for i, v := range n {
			if v <= rho {
				h[i], dn[i], drho[i] = m.alpha*v/rho, m.alpha/rho, -m.alpha*v/(rho*rho)
			} else {
				h[i], dn[i], drho[i] = m.alpha, 0, 0
			}
		}
	default:
		for i, v := range n {
			h[i], dn[i], drho[i] = m.magnitudeDiff(v, rho)
		}
	}
}

// decoupledTile is the number of output locations of one image that the
// element loops treat together, for every output channel.
const decoupledTile = 256

// decoupledKernel computes a decoupled convolution and its gradients on
// plain slices: x is NCHW, w is [outC, inC, kH, kW], y and dy are
// [batch, outC, outH, outW]. It keeps its buffers between calls, and the
// intermediate values of the last forward (columns, P, N) for the
// backward that follows it. Matrices over the output locations are laid
// out one row per channel (or patch value) and one column per location
// (n*outH+oh)*outW+ow, so that the column gathering copies runs of input
// rows and the element loops read and write whole rows. A kernel is not
// safe for concurrent use.
type decoupledKernel[T im2colFloat] struct {
	geom im2colGeom
	outC int
	m    decoupledMath

	// Filled by prepare.
	what    []T       // W_c/|w|_c as [outC, K]
	wnorm   []float64 // |w|_c
	mw, dmw []float64 // m(|w|_c) and m'(|w|_c)
	cols    []T       // [K, M] patches, K = geom.patch(), M = geom.locations()
	p       []T       // [outC, M] = what * cols
	norm    []float64 // [M] patch norms N
	rho     []float64 // per-channel radius, nil without one
	rhoBuf  []float64 // the array behind rho
	scale   float64   // the radius scale: batch mean of N or RhoScale
	// gval holds g at every output value, [outC, M], when the angular
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
	dp     []T       // dL/dP as [outC, M]
	dwhat  []T       // dL/d(W/|w|) as [outC, K]
	whatT  []T       // W/|w| transposed, [K, outC]
	colScl []float64 // per location: (dL/dN + the batch mean's share) / N
	dn     []float64 // dL/dN per location
	acc    []float64 // per-worker channel sums, 4*outC each
	part   []T       // partial filter gradients (gemmReduce)
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
	rows, width, outC := g.locations(), g.patch(), k.outC
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

	k.cols = decoupledGrow(k.cols, width*rows)
	k.norm = decoupledGrow(k.norm, rows)
	im2colCols(g, x, k.cols)
	im2colSquares(g, x, k.norm)
	eps := k.m.eps
	im2colParallelRange(rows, func(_, lo, hi int) {
		for r := lo; r < hi; r++ {
			k.norm[r] = math.Sqrt(k.norm[r] + eps)
		}
	})

	k.p = decoupledGrow(k.p, outC*rows)
	gemm(false, false, outC, rows, width, k.what, width, k.cols, rows, 0, k.p, rows)

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

// tiles returns the number of tiles of one image's output locations and
// the number of work units (image, tile) of the element loops.
func (k *decoupledKernel[T]) tiles() (tiles, units int) {
	locs := k.geom.outH * k.geom.outW
	tiles = (locs + decoupledTile - 1) / decoupledTile
	return tiles, k.geom.batch * tiles
}

// forward computes y = A*h(N)*m(|w|)*g(theta)+b into y and returns the
// radius scale it used (the batch mean of N in training with a learnable
// radius). b and alpha are nil when absent; rhoV is nil unless the radius
// is learnable.
func (k *decoupledKernel[T]) forward(x, w, b, alpha, rhoV []T, rhoScale float64, y []T) float64 {
	k.prepare(x, w, rhoV, rhoScale)
	g := k.geom
	rows, outC, locs := g.locations(), k.outC, g.outH*g.outW
	var gval []T
	if k.m.angularCached() {
		k.gval = decoupledGrow(k.gval, outC*rows)
		gval = k.gval
	}
	fast := isFloat32[T]()
	tiles, units := k.tiles()
	im2colParallel(units, func(unit int) {
		var cosBuf, gBuf, hBuf [decoupledTile]float64
		n, l0 := unit/tiles, unit%tiles*decoupledTile
		l1 := min(l0+decoupledTile, locs)
		r0, r1 := n*locs+l0, n*locs+l1
		norm := k.norm[r0:r1]
		cos, gv, hv := cosBuf[:len(norm)], gBuf[:len(norm)], hBuf[:len(norm)]
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
			prow := k.p[c*rows+r0 : c*rows+r1]
			prow = prow[:len(norm)]
			for l, pv := range prow {
				cos[l] = max(-1, min(1, float64(pv)/norm[l]))
			}
			k.m.angularRow(cos, gv, fast)
			k.m.magnitudeRow(norm, rho, hv)
			yrow := y[(n*outC+c)*locs+l0 : (n*outC+c)*locs+l1]
			yrow = yrow[:len(norm)]
			for l, g := range gv {
				yrow[l] = T(scale*hv[l]*g + bias)
			}
			if gval != nil {
				grow := gval[c*rows+r0 : c*rows+r1]
				grow = grow[:len(norm)]
				for l, g := range gv {
					grow[l] = T(g)
				}
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
	rows, width, outC, locs := g.locations(), g.patch(), k.outC, g.outH*g.outW
	tiles, units := k.tiles()
	workers := im2colWorkers(units)
	k.dp = decoupledGrow(k.dp, outC*rows)
	k.dn = decoupledGrow(k.dn, rows)
	k.acc = decoupledGrow(k.acc, workers*4*outC)
	clear(k.acc)

	// Element loop: dL/dP, dL/dN and the per-channel sums for B, A,
	// m(|w|) and rho.
	im2colParallelRange(units, func(worker, lo, hi int) {
		var qBuf, cosBuf, gBuf, gdBuf, hBuf, hnBuf, hrhoBuf [decoupledTile]float64
		acc := k.acc[worker*4*outC : (worker+1)*4*outC]
		accB, accA, accM, accRho := acc[:outC], acc[outC:2*outC], acc[2*outC:3*outC], acc[3*outC:]
		for unit := lo; unit < hi; unit++ {
			n, l0 := unit/tiles, unit%tiles*decoupledTile
			l1 := min(l0+decoupledTile, locs)
			r0, r1 := n*locs+l0, n*locs+l1
			norm := k.norm[r0:r1]
			dn := k.dn[r0:r1]
			dn = dn[:len(norm)]
			clear(dn)
			q, cos, gv, gd := qBuf[:len(norm)], cosBuf[:len(norm)], gBuf[:len(norm)], gdBuf[:len(norm)]
			hv, hn, hrho := hBuf[:len(norm)], hnBuf[:len(norm)], hrhoBuf[:len(norm)]
			for c := range outC {
				a, rho := 1.0, 0.0
				if alpha != nil {
					a = float64(alpha[c])
				}
				if k.rho != nil {
					rho = k.rho[c]
				}
				mw := k.mw[c]
				prow := k.p[c*rows+r0 : c*rows+r1]
				prow = prow[:len(norm)]
				for l, pv := range prow {
					q[l] = float64(pv) / norm[l]
					cos[l] = max(-1, min(1, q[l]))
				}
				if gval != nil {
					grow := gval[c*rows+r0 : c*rows+r1]
					for l, g := range grow[:len(norm)] {
						gv[l] = float64(g)
					}
				}
				k.m.angularDiffRow(cos, gv, gd, gval != nil)
				k.m.magnitudeDiffRow(norm, rho, hv, hn, hrho)
				dyrow := dy[(n*outC+c)*locs+l0 : (n*outC+c)*locs+l1]
				dyrow = dyrow[:len(norm)]
				dprow := k.dp[c*rows+r0 : c*rows+r1]
				dprow = dprow[:len(norm)]
				var sB, sA, sM, sRho float64
				for l, dv := range dyrow {
					d := float64(dv)
					g, h := gv[l], hv[l]
					sB += d
					sA += d * h * mw * g
					t := d * a
					sM += t * h * g
					dh := t * mw * g
					sRho += dh * hrho[l]
					var dq float64
					if ql := q[l]; ql >= -1 && ql <= 1 {
						dq = t * h * mw * gd[l]
					}
					nr := norm[l]
					dn[l] += dh*hn[l] - dq*q[l]/nr
					dprow[l] = T(dq / nr)
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

	// dL/d(W/|w|) = dP cols^T, before cols is overwritten.
	k.dwhat = decoupledGrow(k.dwhat, outC*width)
	k.part = gemmReduce(outC, width, rows, k.dp, rows, k.cols, rows, k.dwhat, width, k.part)

	// dL/dcols = (W/|w|)^T dP + (dL/dN / N) cols: the first term in place
	// of cols and back onto the input cells, the second (through the
	// patch norms) straight onto them.
	k.whatT = decoupledGrow(k.whatT, width*outC)
	for c := range outC {
		for i, v := range k.what[c*width : (c+1)*width] {
			k.whatT[i*outC+c] = v
		}
	}
	gemm(false, false, width, rows, outC, k.whatT, outC, k.dp, rows, 0, k.cols, rows)
	col2imCols(g, k.cols, out.dx)
	k.colScl = decoupledGrow(k.colScl, rows)
	for r := range rows {
		k.colScl[r] = (k.dn[r] + dnAll) / k.norm[r]
	}
	col2imAddScaled(g, x, k.colScl, out.dx)

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

// isFloat32 reports whether T is float32.
func isFloat32[T im2colFloat]() bool {
	var z T
	_, ok := any(z).(float32)
	return ok
}
