package rewrite_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/internal/peer"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// Tolerances of the truth tests, relative to the largest magnitude of the
// reference output.
const (
	relTol      = 1e-4 // ONNX Runtime (float32) against PyTorch (float64)
	identityTol = 1e-5 // the identity configuration against the source model
)

// randomInput returns a seeded normal tensor.
func randomInput(seed uint64, dims ...int64) peer.Tensor {
	r := rand.New(rand.NewPCG(seed, 1))
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	data := make([]float32, n)
	for i := range data {
		data[i] = float32(r.NormFloat64())
	}
	return peer.Tensor{Dims: dims, Data: data}
}

// compare checks got against want elementwise within tol times the
// largest |want|, and returns the worst relative difference.
func compare(t *testing.T, what string, got, want peer.Tensor, tol float64) float64 {
	t.Helper()
	if fmt.Sprint(got.Dims) != fmt.Sprint(want.Dims) {
		t.Errorf("%s: shape %v, want %v", what, got.Dims, want.Dims)
		return math.Inf(1)
	}
	scale := 0.0
	for _, v := range want.Data {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	if scale == 0 {
		scale = 1
	}
	worst := 0.0
	for i := range want.Data {
		d := math.Abs(float64(got.Data[i])-float64(want.Data[i])) / scale
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		worst = math.Max(worst, d)
	}
	if worst > tol {
		t.Errorf("%s: differs by %.3g of max|want| = %.3g, want at most %g", what, worst, scale, tol)
	}
	return worst
}

// write encodes m into dir/name.
func write(t *testing.T, m *onnximport.Model, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := m.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// clone returns a deep copy of m.
func clone(m *onnximport.Model) *onnximport.Model {
	return &onnximport.Model{Proto: proto.Clone(m.Proto).(*onnxpb.ModelProto)}
}

// source is a plain model to rewrite and an input for it.
type source struct {
	name  string
	model *onnximport.Model
	input map[string]peer.Tensor
}

// sources returns vgg-mini at the opsets the rewrite must support, a
// small resnet18, and the models PyTorch exported into testdata/foreign.
func sources(t *testing.T) []source {
	var out []source
	for _, opset := range []int64{7, 9, 11, 13, 17} {
		m := build(t, "vgg-mini", func(c *models.Config) { c.Opset = opset; c.BN = opset == 9 })
		out = append(out, source{fmt.Sprintf("vgg-mini-opset%d", opset), m,
			map[string]peer.Tensor{"input": randomInput(uint64(opset), 2, 1, 28, 28)}})
	}
	rn := build(t, "resnet18", func(c *models.Config) { c.Input = [3]int64{3, 32, 32}; c.Classes = 10; c.Opset = 11 })
	out = append(out, source{"resnet18-opset11", rn, map[string]peer.Tensor{"input": randomInput(3, 2, 3, 32, 32)}})
	paths, _ := filepath.Glob("../testdata/foreign/*/model.onnx")
	for _, p := range paths {
		m, err := onnximport.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		shapes, _ := m.InferShapes()
		in := m.Graph().GetInput()[0]
		sh := shapes[in.GetName()]
		dims := []int64{2}
		for _, d := range sh[1:] {
			dims = append(dims, d.Size)
		}
		out = append(out, source{"foreign-" + filepath.Base(filepath.Dir(p)), m,
			map[string]peer.Tensor{in.GetName(): randomInput(7, dims...)}})
	}
	return out
}

// configsForSources cycles through configurations so that every source
// model meets a different one.
var configsForSources = []dcnet.Config{
	config(dcnet.MagBall, dcnet.AngCos, nil),
	config(dcnet.MagTanh, dcnet.AngSigmoid, nil),
	config(dcnet.MagSeg, dcnet.AngLinear, func(c *dcnet.Config) { c.LearnRho = false; c.Rho = 3 }),
	config(dcnet.MagMix, dcnet.AngSqcos, func(c *dcnet.Config) { c.Weighted = dcnet.WeightLog }),
	config(dcnet.MagSphere, dcnet.AngSigmoid, func(c *dcnet.Config) { c.Weighted = dcnet.WeightLinear; c.K = 0.5 }),
	config(dcnet.MagLog, dcnet.AngLinear, nil),
	config(dcnet.MagLinear, dcnet.AngCos, func(c *dcnet.Config) { c.Alpha = 0.5 }),
}

// identity is the configuration that reproduces the source model.
func identity() dcnet.Config {
	c := dcnet.DefaultConfig()
	c.Magnitude, c.Angular, c.Weighted, c.Alpha = dcnet.MagLinear, dcnet.AngCos, dcnet.WeightLinear, 1
	return c
}

// TestTruthModels rewrites whole models, in function and inline form:
// every result passes the ONNX checker, runs in ONNX Runtime, and matches
// the PyTorch reference; the identity configuration reproduces the source
// model's outputs.
func TestTruthModels(t *testing.T) {
	ort := peer.ORT(t)
	torch := peer.Torch(t)
	dir := t.TempDir()
	compared, checked := 0, 0
	for i, src := range sources(t) {
		t.Run(src.name, func(t *testing.T) {
			srcPath := write(t, src.model, dir, src.name+".onnx")
			want, err := ort.Run(srcPath, src.input)
			if err != nil {
				t.Fatal(err)
			}
			cfg := configsForSources[i%len(configsForSources)]
			fn := clone(src.model)
			if _, err := rewrite.Run(fn, rewrite.Options{Config: cfg}, validate); err != nil {
				t.Fatal(err)
			}
			fnPath := write(t, fn, dir, src.name+".function.onnx")
			ref, err := torch.Run(fnPath, src.input)
			if err != nil {
				t.Fatal(err)
			}
			inl := clone(fn)
			if err := rewrite.Inline(inl); err != nil {
				t.Fatal(err)
			}
			if err := validate("inline", inl); err != nil {
				t.Fatal(err)
			}
			inlPath := write(t, inl, dir, src.name+".inline.onnx")

			for _, inline := range []bool{false, true} {
				form, path := "function", fnPath
				if inline {
					form, path = "inline", inlPath
				}
				// Identity: the source model's outputs.
				id := clone(src.model)
				if _, err := rewrite.Run(id, rewrite.Options{Config: identity(), Inline: inline}, validate); err != nil {
					t.Fatal(err)
				}
				got, err := ort.Run(write(t, id, dir, src.name+".identity."+form+".onnx"), src.input)
				if err != nil {
					t.Fatalf("identity %s: %v", form, err)
				}
				for name, w := range want {
					compare(t, fmt.Sprintf("identity %s output %q", form, name), got[name], w, identityTol)
					compared++
				}
				// A real configuration against PyTorch.
				peer.CheckModel(t, path)
				checked++
				got, err = ort.Run(path, src.input)
				if err != nil {
					t.Fatalf("%s %s: %v", cfg.Summary(), form, err)
				}
				for name, w := range ref.Outputs {
					compare(t, fmt.Sprintf("%s %s output %q", cfg.Summary(), form, name), got[name], w, relTol)
					compared++
				}
			}
		})
	}
	t.Logf("checked %d rewritten models with the ONNX checker; compared %d outputs with ONNX Runtime and PyTorch", checked, compared)
}

// geometry is a Conv of the branch model.
type geometry struct {
	name                        string
	kernel, pads, strides, dils []int64
	bias                        bool
}

var geometries = []geometry{
	{"asym", []int64{3, 3}, []int64{1, 0, 2, 1}, []int64{2, 1}, []int64{1, 2}, true},
	{"1x1", []int64{1, 1}, []int64{0, 0, 0, 0}, []int64{2, 2}, []int64{1, 1}, false},
}

// Branch model dimensions: input [batch, cin, h, w], cout channels.
const (
	branchBatch, branchCin, branchH, branchW, branchCout = 2, 3, 9, 8, 9
)

// branchInput is non-negative (as after a ReLU), so that filters with a
// positive or negative mean see patches at every angle.
func branchInput() peer.Tensor {
	r := rand.New(rand.NewPCG(11, 2))
	t := peer.Tensor{Dims: []int64{branchBatch, branchCin, branchH, branchW}}
	t.Data = make([]float32, branchBatch*branchCin*branchH*branchW)
	for i := range t.Data {
		t.Data[i] = float32(0.2 + r.Float64()*1.8)
	}
	return t
}

// branchLambdas are the means of the branch filters' channels: filters
// with a clear sign see the non-negative patches at small and large
// angles, zero-mean ones near a right angle, so that |cos| spreads over
// [0, 1).
var branchLambdas = [branchCout]float64{-1, -0.6, -0.3, 0, 0, 0, 0.3, 0.6, 1}

// branchWeight gives channel c a mean of branchLambdas[c] plus noise.
func branchWeight(g geometry, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 3))
	per := branchCin * int(g.kernel[0]*g.kernel[1])
	w := make([]float32, branchCout*per)
	for c := 0; c < branchCout; c++ {
		// Noise of zero mean, so that the zero-mean channels are
		// orthogonal to a constant patch.
		noise := make([]float64, per)
		mean := 0.0
		for i := range noise {
			noise[i] = 0.4 * r.NormFloat64()
			mean += noise[i] / float64(per)
		}
		for i := range noise {
			w[c*per+i] = float32(branchLambdas[c] + noise[i] - mean)
		}
	}
	return w
}

