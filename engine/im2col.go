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

// rows returns the number of output locations, batch x outH x outW: the
// rows of the column matrix.
func (g im2colGeom) rows() int { return g.batch * g.outH * g.outW }

// width returns the length of one patch, inC x kH x kW: the columns of
// the column matrix.
func (g im2colGeom) width() int { return g.inC * g.kH * g.kW }

// inSize returns the number of input values, batch x inC x inH x inW.
func (g im2colGeom) inSize() int { return g.batch * g.inC * g.inH * g.inW }

// im2colRows writes the patches of the NCHW input x into cols, one row of
// width() values per output location (row index (n*outH+oh)*outW+ow,
// column index (c*kH+ki)*kW+kj), zero where the window covers padding.
// When sq is not nil it also stores each row's sum of squares in sq[row],
// accumulated in float64. cols must hold rows()*width() values, sq rows().
// The output rows (image, oh) are split across GOMAXPROCS goroutines.
func im2colRows[T im2colFloat](g im2colGeom, x, cols []T, sq []float64) {
	k := g.width()
	inPlane := g.inH * g.inW
	im2colParallel(g.batch*g.outH, func(unit int) {
		n, oh := unit/g.outH, unit%g.outH
		xn := x[n*g.inC*inPlane : (n+1)*g.inC*inPlane]
		block := cols[unit*g.outW*k : (unit+1)*g.outW*k]
		for c := range g.inC {
			for ki := range g.kH {
				ih := oh*g.strideH - g.padTop + ki*g.dilH
				off := (c*g.kH + ki) * g.kW
				if ih < 0 || ih >= g.inH {
					for ow := range g.outW {
						clear(block[ow*k+off : ow*k+off+g.kW])
					}
					continue
				}
				xrow := xn[c*inPlane+ih*g.inW : c*inPlane+(ih+1)*g.inW]
				for ow := range g.outW {
					dst := block[ow*k+off : ow*k+off+g.kW]
					iw := ow*g.strideW - g.padLeft
					for kj := range dst {
						if iw >= 0 && iw < g.inW {
							dst[kj] = xrow[iw]
						} else {
							dst[kj] = 0
						}
						iw += g.dilW
					}
				}
			}
		}
		if sq == nil {
			return
		}
		for ow := range g.outW {
			var s float64
			for _, v := range block[ow*k : (ow+1)*k] {
				s += float64(v) * float64(v)
			}
			sq[unit*g.outW+ow] = s
		}
	})
}

// col2imRows is the adjoint of im2colRows: it sets dx to zero and adds
// every value of cols (laid out as im2colRows writes it) to the input
// position it was read from; values read from padding are dropped. The
// input planes (image, channel) are split across GOMAXPROCS goroutines;
// each plane is written by one goroutine only.
func col2imRows[T im2colFloat](g im2colGeom, cols, dx []T) {
	k := g.width()
	inPlane := g.inH * g.inW
	im2colParallel(g.batch*g.inC, func(unit int) {
		n, c := unit/g.inC, unit%g.inC
		plane := dx[unit*inPlane : (unit+1)*inPlane]
		clear(plane)
		for oh := range g.outH {
			block := cols[(n*g.outH+oh)*g.outW*k : (n*g.outH+oh+1)*g.outW*k]
			for ki := range g.kH {
				ih := oh*g.strideH - g.padTop + ki*g.dilH
				if ih < 0 || ih >= g.inH {
					continue
				}
				off := (c*g.kH + ki) * g.kW
				drow := plane[ih*g.inW : (ih+1)*g.inW]
				for ow := range g.outW {
					src := block[ow*k+off : ow*k+off+g.kW]
					iw := ow*g.strideW - g.padLeft
					for _, v := range src {
						if iw >= 0 && iw < g.inW {
							drow[iw] += v
						}
						iw += g.dilW
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
