package rewrite_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// inputCalibrator returns the same batches for any node: right for the
// first layer of a model, whose input is the graph input.
type inputCalibrator struct {
	batches [][]float64
	shape   [4]int
}

func (c inputCalibrator) inputs(_ *onnximport.Model, _ string, fn func([]float64, [4]int) error) error {
	for _, b := range c.batches {
		if err := fn(b, c.shape); err != nil {
			return err
		}
	}
	return nil
}

// calibrator returns the reference calibrator on these inputs.
func (c inputCalibrator) calibrator() rewrite.Calibrator {
	return rewrite.ReferenceCalibrator{Inputs: c.inputs}
}

func newInputCalibrator(seed uint64) inputCalibrator {
	r := rand.New(rand.NewPCG(seed, 4))
	c := inputCalibrator{shape: [4]int{2, 1, 28, 28}}
	for range 3 {
		b := make([]float64, 2*28*28)
		for i := range b {
			b[i] = float64(float32(r.NormFloat64()))
		}
		c.batches = append(c.batches, b)
	}
	return c
}

// meanPatchNorm computes the mean of sqrt(sum of x^2 over each 3x3 patch
// with pad 1 + eps) over every batch and location, from the definition.
func meanPatchNorm(c inputCalibrator, eps float64) float64 {
	sum, n := 0.0, 0
	for _, b := range c.batches {
		for s := 0; s < c.shape[0]; s++ {
			for i := 0; i < 28; i++ {
				for j := 0; j < 28; j++ {
					q := 0.0
					for u := -1; u <= 1; u++ {
						for v := -1; v <= 1; v++ {
							if i+u >= 0 && i+u < 28 && j+v >= 0 && j+v < 28 {
								x := b[s*784+(i+u)*28+j+v]
								q += x * x
							}
						}
					}
					sum += math.Sqrt(q + eps)
					n++
				}
			}
		}
	}
	return sum / float64(n)
}

func TestCalibration(t *testing.T) {
	calib := newInputCalibrator(1)
	eps := float64(dcnet.DefaultConfig().Eps)
	want := meanPatchNorm(calib, eps)

	t.Run("rho auto", func(t *testing.T) {
		m := build(t, "vgg-mini", nil)
		r, err := rewrite.Run(m, rewrite.Options{Config: config(dcnet.MagBall, dcnet.AngCos, nil), Layers: "0", Calib: calib.calibrator(), RhoAuto: true}, validate)
		if err != nil {
			t.Fatal(err)
		}
		n := m.Graph().GetNode()[0]
		if got := float64(onnximport.AttrFloat(n, "rho", 0)); math.Abs(got-want) > 1e-5*want {
			t.Errorf("rho = %g, want the mean patch norm %g", got, want)
		}
		if len(r.Uncalibrated) != 0 || len(m.Graph().GetNode()[0].GetInput()) > 3 {
			t.Errorf("a fixed radius left learnable inputs or an uncalibrated layer: %+v", r)
		}
	})
	t.Run("learnable radius", func(t *testing.T) {
		m := build(t, "vgg-mini", nil)
		r, err := rewrite.Run(m, rewrite.Options{Config: config(dcnet.MagTanh, dcnet.AngSigmoid, nil), Layers: "0", Calib: calib.calibrator()}, validate)
		if err != nil {
			t.Fatal(err)
		}
		scale, _ := m.Initializer(r.Layers[0].Name + ".rho_scale")
		v, err := m.Tensor(scale)
		if err != nil {
			t.Fatal(err)
		}
		if got := float64(v.Float[0]); math.Abs(got-want) > 1e-5*want {
			t.Errorf("RhoScale = %g, want the mean patch norm %g", got, want)
		}
		if len(r.Uncalibrated) != 0 {
			t.Errorf("layers %v still listed as uncalibrated", r.Uncalibrated)
		}
		if v, ok := rewrite.Metadata(m.Proto, dcnet.MetaUncalibrated); ok {
			t.Errorf("%s = %q after calibration, want it absent", dcnet.MetaUncalibrated, v)
		}
	})
	t.Run("alpha of the identity is 1", func(t *testing.T) {
		// linear x cos weighted by |w| reproduces the convolution, so the
		// least-squares scale is exactly 1 in every channel.
		m := build(t, "vgg-mini", nil)
		r, err := rewrite.Run(m, rewrite.Options{Config: identity(), Layers: "0", Calib: calib.calibrator(), AlphaAuto: true}, validate)
		if err != nil {
			t.Fatal(err)
		}
		a, ok := m.Initializer(r.Layers[0].Name + ".alpha")
		if !ok {
			t.Fatal("no alpha initializer")
		}
		v, _ := m.Tensor(a)
		for c, x := range v.Float {
			if math.Abs(float64(x)-1) > 1e-6 {
				t.Errorf("A[%d] = %g, want 1", c, x)
			}
		}
		if !strings.Contains(r.Layers[0].Operator, "scaled") {
			t.Errorf("operator %q does not say it is scaled", r.Layers[0].Operator)
		}
	})
	t.Run("alpha of a bounded magnitude", func(t *testing.T) {
		// sphere x cos: y1 = P/N, so A_c = <conv, P/N> / <P/N, P/N>,
		// computed here from dcnet's reference on the same batches.
		m := build(t, "vgg-mini", nil)
		cfg := config(dcnet.MagSphere, dcnet.AngCos, nil)
		r, err := rewrite.Run(m, rewrite.Options{Config: cfg, Layers: "0", Calib: calib.calibrator(), AlphaAuto: true}, validate)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := m.Initializer(r.Layers[0].Name + ".alpha")
		got, _ := m.Tensor(a)
		src := build(t, "vgg-mini", nil)
		w, _ := src.Initializer("features.0.weight")
		wt, _ := src.Tensor(w)
		wf := make([]float64, len(wt.Float))
		for i, x := range wt.Float {
			wf[i] = float64(x)
		}
		num, den := make([]float64, 16), make([]float64, 16)
		for _, b := range calib.batches {
			for s := 0; s < 2; s++ {
				for c := 0; c < 16; c++ {
					for i := 0; i < 28; i++ {
						for j := 0; j < 28; j++ {
							conv, q := 0.0, 0.0
							wn := 0.0
							for u := -1; u <= 1; u++ {
								for v := -1; v <= 1; v++ {
									k := wf[c*9+(u+1)*3+v+1]
									wn += k * k
									if i+u >= 0 && i+u < 28 && j+v >= 0 && j+v < 28 {
										x := b[s*784+(i+u)*28+j+v]
										conv += k * x
										q += x * x
									}
								}
							}
							cos := conv / math.Sqrt(wn+eps) / math.Sqrt(q+eps)
							cos = math.Max(-1, math.Min(1, cos))
							num[c] += conv * cos
							den[c] += cos * cos
						}
					}
				}
			}
		}
		for c := range 16 {
			want := num[c] / den[c]
			if math.Abs(float64(got.Float[c])-want) > 1e-4*math.Abs(want) {
				t.Errorf("A[%d] = %g, want %g", c, got.Float[c], want)
			}
		}
	})
	t.Run("needs data", func(t *testing.T) {
		m := build(t, "vgg-mini", nil)
		_, err := rewrite.Run(m, rewrite.Options{Config: config(dcnet.MagBall, dcnet.AngCos, nil), AlphaAuto: true}, nil)
		if err == nil || !strings.Contains(err.Error(), "needs calibration data") {
			t.Errorf("error = %v, want calibration data asked for", err)
		}
	})
}