// medianPatchNorm computes N = sqrt(sum of x^2 over each patch + eps) at
// every output location of geometry g, straight from the definition, and
// returns its median.
func medianPatchNorm(x peer.Tensor, g geometry, eps float64) float64 {
	var ns []float64
	kh, kw := g.kernel[0], g.kernel[1]
	oh := (branchH+g.pads[0]+g.pads[2]-(kh-1)*g.dils[0]-1)/g.strides[0] + 1
	ow := (branchW+g.pads[1]+g.pads[3]-(kw-1)*g.dils[1]-1)/g.strides[1] + 1
	for b := int64(0); b < branchBatch; b++ {
		for i := int64(0); i < oh; i++ {
			for j := int64(0); j < ow; j++ {
				s := 0.0
				for c := int64(0); c < branchCin; c++ {
					for u := int64(0); u < kh; u++ {
						for v := int64(0); v < kw; v++ {
							y := i*g.strides[0] - g.pads[0] + u*g.dils[0]
							z := j*g.strides[1] - g.pads[1] + v*g.dils[1]
							if y < 0 || y >= branchH || z < 0 || z >= branchW {
								continue
							}
							f := float64(x.Data[((b*branchCin+c)*branchH+y)*branchW+z])
							s += f * f
						}
					}
				}
				ns = append(ns, math.Sqrt(s+eps))
			}
		}
	}
	sort.Float64s(ns)
	return ns[len(ns)/2]
}

