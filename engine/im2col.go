package engine

import (
	"runtime"
	"sync"
)

// im2colFloat is the element type of the im2col kernels and of the
// decoupled convolution's loops.
type im2colFloat interface {
	float32 | float64
}

// im2colGeom is a resolved two-dimensional convolution with group 1: an
// NCHW input of batch x inC x inH x inW, filters of inC x kH x kW per
// output channel, strides, dilations and the begin pads (the end pads only
// enter outH and outW).
type im2colGeom struct {
	batch, inC, inH, inW int
	kH, kW               int
	outH, outW           int
	strideH, strideW     int
	dilH, dilW           int
	padTop, padLeft      int
}

// locations returns the number of output locations, batch x outH x
// outW: the columns of the column matrix.
func (g im2colGeom) locations() int { return g.batch * g.outH * g.outW }

// patch returns the length of one patch, inC x kH x kW: the rows of the
// column matrix.
func (g im2colGeom) patch() int { return g.inC * g.kH * g.kW }

// inSize returns the number of input values, batch x inC x inH x inW.
func (g im2colGeom) inSize() int { return g.batch * g.inC * g.inH * g.inW }

// im2colCols writes the patches of the NCHW input x into cols as a
// patch() x locations() matrix, one column per output location: row
// (c*kH+ki)*kW+kj, column (n*outH+oh)*outW+ow, zero where the window
// covers padding. cols must hold patch()*locations() values. The (image,
// channel) pairs are split across GOMAXPROCS goroutines; each writes its
// own kH*kW row segments, copying runs of the input rows.
func im2colCols[T im2colFloat](g im2colGeom, x, cols []T) {
	rows, locs, plane := g.locations(), g.outH*g.outW, g.inH*g.inW
	im2colParallel(g.batch*g.inC, func(unit int) {
		n, c := unit/g.inC, unit%g.inC
		src := x[unit*plane : (unit+1)*plane]
		for ki := range g.kH {
			hLo, hHi := windowSpan(g.outH, g.inH, g.strideH, g.padTop, ki*g.dilH)
			for kj := range g.kW {
				wLo, wHi := windowSpan(g.outW, g.inW, g.strideW, g.padLeft, kj*g.dilW)
				dst := cols[((c*g.kH+ki)*g.kW+kj)*rows+n*locs:][:locs]
				clear(dst[:hLo*g.outW])
				clear(dst[hHi*g.outW:])
				for oh := hLo; oh < hHi; oh++ {
					d := dst[oh*g.outW : (oh+1)*g.outW]
					r := src[(oh*g.strideH-g.padTop+ki*g.dilH)*g.inW:][:g.inW]
					iw := wLo*g.strideW - g.padLeft + kj*g.dilW
					clear(d[:wLo])
					if g.strideW == 1 {
						copy(d[wLo:wHi], r[iw:])
					} else {
						for ow := wLo; ow < wHi; ow++ {
							d[ow] = r[iw]
							iw += g.strideW
						}
					}
					clear(d[wHi:])
				}
			}
		}
	})
}

// col2imCols is the adjoint of im2colCols: it sets dx to zero and adds
// every value of cols (laid out as im2colCols writes it) to the input
// position it was read from; values read from padding are dropped. The
// input planes (image, channel) are split across GOMAXPROCS goroutines;
// each plane is written by one goroutine only.
func col2imCols[T im2colFloat](g im2colGeom, cols, dx []T) {
	rows, locs, plane := g.locations(), g.outH*g.outW, g.inH*g.inW
	im2colParallel(g.batch*g.inC, func(unit int) {
		n, c := unit/g.inC, unit%g.inC
		dst := dx[unit*plane : (unit+1)*plane]
		clear(dst)
		for ki := range g.kH {
			hLo, hHi := windowSpan(g.outH, g.inH, g.strideH, g.padTop, ki*g.dilH)
			for kj := range g.kW {
				wLo, wHi := windowSpan(g.outW, g.inW, g.strideW, g.padLeft, kj*g.dilW)
				src := cols[((c*g.kH+ki)*g.kW+kj)*rows+n*locs:][:locs]
				for oh := hLo; oh < hHi; oh++ {
					s := src[oh*g.outW+wLo : oh*g.outW+wHi]
					r := dst[(oh*g.strideH-g.padTop+ki*g.dilH)*g.inW:][:g.inW]
					iw := wLo*g.strideW - g.padLeft + kj*g.dilW
					if g.strideW == 1 {
						d := r[iw : iw+len(s)]
						for i, v := range s {
							d[i] += v
						}
						continue
					}
					for _, v := range s {
						r[iw] += v
						iw += g.strideW
					}
				}
			}
		}
	})
}

