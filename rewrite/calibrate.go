package rewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Calibrator measures what calibration needs (DCNET.md section 3) on the
// calibration data, for a decoupled node of the model as rewritten and
// calibrated so far (see ReadLayer for reading the node).
type Calibrator interface {
	// MeanPatchNorm returns the mean patch norm N of the node named node
	// over every calibration sample and output location, padded borders
	// included.
	MeanPatchNorm(m *onnximport.Model, node string) (float64, error)
	// ScaleSums returns, per output channel of the node, the sums
	// <y_orig, y1> and <y1, y1> over the calibration data: y1 is the
	// node's output with A = 1 and no bias, y_orig the source convolution
	// without bias.
	ScaleSums(m *onnximport.Model, node string) (num, den []float64, err error)
}

// ReferenceCalibrator is a Calibrator that computes with dcnet's direct
// float64 implementation of the operator on the inputs Inputs yields:
// exact and simple, slow on large layers.
type ReferenceCalibrator struct {
	// Inputs calls fn with the input X of the node named node of m, in
	// NCHW order with its shape, for every calibration batch.
	Inputs func(m *onnximport.Model, node string, fn func(x []float64, shape [4]int) error) error
}

// MeanPatchNorm implements Calibrator.
func (c ReferenceCalibrator) MeanPatchNorm(m *onnximport.Model, node string) (float64, error) {
	l, err := ReadLayer(m, node)
	if err != nil {
		return 0, err
	}
	// The patch norm does not depend on the radius; any valid one will do.
	probe := l.Config
	probe.LearnRho, probe.Rho, probe.Bias, probe.ChannelScale = false, 1, false, false
	var sum float64
	var count int
	err = c.Inputs(m, node, func(x []float64, shape [4]int) error {
		r, err := dcnet.ReferenceStats(probe, x, shape, l.W, l.WShape, nil, nil, nil, 0, l.Window)
		if err != nil {
			return err
		}
		for _, v := range r.N {
			sum += v
		}
		count += len(r.N)
		return nil
	})
	if err != nil || count == 0 {
		return 0, err
	}
	return sum / float64(count), nil
}

// ScaleSums implements Calibrator.
func (c ReferenceCalibrator) ScaleSums(m *onnximport.Model, node string) ([]float64, []float64, error) {
	l, err := ReadLayer(m, node)
	if err != nil {
		return nil, nil, err
	}
	one := l.Config
	one.Bias, one.ChannelScale = false, false
	ident := dcnet.DefaultConfig()
	ident.Magnitude, ident.Angular, ident.Weighted, ident.Eps = dcnet.MagLinear, dcnet.AngCos, dcnet.WeightLinear, l.Config.Eps
	cout := l.WShape[0]
	num, den := make([]float64, cout), make([]float64, cout)
	err = c.Inputs(m, node, func(x []float64, shape [4]int) error {
		y1, ys, err := dcnet.Reference(one, x, shape, l.W, l.WShape, nil, nil, l.RhoV, l.RhoScale, l.Window)
		if err != nil {
			return err
		}
		y0, _, err := dcnet.Reference(ident, x, shape, l.W, l.WShape, nil, nil, nil, 0, l.Window)
		if err != nil {
			return err
		}
		per := ys[2] * ys[3]
		for i := range y1 {
			ch := (i / per) % cout
			num[ch] += y0[i] * y1[i]
			den[ch] += y1[i] * y1[i]
		}
		return nil
	})
	return num, den, err
}

// calibrate measures, layer by layer in graph (topological) order, the
// radius (RhoAuto: the rho attribute; a learnable radius: RhoScale) and
// then, with AlphaAuto, the per-channel output scale A of every layer this
// rewrite decoupled. Each layer sees the outputs of the layers before it
// as already rewritten and calibrated.
func calibrate(st *State) error {
	o := st.Options
	if o.Calib == nil {
		return nil
	}
	calibrated := map[string]bool{}
	for i, l := range st.Report.Layers {
		cfg, err := calibrateLayer(st, l.Name)
		if err != nil {
			return fmt.Errorf("calibrating layer %q: %w", l.Name, err)
		}
		calibrated[l.Name] = true
		st.Report.Layers[i].Operator, st.Report.Layers[i].OpType = cfg.Summary(), cfg.OpType()
	}
	var still []string
	for _, name := range st.Report.Uncalibrated {
		if !calibrated[name] {
			still = append(still, name)
		}
	}
	st.Report.Uncalibrated = still
	return nil
}

// CalibrationLayer is what calibration reads of a decoupled node.
type CalibrationLayer struct {
	Node   *onnxpb.NodeProto
	Config dcnet.Config
	// W holds the filters, of shape WShape.
	W      []float64
	WShape [4]int
	Window onnximport.Window
	// RhoV and RhoScale are the learnable radius' values, nil and 0
	// without one.
	RhoV     []float64
	RhoScale float64
}