// branchCase is one decoupled branch of the branch model.
type branchCase struct {
	cfg  dcnet.Config
	geom geometry
}

// branchCases lists every magnitude x angular x weighting on both
// geometries, plus the learnable radius for the magnitudes that have one.
func branchCases(x peer.Tensor) []branchCase {
	var out []branchCase
	eps := float64(dcnet.DefaultConfig().Eps)
	for _, g := range geometries {
		rho := float32(medianPatchNorm(x, g, eps))
		for _, mag := range dcnet.Magnitudes() {
			for _, ang := range dcnet.Angulars() {
				for _, wt := range dcnet.Weightings() {
					c := config(mag, ang, func(c *dcnet.Config) { c.Weighted = wt; c.LearnRho = false })
					if c.NeedsRho() {
						c.Rho = rho
					}
					out = append(out, branchCase{c, g})
				}
				if c := config(mag, ang, nil); c.NeedsRho() {
					out = append(out, branchCase{c, g})
				}
			}
		}
	}
	return out
}

// branchModel builds a plain model whose input feeds one Conv per case,
// each a graph output.
func branchModel(cases []branchCase) *onnximport.Model {
	g := &onnxpb.GraphProto{Name: proto.String("branches")}
	g.Input = []*onnxpb.ValueInfoProto{tensorInfo("x", branchBatch, branchCin, branchH, branchW)}
	for i, bc := range cases {
		name := fmt.Sprintf("conv%03d", i)
		w := branchWeight(bc.geom, uint64(i))
		g.Initializer = append(g.Initializer, floatInit(name+".weight", []int64{branchCout, branchCin, bc.geom.kernel[0], bc.geom.kernel[1]}, w))
		in := []string{"x", name + ".weight"}
		if bc.geom.bias {
			b := make([]float32, branchCout)
			for c := range b {
				b[c] = float32(c)/10 - 0.3
			}
			g.Initializer = append(g.Initializer, floatInit(name+".bias", []int64{branchCout}, b))
			in = append(in, name+".bias")
		}
		g.Node = append(g.Node, &onnxpb.NodeProto{
			Name: proto.String(name), OpType: proto.String("Conv"), Input: in, Output: []string{name + ".out"},
			Attribute: []*onnxpb.AttributeProto{
				ints("kernel_shape", bc.geom.kernel), ints("pads", bc.geom.pads),
				ints("strides", bc.geom.strides), ints("dilations", bc.geom.dils),
			},
		})
		out := tensorInfo(name + ".out")
		for range 4 { // rank 4, sizes left to inference
			out.Type.GetTensorType().Shape.Dim = append(out.Type.GetTensorType().Shape.Dim, &onnxpb.TensorShapeProto_Dimension{})
		}
		g.Output = append(g.Output, out)
	}
	return &onnximport.Model{Proto: &onnxpb.ModelProto{
		IrVersion:    proto.Int64(8),
		ProducerName: proto.String("rewrite-test"),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph:        g,
	}}
}

