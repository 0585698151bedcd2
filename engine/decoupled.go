package engine

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
)

// decoupledInputs are the graph nodes of a decoupled convolution; absent
// optional inputs are nil.
type decoupledInputs struct{ X, W, B, Alpha, RhoV, RhoScale *G.Node }

// rhoStat receives, after every training forward, the batch mean m of the
// patch norm N (over batch and all output locations, padded borders
// included) so the engine can update RhoScale's running average (DCNET.md
// section 2).
type rhoStat struct {
	Batch float64 // m of the last training forward
	Valid bool
}

// decoupledConv adds a decoupled convolution y = A*h(N)*m(|w|)*g(theta)+b
// (DCNET.md section 1) to the graph of in.X. win is the Conv's geometry,
// resolved against X's static shape with win.Output (auto_pad included).
//
// In training mode with a learnable radius, rho_c = (RhoV_c^2 + 1e-4) * m
// with m the batch mean of N, and gradients flow through m; RhoScale is
// then not an input of the operation (it may be nil, and gets no
// gradient) and stat receives m after every forward. In inference mode
// m = RhoScale, a scalar node or a tensor of one value, and the operation
// is differentiable with respect to it; stat then stays invalid. With a
// fixed radius cfg.Rho is used. stat is nil unless cfg.LearnRho.
//
// Shape and type problems of the nodes, the configuration and the window
// are returned as errors, all of them at once where they are independent.
// The operation is differentiable with respect to every input it has
// (G.Grad adds one operation computing all the gradients and one per
// input copying its part out). The gradients reuse the columns, P and N
// of the forward pass of the same machine run, which the operation keeps
// between runs (about batch*outH*outW*(C_in*kH*kW + 3*C_out) values),
// so one graph must not be run by several machines at the same time.
func decoupledConv(in decoupledInputs, cfg dcnet.Config, win onnximport.Window, train bool) (*G.Node, *rhoStat, error) {
	sh, err := newDecoupledShared(in, cfg, win, train)
	if err != nil {
		return nil, nil, fmt.Errorf("decoupled convolution: %w", err)
	}
	y, err := G.ApplyOp(&decoupledOp{sh: sh}, sh.nodes...)
	if err != nil {
		return nil, nil, fmt.Errorf("decoupled convolution: %w", err)
	}
	return y, sh.stat, nil
}

// decoupledSeq numbers decoupled convolutions, so that two of them with
// the same configuration and inputs stay distinct graph nodes (each has
// its own buffers and statistic).
var decoupledSeq atomic.Uint64

// Positions of the inputs of a decoupled operation; the optional ones
// follow in this order when present.
const (
	decoupledInX = iota
	decoupledInW
	decoupledInB
	decoupledInAlpha
	decoupledInRhoV
	decoupledInRhoScale
	decoupledInCount
)

// decoupledInputNames are the ONNX names of the inputs, for messages.
var decoupledInputNames = [decoupledInCount]string{
	dcnet.InputX, dcnet.InputW, dcnet.InputB, dcnet.InputAlpha, dcnet.InputRhoV, dcnet.InputRhoScale,
}