// ReadLayer reads the decoupled node named node of m for calibration.
func ReadLayer(m *onnximport.Model, node string) (*CalibrationLayer, error) {
	for _, n := range m.Graph().GetNode() {
		if n.GetName() != node || !onnximport.IsDecoupledConv(n) {
			continue
		}
		cfg, err := dcnet.FromNode(n)
		if err != nil {
			return nil, err
		}
		init, ok := m.Initializer(n.GetInput()[1])
		if !ok {
			return nil, fmt.Errorf("weight %q is not an initializer", n.GetInput()[1])
		}
		t, err := m.Tensor(init)
		if err != nil {
			return nil, err
		}
		l := &CalibrationLayer{Node: n, Config: cfg}
		for i := range 4 {
			l.WShape[i] = int(t.Dims[i])
		}
		l.W = make([]float64, len(t.Float))
		for i, v := range t.Float {
			l.W[i] = float64(v)
		}
		if l.Window, err = onnximport.ParseWindow(n, t.Dims[2:]); err != nil {
			return nil, err
		}
		if cfg.LearnRho {
			l.RhoV = floats(m, n.GetInput()[dcnet.IndexRhoV])
			if v := floats(m, n.GetInput()[dcnet.IndexRhoScale]); len(v) == 1 {
				l.RhoScale = v[0]
			}
		}
		return l, nil
	}
	return nil, fmt.Errorf("no decoupled node %q", node)
}

// calibrateLayer calibrates one layer in place and returns its new
// configuration.
func calibrateLayer(st *State, name string) (dcnet.Config, error) {
	m, o := st.Model, st.Options
	l, err := ReadLayer(m, name)
	if err != nil {
		return dcnet.Config{}, err
	}
	cfg, n := l.Config, l.Node
	if o.RhoAuto || cfg.LearnRho {
		mean, err := o.Calib.MeanPatchNorm(m, name)
		if err != nil {
			return cfg, err
		}
		if !(mean > 0) {
			return cfg, errors.New("the calibration data gives no patch norm (is it empty?)")
		}
		if cfg.LearnRho {
			setScalar(m, n.GetInput()[dcnet.IndexRhoScale], float32(mean))
		} else {
			cfg.Rho = float32(mean)
			setConfig(n, cfg)
		}
	}
	if !o.AlphaAuto {
		return cfg, nil
	}
	// A_c = <y_orig_c, y1_c> / <y1_c, y1_c>.
	num, den, err := o.Calib.ScaleSums(m, name)
	if err != nil {
		return cfg, err
	}
	cout := l.WShape[0]
	if len(num) != cout || len(den) != cout {
		return cfg, fmt.Errorf("the calibrator gave %d and %d sums for %d channels", len(num), len(den), cout)
	}
	alpha := make([]float32, cout)
	for c := range alpha {
		alpha[c] = 1
		if den[c] > 0 {
			alpha[c] = float32(num[c] / den[c])
		}
	}
	setAlpha(m, n, cout, alpha)
	cfg.ChannelScale, cfg.Bias = true, true
	setConfig(n, cfg)
	return cfg, nil
}

// setConfig rewrites a decoupled node's op type and configuration
// attributes for cfg, keeping the Conv's own attributes.
func setConfig(n *onnxpb.NodeProto, cfg dcnet.Config) {
	own := map[string]bool{}
	for _, a := range dcnet.ConfigAttributes() {
		own[a] = true
	}
	var attrs []*onnxpb.AttributeProto
	for _, a := range n.GetAttribute() {
		if !own[a.GetName()] {
			attrs = append(attrs, a)
		}
	}
	n.Attribute = append(attrs, cfg.Attributes()...)
	n.OpType = proto.String(cfg.OpType())
}

// setAlpha gives node n the output-scale initializer <node>.alpha holding
// v, in place of a neutral Constant or an absent input; an absent bias
// before it is fed a zero Constant, as decouple does.
func setAlpha(m *onnximport.Model, n *onnxpb.NodeProto, cout int, v []float32) {
	g := m.Graph()
	name := n.GetName() + ".alpha"
	for len(n.Input) <= dcnet.IndexAlpha {
		n.Input = append(n.Input, "")
	}
	if old := n.Input[dcnet.IndexAlpha]; old != "" {
		removeConstant(g, old)
	}
	n.Input[dcnet.IndexAlpha] = name
	g.Initializer = append(g.Initializer, onnximport.FloatTensor(name, []int64{int64(cout)}, v))
	if n.Input[dcnet.IndexB] == "" {
		b := neutralName(n.GetName(), "bias")
		n.Input[dcnet.IndexB] = b
		insertBefore(g, n, constNode(b, int64(cout), 0))
	}
}

// removeConstant drops the Constant node producing output.
func removeConstant(g *onnxpb.GraphProto, output string) {
	var keep []*onnxpb.NodeProto
	for _, n := range g.GetNode() {
		if n.GetOpType() == onnximport.OpConstant && len(n.GetOutput()) == 1 && n.GetOutput()[0] == output {
			continue
		}
		keep = append(keep, n)
	}
	g.Node = keep
}

// insertBefore puts node c right before node n.
func insertBefore(g *onnxpb.GraphProto, n, c *onnxpb.NodeProto) {
	var out []*onnxpb.NodeProto
	for _, x := range g.GetNode() {
		if x == n {
			out = append(out, c)
		}
		out = append(out, x)
	}
	g.Node = out
}

// setScalar sets the value of a rank-0 float initializer.
func setScalar(m *onnximport.Model, name string, v float32) {
	if t, ok := m.Initializer(name); ok {
		t.RawData = binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))
		t.FloatData = nil
	}
}

// floats returns the values of a float initializer.
func floats(m *onnximport.Model, name string) []float64 {
	t, ok := m.Initializer(name)
	if !ok {
		return nil
	}
	v, err := m.Tensor(t)
	if err != nil {
		return nil
	}
	out := make([]float64, len(v.Float))
	for i, f := range v.Float {
		out[i] = float64(f)
	}
	return out
}
