package engine_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// TestLayerCalibration compares the engine's calibration statistics with
// rewrite's reference calibrator (dcnet's direct float64 implementation)
// on the first layer of vgg-mini, for several configurations.
func TestLayerCalibration(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	shape := [4]int{2, 1, 28, 28}
	var batches [][]float64
	for range 2 {
		b := make([]float64, 2*28*28)
		for i := range b {
			b[i] = r.NormFloat64()
		}
		batches = append(batches, b)
	}
	inputs := func(_ *onnximport.Model, _ string, fn func([]float64, [4]int) error) error {
		for _, b := range batches {
			if err := fn(b, shape); err != nil {
				return err
			}
		}
		return nil
	}
	ref := rewrite.ReferenceCalibrator{Inputs: inputs}
	cfgs := []dcnet.Config{
		decoupled(dcnet.MagBall, dcnet.AngCos, nil),
		decoupled(dcnet.MagTanh, dcnet.AngSigmoid, func(c *dcnet.Config) { c.LearnRho, c.Rho = false, 2 }),
		decoupled(dcnet.MagMix, dcnet.AngSqcos, func(c *dcnet.Config) { c.Weighted = dcnet.WeightLog }),
		decoupled(dcnet.MagSphere, dcnet.AngLinear, nil),
	}
	checked := 0
	for _, cfg := range cfgs {
		m := rewritten(t, buildModel(t, "vgg-mini", nil), cfg)
		name := m.Graph().GetNode()[0].GetName()
		for _, n := range m.Graph().GetNode() {
			if onnximport.IsDecoupledConv(n) {
				name = n.GetName()
				break
			}
		}
		l, err := rewrite.ReadLayer(m, name)
		if err != nil {
			t.Fatal(err)
		}
		lc := engine.NewLayerCalibration(l.Config, l.Window, l.W, l.WShape, l.RhoV, l.RhoScale)
		for _, b := range batches {
			if err := lc.AddPatchNorms(b, shape); err != nil {
				t.Fatal(err)
			}
			if err := lc.AddScale(b, shape); err != nil {
				t.Fatal(err)
			}
		}
		wantN, err := ref.MeanPatchNorm(m, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := lc.MeanPatchNorm(); math.Abs(got-wantN) > 1e-9*wantN {
			t.Errorf("%s: mean patch norm %.12g, reference %.12g", cfg.Summary(), got, wantN)
		}
		wantNum, wantDen, err := ref.ScaleSums(m, name)
		if err != nil {
			t.Fatal(err)
		}
		num, den := lc.ScaleSums()
		for c := range num {
			if math.Abs(num[c]-wantNum[c]) > 1e-9*(1+math.Abs(wantNum[c])) || math.Abs(den[c]-wantDen[c]) > 1e-9*(1+math.Abs(wantDen[c])) {
				t.Errorf("%s channel %d: sums %g, %g; reference %g, %g", cfg.Summary(), c, num[c], den[c], wantNum[c], wantDen[c])
			}
		}
		checked++
	}
	t.Logf("compared the calibration statistics of %d configurations with the reference", checked)
}