// col2imAddScaled adds to dx the adjoint (col2imCols) of the columns of
// x with column r scaled by s[r]: each input cell of x times the sum of
// s over the windows that read it, the sum taken in float64 once per
// image for all channels. s must hold locations() values. The images
// are split across GOMAXPROCS goroutines.
func col2imAddScaled[T im2colFloat](g im2colGeom, x []T, s []float64, dx []T) {
	locs, plane := g.outH*g.outW, g.inH*g.inW
	im2colParallelRange(g.batch, func(_, lo, hi int) {
		sum := make([]float64, plane)
		for n := lo; n < hi; n++ {
			clear(sum)
			sn := s[n*locs : (n+1)*locs]
			for ki := range g.kH {
				hLo, hHi := windowSpan(g.outH, g.inH, g.strideH, g.padTop, ki*g.dilH)
				for kj := range g.kW {
					wLo, wHi := windowSpan(g.outW, g.inW, g.strideW, g.padLeft, kj*g.dilW)
					for oh := hLo; oh < hHi; oh++ {
						srow := sn[oh*g.outW : (oh+1)*g.outW]
						r := sum[(oh*g.strideH-g.padTop+ki*g.dilH)*g.inW:][:g.inW]
						iw := wLo*g.strideW - g.padLeft + kj*g.dilW
						for ow := wLo; ow < wHi; ow++ {
							r[iw] += srow[ow]
							iw += g.strideW
						}
					}
				}
			}
			for c := range g.inC {
				off := (n*g.inC + c) * plane
				xs, ds := x[off:off+plane], dx[off:off+plane]
				for i, v := range xs {
					ds[i] += T(float64(v) * sum[i])
				}
			}
		}
	})
}

// im2colSquares sets sq[r] to the sum of squares of patch r (column r of
// the matrix im2colCols writes), accumulated in float64, without
// gathering the patches: it sums the squares of x over the channels of
// each image and then over each window. sq must hold locations()
// values. The images are split across GOMAXPROCS goroutines.
func im2colSquares[T im2colFloat](g im2colGeom, x []T, sq []float64) {
	locs, plane := g.outH*g.outW, g.inH*g.inW
	im2colParallelRange(g.batch, func(_, lo, hi int) {
		s := make([]float64, plane)
		for n := lo; n < hi; n++ {
			clear(s)
			for c := range g.inC {
				for i, v := range x[(n*g.inC+c)*plane:][:plane] {
					s[i] += float64(v) * float64(v)
				}
			}
			out := sq[n*locs : (n+1)*locs]
			clear(out)
			for ki := range g.kH {
				hLo, hHi := windowSpan(g.outH, g.inH, g.strideH, g.padTop, ki*g.dilH)
				for kj := range g.kW {
					wLo, wHi := windowSpan(g.outW, g.inW, g.strideW, g.padLeft, kj*g.dilW)
					for oh := hLo; oh < hHi; oh++ {
						o := out[oh*g.outW : (oh+1)*g.outW]
						r := s[(oh*g.strideH-g.padTop+ki*g.dilH)*g.inW:][:g.inW]
						iw := wLo*g.strideW - g.padLeft + kj*g.dilW
						for ow := wLo; ow < wHi; ow++ {
							o[ow] += r[iw]
							iw += g.strideW
						}
					}
				}
			}
		}
	})
}

// im2colParallel calls fn(i) for every i in [0, n), spread over up to
// GOMAXPROCS goroutines, each taking a contiguous range; it returns when
// all calls have returned.
func im2colParallel(n int, fn func(i int)) {
	im2colParallelRange(n, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			fn(i)
		}
	})
}

// im2colWorkers returns how many goroutines im2colParallelRange uses for
// n units of work: GOMAXPROCS, but no more than n.
func im2colWorkers(n int) int { return max(1, min(runtime.GOMAXPROCS(0), n)) }

// im2colParallelRange splits [0, n) into im2colWorkers(n) contiguous
// ranges and calls fn(worker, lo, hi) for each, concurrently (inline when
// there is one); it returns when all calls have returned.
func im2colParallelRange(n int, fn func(worker, lo, hi int)) {
	if n <= 0 {
		return
	}
	workers := im2colWorkers(n)
	if workers == 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*n/workers, (w+1)*n/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(w, lo, hi)
		}()
	}
	wg.Wait()
}