// TestTruthEveryConfiguration rewrites one Conv per configuration (every
// magnitude x angular x weighting, fixed and learnable radius) on two
// geometries (asymmetric pads, strides and dilations with a bias; a 1x1
// kernel without) and compares ONNX Runtime with the PyTorch reference,
// asserting that every piecewise branch is exercised.
func TestTruthEveryConfiguration(t *testing.T) {
	ort := peer.ORT(t)
	torch := peer.Torch(t)
	x := branchInput()
	cases := branchCases(x)
	m := branchModel(cases)
	for i, bc := range cases {
		name := fmt.Sprintf("conv%03d", i)
		if _, err := rewrite.Run(m, rewrite.Options{Config: bc.cfg, Layers: name}, nil); err != nil {
			t.Fatalf("%s (%s): %v", name, bc.cfg.Summary(), err)
		}
		if bc.cfg.LearnRho {
			// A calibrated-looking radius: RhoScale at the median patch
			// norm, RhoV near 1 and different per channel.
			setFloats(t, m, name+".rho_scale", float32(medianPatchNorm(x, bc.geom, float64(bc.cfg.Eps))))
			v := make([]float32, branchCout)
			for c := range v {
				v[c] = 0.9 + 0.2*float32(c)/branchCout
			}
			setFloats(t, m, name+".rho_v", v...)
		}
	}
	if err := validate("all", m); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fnPath := write(t, m, dir, "branches.onnx")
	inl := clone(m)
	if err := rewrite.Inline(inl); err != nil {
		t.Fatal(err)
	}
	inlPath := write(t, inl, dir, "branches.inline.onnx")
	peer.CheckModel(t, fnPath)
	peer.CheckModel(t, inlPath)

	inputs := map[string]peer.Tensor{"x": x}
	ref, err := torch.Run(fnPath, inputs)
	if err != nil {
		t.Fatal(err)
	}
	compared := 0
	for _, path := range []string{fnPath, inlPath} {
		got, err := ort.Run(path, inputs)
		if err != nil {
			t.Fatal(err)
		}
		for i, bc := range cases {
			name := fmt.Sprintf("conv%03d", i)
			compare(t, fmt.Sprintf("%s %s %s (%s)", filepath.Base(path), name, bc.cfg.Summary(), bc.geom.name),
				got[name+".out"], ref.Outputs[name+".out"], relTol)
			compared++
		}
	}
	for i, bc := range cases {
		name := fmt.Sprintf("conv%03d", i)
		st, ok := ref.Stats[name]
		if !ok {
			t.Errorf("%s: the reference reports no statistics", name)
			continue
		}
		if bc.cfg.NeedsRho() && (st.BelowRho < 0.1 || st.BelowRho > 0.9) {
			t.Errorf("%s %s (%s): %.0f%% of patch norms below the radius, want 10-90%%", name, bc.cfg.Summary(), bc.geom.name, 100*st.BelowRho)
		}
		for q, f := range st.CosQuartiles {
			if f < 0.02 {
				t.Errorf("%s (%s): %.1f%% of |cos| in quartile %d, want every quartile exercised", name, bc.geom.name, 100*f, q+1)
			}
		}
	}
	t.Logf("%d configurations x geometries; compared %d outputs of both forms with PyTorch", len(cases), compared)
}