// newDecoupledShared checks the inputs, the configuration and the window
// and returns the state the forward operation and its gradients share.
func newDecoupledShared(in decoupledInputs, cfg dcnet.Config, win onnximport.Window, train bool) (*decoupledShared, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if in.X == nil || in.W == nil {
		return nil, errors.New("inputs X and W are required")
	}
	dt := in.X.Dtype()
	if dt != tensor.Float32 && dt != tensor.Float64 {
		return nil, fmt.Errorf("input X has element type %v, want float32 or float64", dt)
	}
	xs, ws := in.X.Shape(), in.W.Shape()
	if len(xs) != 4 {
		return nil, fmt.Errorf("input X has shape %v, want [batch, channels, height, width]", xs)
	}
	if len(ws) != 4 {
		return nil, fmt.Errorf("input W has shape %v, want [out channels, in channels, kH, kW]", ws)
	}
	for i := range 4 {
		if xs[i] <= 0 || ws[i] <= 0 {
			return nil, fmt.Errorf("inputs X %v and W %v must have positive static sizes", xs, ws)
		}
	}
	if ws[1] != xs[1] {
		return nil, fmt.Errorf("input X has %d channels, W of shape %v expects %d (decoupled convolutions have group 1)", xs[1], ws, ws[1])
	}
	outC := ws[0]
	learn := cfg.LearnRho && cfg.NeedsRho()

	nodes := [decoupledInCount]*G.Node{in.X, in.W, in.B, in.Alpha, in.RhoV, in.RhoScale}
	want := [decoupledInCount]bool{true, true, cfg.Bias, cfg.ChannelScale, learn, learn && !train}
	var errs []error
	if in.W.Dtype() != dt {
		errs = append(errs, fmt.Errorf("input W has element type %v, X has %v", in.W.Dtype(), dt))
	}
	for i := decoupledInB; i < decoupledInCount; i++ {
		name, n := decoupledInputNames[i], nodes[i]
		switch {
		case i == decoupledInRhoScale && learn && train:
			// Training uses the batch mean instead; a given node is unused.
			nodes[i] = nil
			continue
		case want[i] && n == nil:
			errs = append(errs, fmt.Errorf("input %s is missing: the configuration has it", name))
			continue
		case !want[i] && n != nil:
			errs = append(errs, fmt.Errorf("input %s is given: the configuration has none", name))
			continue
		case n == nil:
			continue
		}
		if n.Dtype() != dt {
			errs = append(errs, fmt.Errorf("input %s has element type %v, X has %v", name, n.Dtype(), dt))
		}
		s := n.Shape()
		if i == decoupledInRhoScale {
			if s.TotalSize() != 1 && !s.IsScalar() {
				errs = append(errs, fmt.Errorf("input %s has shape %v, want a scalar", name, s))
			}
		} else if len(s) != 1 || s[0] != outC {
			errs = append(errs, fmt.Errorf("input %s has shape %v, want [%d] (one value per output channel)", name, s, outC))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	geom, err := decoupledGeometry(win, xs, ws)
	if err != nil {
		return nil, err
	}
	sh := &decoupledShared{
		id:    decoupledSeq.Add(1),
		cfg:   cfg,
		train: train,
		dt:    dt,
		geom:  geom,
		outC:  outC,
	}
	for i := range sh.index {
		sh.index[i] = -1
	}
	for i, n := range nodes {
		if n == nil {
			continue
		}
		sh.index[i] = len(sh.nodes)
		sh.nodes = append(sh.nodes, n)
		sh.types = append(sh.types, n.Type())
		sh.shapes = append(sh.shapes, n.Shape())
	}
	dm := newDecoupledMath(cfg, train)
	if dt == tensor.Float32 {
		sh.k32 = newDecoupledKernel[float32](geom, outC, dm)
	} else {
		sh.k64 = newDecoupledKernel[float64](geom, outC, dm)
	}
	if learn {
		sh.stat = &rhoStat{}
	}
	return sh, nil
}

// decoupledGeometry resolves win (defaults filled, auto_pad applied)
// for an input of shape xs and filters of shape ws.
func decoupledGeometry(win onnximport.Window, xs, ws tensor.Shape) (im2colGeom, error) {
	var g im2colGeom
	if win.CeilMode {
		return g, errors.New("window: ceil_mode is not a Conv attribute")
	}
	kernel := []int64{int64(ws[2]), int64(ws[3])}
	if win.Kernel == nil {
		win.Kernel = kernel
	} else if len(win.Kernel) != 2 || win.Kernel[0] != kernel[0] || win.Kernel[1] != kernel[1] {
		return g, fmt.Errorf("window: kernel_shape %v does not match the filters' %v", win.Kernel, kernel)
	}
	win, err := win.Resolve()
	if err != nil {
		return g, fmt.Errorf("window: %w", err)
	}
	out, pads, err := win.Output([]onnximport.Dim{{Size: int64(xs[2])}, {Size: int64(xs[3])}})
	if err != nil {
		return g, fmt.Errorf("window: %w", err)
	}
	g = im2colGeom{
		batch: xs[0], inC: xs[1], inH: xs[2], inW: xs[3],
		kH: ws[2], kW: ws[3],
		outH: int(out[0].Size), outW: int(out[1].Size),
		strideH: int(win.Strides[0]), strideW: int(win.Strides[1]),
		dilH: int(win.Dilations[0]), dilW: int(win.Dilations[1]),
		padTop: int(pads[0]), padLeft: int(pads[1]),
	}
	if g.outH < 1 || g.outW < 1 {
		return g, fmt.Errorf("window: output size %dx%d is empty", g.outH, g.outW)
	}
	return g, nil
}

// outType returns the type of the forward output: a 4-D tensor
// of the shared element type.
func (sh *decoupledShared) outType() hm.Type { return G.TensorType{Dims: 4, Of: sh.dt} }
