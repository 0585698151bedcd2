package engine

import (
	"fmt"

	"gorgonia.org/tensor"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
)

// LayerCalibration accumulates, over batches of a decoupled layer's
// input, the statistics of DCNET.md section 3, with the engine's fused
// kernel in float64: the mean patch norm N, and per output channel the
// sums <y_orig, y1> and <y1, y1>, where y1 is the layer's output with
// A = 1 and no bias and y_orig the source convolution without bias.
type LayerCalibration struct {
	cfg      dcnet.Config
	win      onnximport.Window
	w        []float64
	wShape   [4]int
	rhoV     []float64
	rhoScale float64

	sumN     float64
	count    int
	num, den []float64
}

// NewLayerCalibration returns an empty calibration of a decoupled layer
// with configuration cfg, geometry win and filters w of shape wShape; rhoV
// and rhoScale are its learnable radius (nil and 0 without one).
func NewLayerCalibration(cfg dcnet.Config, win onnximport.Window, w []float64, wShape [4]int, rhoV []float64, rhoScale float64) *LayerCalibration {
	cfg.Bias, cfg.ChannelScale = false, false
	return &LayerCalibration{cfg: cfg, win: win, w: w, wShape: wShape, rhoV: rhoV, rhoScale: rhoScale,
		num: make([]float64, wShape[0]), den: make([]float64, wShape[0])}
}

// kernel returns a float64 kernel of configuration cfg for inputs of
// shape xShape.
func (c *LayerCalibration) kernel(cfg dcnet.Config, xShape [4]int) (*decoupledKernel[float64], int, error) {
	xs := tensor.Shape{xShape[0], xShape[1], xShape[2], xShape[3]}
	ws := tensor.Shape{c.wShape[0], c.wShape[1], c.wShape[2], c.wShape[3]}
	if xShape[1] != c.wShape[1] {
		return nil, 0, fmt.Errorf("input of shape %v does not fit filters of shape %v", xShape, c.wShape)
	}
	g, err := decoupledGeometry(c.win, xs, ws)
	if err != nil {
		return nil, 0, err
	}
	return newDecoupledKernel[float64](g, c.wShape[0], newDecoupledMath(cfg, false)), g.outH * g.outW, nil
}

// AddPatchNorms adds the patch norms of a batch x of shape xShape.
func (c *LayerCalibration) AddPatchNorms(x []float64, xShape [4]int) error {
	k, _, err := c.kernel(c.cfg, xShape)
	if err != nil {
		return err
	}
	k.prepare(x, c.w, c.rhoV, c.rhoScale)
	for _, n := range k.norm {
		c.sumN += n
	}
	c.count += len(k.norm)
	return nil
}

// MeanPatchNorm returns the mean of N over every location added, padded
// borders included.
func (c *LayerCalibration) MeanPatchNorm() float64 {
	if c.count == 0 {
		return 0
	}
	return c.sumN / float64(c.count)
}

// AddScale adds the least-squares sums of a batch x of shape xShape.
func (c *LayerCalibration) AddScale(x []float64, xShape [4]int) error {
	k, locs, err := c.kernel(c.cfg, xShape)
	if err != nil {
		return err
	}
	ident := dcnet.DefaultConfig()
	ident.Magnitude, ident.Angular, ident.Weighted, ident.Eps = dcnet.MagLinear, dcnet.AngCos, dcnet.WeightLinear, c.cfg.Eps
	k0, _, err := c.kernel(ident, xShape)
	if err != nil {
		return err
	}
	cout := c.wShape[0]
	y1 := make([]float64, xShape[0]*cout*locs)
	y0 := make([]float64, len(y1))
	k.forward(x, c.w, nil, nil, c.rhoV, c.rhoScale, y1)
	k0.forward(x, c.w, nil, nil, nil, 0, y0)
	for i := range y1 {
		ch := (i / locs) % cout
		c.num[ch] += y0[i] * y1[i]
		c.den[ch] += y1[i] * y1[i]
	}
	return nil
}

// ScaleSums returns the per-channel sums <y_orig, y1> and <y1, y1>.
func (c *LayerCalibration) ScaleSums() (num, den []float64) { return c.num, c.den }