// setFloats replaces the values of a float initializer.
func setFloats(t *testing.T, m *onnximport.Model, name string, v ...float32) {
	t.Helper()
	init, ok := m.Initializer(name)
	if !ok {
		t.Fatalf("no initializer %q", name)
	}
	init.RawData = floatInit(name, nil, v).RawData
}

func floatInit(name string, dims []int64, v []float32) *onnxpb.TensorProto {
	return onnximport.FloatTensor(name, dims, v)
}

func ints(name string, v []int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func floatType() *onnxpb.TypeProto {
	return &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
		ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}}}
}

func tensorInfo(name string, dims ...int64) *onnxpb.ValueInfoProto {
	tp := floatType()
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		shape.Dim = append(shape.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	tp.GetTensorType().Shape = shape
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: tp}
}

// TestTruthTwoConfigurations rewrites part of a model, then part of the
// result with another configuration: both configurations run correctly
// side by side, in both forms.
func TestTruthTwoConfigurations(t *testing.T) {
	dir := t.TempDir()
	m := build(t, "vgg-mini", func(c *models.Config) { c.Opset = 11 })
	ball := config(dcnet.MagBall, dcnet.AngCos, nil)
	tanh := config(dcnet.MagTanh, dcnet.AngSigmoid, func(c *dcnet.Config) { c.LearnRho = false; c.Rho = 2; c.Weighted = dcnet.WeightLog })
	if _, err := rewrite.Run(m, rewrite.Options{Config: ball, Layers: "0,2"}, validate); err != nil {
		t.Fatal(err)
	}
	path := write(t, m, dir, "partial.onnx")
	again, err := onnximport.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rewrite.Run(again, rewrite.Options{Config: tanh}, validate); err != nil {
		t.Fatal(err)
	}
	if n := len(again.Proto.GetFunctions()); n != 2 {
		t.Fatalf("%d functions, want 2", n)
	}
	checkBothForms(t, again, dir, "two", randomInput(5, 2, 1, 28, 28))
	t.Logf("compared 2 forms of a model with 2 configurations (ball on layers 0 and 2, tanh on 1 and 3)")
}

// TestTruthCalibrated: a calibrated layer (measured RhoScale and fitted
// output scale) passes the checker and matches PyTorch in both forms.
func TestTruthCalibrated(t *testing.T) {
	dir := t.TempDir()
	m := build(t, "vgg-mini", func(c *models.Config) { c.Opset = 9 })
	opts := rewrite.Options{Config: config(dcnet.MagBall, dcnet.AngSigmoid, nil), Layers: "0", Calib: newInputCalibrator(2).calibrator(), AlphaAuto: true}
	if _, err := rewrite.Run(m, opts, validate); err != nil {
		t.Fatal(err)
	}
	checkBothForms(t, m, dir, "calibrated", randomInput(8, 2, 1, 28, 28))
	t.Logf("compared 2 forms of a calibrated model with PyTorch")
}

// checkBothForms writes m (function form) and its inline form into dir,
// checks both with the onnx checker and compares ONNX Runtime's output
// "output" on input with the PyTorch reference of the function form.
func checkBothForms(t *testing.T, m *onnximport.Model, dir, name string, input peer.Tensor) {
	t.Helper()
	ort := peer.ORT(t)
	torch := peer.Torch(t)
	fnPath := write(t, m, dir, name+".onnx")
	inl := clone(m)
	if err := rewrite.Inline(inl); err != nil {
		t.Fatal(err)
	}
	inlPath := write(t, inl, dir, name+".inline.onnx")
	inputs := map[string]peer.Tensor{"input": input}
	ref, err := torch.Run(fnPath, inputs)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fnPath, inlPath} {
		peer.CheckModel(t, p)
		got, err := ort.Run(p, inputs)
		if err != nil {
			t.Fatal(err)
		}
		compare(t, filepath.Base(p), got["output"], ref.Outputs["output"], relTol)
	}
}
