package dcnet

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/internal/peer"
)

// peerOpsets are the default-domain opsets the bodies are run at.
var peerOpsets = []int64{7, 9, 11, 13, 17}

// peerGeometry is a Conv the decoupled nodes replace in the runtime test.
type peerGeometry struct {
	name   string
	wShape [4]int
	attrs  []*onnxpb.AttributeProto // the Conv attributes the node carries
	win    Window
	bias   bool
}

// peerXShape is the shape of the runtime test's input.
var peerXShape = [4]int{1, 3, 7, 6}

func peerGeometries() []peerGeometry {
	return []peerGeometry{
		{name: "3x3 asymmetric pads, stride, dilation", wShape: [4]int{4, 3, 3, 3},
			attrs: []*onnxpb.AttributeProto{intsAttr(AttrDilations, 1, 2), intAttr(AttrGroup, 1), intsAttr(AttrKernelShape, 3, 3),
				intsAttr(AttrPads, 1, 0, 2, 1), intsAttr(AttrStrides, 2, 1)},
			win:  Window{Pads: []int64{1, 0, 2, 1}, Strides: []int64{2, 1}, Dilations: []int64{1, 2}},
			bias: true},
		// No pads, strides or dilations on the node: the references in the
		// body find nothing and the defaults apply.
		{name: "1x1 no bias", wShape: [4]int{4, 3, 1, 1},
			attrs: []*onnxpb.AttributeProto{intsAttr(AttrKernelShape, 1, 1)}},
		{name: "3x2 SAME_UPPER stride 2", wShape: [4]int{4, 3, 3, 2},
			attrs: []*onnxpb.AttributeProto{stringAttr(AttrAutoPad, "SAME_UPPER"), intsAttr(AttrStrides, 2, 2)},
			win:   Window{AutoPad: "SAME_UPPER", Strides: []int64{2, 2}},
			bias:  true},
	}
}

// peerData is the input and the weights of one runtime test model, as
// float32 values widened to float64.
type peerData struct {
	x, w, b, alpha, rhoV []float64
	rhoScale             float64
}

// newPeerData draws an input whose channels share a positive component
// and filters of which the first two follow it (|cos| near 1) and the
// others do not (|cos| near 0), so the cosines spread over [0, 1).
func newPeerData(r *rand.Rand, g peerGeometry) peerData {
	f32 := func(v float64) float64 { return float64(float32(v)) }
	var d peerData
	h, wd := peerXShape[2], peerXShape[3]
	shared := randomSlice(r, h*wd, 0, 1)
	for c := 0; c < peerXShape[1]; c++ {
		for i := range h * wd {
			d.x = append(d.x, f32(shared[i]+0.4*(r.Float64()-0.5)))
		}
	}
	size := g.wShape[1] * g.wShape[2] * g.wShape[3]
	for o := 0; o < g.wShape[0]; o++ {
		for range size {
			v := 2*r.Float64() - 1
			switch o {
			case 0:
				v = 0.6 + 0.4*r.Float64()
			case 1:
				v = -0.6 - 0.4*r.Float64()
			}
			d.w = append(d.w, f32(v))
		}
	}
	for range g.wShape[0] {
		d.b = append(d.b, f32(r.Float64()-0.5))
		d.alpha = append(d.alpha, f32(0.5+r.Float64()))
		d.rhoV = append(d.rhoV, f32(0.85+0.3*r.Float64()))
	}
	return d
}

// tensor is a float initializer.
func tensor(name string, dims []int64, v []float64) *onnxpb.TensorProto {
	data := make([]float32, len(v))
	for i, x := range v {
		data[i] = float32(x)
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: data}
}

// floatValue is a float tensor graph input or output of the given shape.
func floatValue(name string, dims []int64) *onnxpb.ValueInfoProto {
	tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}
	tt.Shape = &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		tt.Shape.Dim = append(tt.Shape.Dim, &onnxpb.TensorShapeProto_Dimension{
			Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tt}}}
}

// Names of the initializers holding the neutral values of B and Alpha,
// which fill the gaps of a configuration's inputs.
const (
	zeroBias  = "B_zero"
	unitAlpha = "Alpha_one"
)

// peerCase is one decoupled node of a runtime test model.
type peerCase struct {
	c      Config    // the configuration the node has
	inputs []string  // the node's actual inputs
	want   []float64 // the reference output
	label  string
}

// caseOf returns the node for c reading the shared initializers, which
// carry the formal names.
func caseOf(c Config, want []float64) peerCase {
	return peerCase{c: c, inputs: c.Inputs(), want: want, label: c.Summary()}
}

// filledCaseOf returns the node for c.WithoutGaps(), reading zeros for
// the filled bias and ones for the filled channel scale: its output must
// be c's.
func filledCaseOf(c Config, want []float64) peerCase {
	f := c.WithoutGaps()
	in := f.Inputs()
	if f.Bias && !c.Bias {
		in[IndexB] = zeroBias
	}
	if f.ChannelScale && !c.ChannelScale {
		in[IndexAlpha] = unitAlpha
	}
	return peerCase{c: f, inputs: in, want: want, label: c.Summary() + " without gaps"}
}

// peerModel builds a model with one decoupled node per case, all reading
// the graph input X and the shared initializers, plus the plain Conv
// "plain", at the given opset. Case i writes output "y<i>".
func peerModel(g peerGeometry, d peerData, cases []peerCase, yShape [4]int, opset int64) (*onnxpb.ModelProto, error) {
	yDims := []int64{int64(yShape[0]), int64(yShape[1]), int64(yShape[2]), int64(yShape[3])}
	cout := int64(g.wShape[0])
	graph := &onnxpb.GraphProto{
		Name:  proto.String("decoupled"),
		Input: []*onnxpb.ValueInfoProto{floatValue(InputX, []int64{1, 3, 7, 6})},
		Initializer: []*onnxpb.TensorProto{
			tensor(InputW, []int64{cout, int64(g.wShape[1]), int64(g.wShape[2]), int64(g.wShape[3])}, d.w),
			tensor(InputB, []int64{cout}, d.b),
			tensor(InputAlpha, []int64{cout}, d.alpha),
			tensor(InputRhoV, []int64{cout}, d.rhoV),
			tensor(InputRhoScale, nil, []float64{d.rhoScale}),
			tensor(zeroBias, []int64{cout}, make([]float64, cout)),
			tensor(unitAlpha, []int64{cout}, slices.Repeat([]float64{1}, int(cout))),
		},
	}
	plainIn := []string{InputX, InputW}
	if g.bias {
		plainIn = append(plainIn, InputB)
	}
	graph.Node = append(graph.Node, &onnxpb.NodeProto{Name: proto.String("plain"), OpType: proto.String(opConv),
		Input: plainIn, Output: []string{"plain"}, Attribute: g.attrs})
	graph.Output = append(graph.Output, floatValue("plain", yDims))
	var fns []*onnxpb.FunctionProto
	seen := map[string]bool{}
	for i, pc := range cases {
		c := pc.c
		if !seen[c.OpType()] {
			fn, err := Function(c, opset)
			if err != nil {
				return nil, err
			}
			fns = append(fns, fn)
			seen[c.OpType()] = true
		}
		out := fmt.Sprintf("y%d", i)
		graph.Node = append(graph.Node, &onnxpb.NodeProto{
			Name:      proto.String(fmt.Sprintf("dc%d", i)),
			Domain:    proto.String(Domain),
			OpType:    proto.String(c.OpType()),
			Input:     pc.inputs,
			Output:    []string{out},
			Attribute: append(slices.Clone(g.attrs), c.Attributes()...),
		})
		graph.Output = append(graph.Output, floatValue(out, yDims))
	}
	return &onnxpb.ModelProto{
		IrVersion:    proto.Int64(8),
		ProducerName: proto.String("dcnet-test"),
		OpsetImport: []*onnxpb.OperatorSetIdProto{
			{Domain: proto.String(""), Version: proto.Int64(opset)},
			{Domain: proto.String(Domain), Version: proto.Int64(DomainVersion)},
		},
		Graph:     graph,
		Functions: fns,
	}, nil
}

// median returns the median of v.
func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestFunctionInRuntime runs every configuration's body in ONNX Runtime
// at several opsets and three Conv geometries, and compares with
// Reference. Nodes whose inputs have no gap go into a model that passes
// the ONNX checker first; nodes with a gap (an empty input name before a
// present one) run in a model of their own, which the checker of onnx 1.12
// rejects (see Config.HasGaps), and once more filled by WithoutGaps in
// the checked model.
func TestFunctionInRuntime(t *testing.T) {
	rt := peer.ORT(t)
	r := rand.New(rand.NewPCG(7, 11))
	compared, checked, identities := 0, 0, 0
	perOpset := map[int64]int{}
	for _, g := range peerGeometries() {
		t.Run(g.name, func(t *testing.T) {
			d := newPeerData(r, g)
			// The radius, fixed and learnable, is the median patch norm,
			// so ball and seg see both sides of it.
			stats, err := ReferenceStats(DefaultConfig(), d.x, peerXShape, d.w, g.wShape, nil, nil, nil, 0, g.win)
			if err != nil {
				t.Fatal(err)
			}
			rho := float32(median(stats.N))
			d.rhoScale = float64(rho)
			configs := allConfigs(rho)
			// The identity: linear, cos, weighted=linear, alpha 1 is the
			// plain Conv.
			identity := withConfig(func(c *Config) { c.Weighted, c.Bias = WeightLinear, g.bias })
			identityKey := identity.Key()
			configs = append(configs, identity)

			var checkedCases, gapped []peerCase
			var cosines []float64
			for i, c := range configs {
				c.Bias = g.bias
				var b, alpha, rhoV []float64
				if c.Bias {
					b = d.b
				}
				if c.ChannelScale {
					alpha = d.alpha
				}
				if c.LearnRho {
					rhoV = d.rhoV
				}
				res, err := ReferenceStats(c, d.x, peerXShape, d.w, g.wShape, b, alpha, rhoV, d.rhoScale, g.win)
				if err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					cosines = res.Cos
				}
				if c.Magnitude == MagBall || c.Magnitude == MagSeg {
					below, above := res.RhoSplit()
					if f := float64(below) / float64(below+above); f < 0.1 || f > 0.9 {
						t.Errorf("%s: %.0f%% of the values are at or below rho, want 10-90%%", c.Summary(), 100*f)
					}
				}
				if c.HasGaps() {
					gapped = append(gapped, caseOf(c, res.Y))
					checkedCases = append(checkedCases, filledCaseOf(c, res.Y))
				} else {
					checkedCases = append(checkedCases, caseOf(c, res.Y))
				}
			}
			var quarters [4]int
			for _, c := range cosines {
				quarters[min(int(4*math.Abs(c)), 3)]++
			}
			t.Logf("|cos| in quarters of [0, 1]: %v; rho %.4g", quarters, rho)
			if slices.Contains(quarters[:], 0) {
				t.Errorf("|cos| leaves a quarter of [0, 1] empty: %v", quarters)
			}

			x := make([]float32, len(d.x))
			for i, v := range d.x {
				x[i] = float32(v)
			}
			inputs := map[string]peer.Tensor{InputX: {Dims: []int64{1, 3, 7, 6}, Data: x}}
			for _, opset := range peerOpsets {
				for _, group := range []struct {
					name  string
					cases []peerCase
					check bool
				}{{"checked", checkedCases, true}, {"gapped", gapped, false}} {
					if len(group.cases) == 0 {
						continue
					}
					m, err := peerModel(g, d, group.cases, stats.Shape, opset)
					if err != nil {
						t.Fatal(err)
					}
					path := filepath.Join(t.TempDir(), fmt.Sprintf("opset%d-%s.onnx", opset, group.name))
					writeModelFile(t, path, m)
					if group.check {
						peer.CheckModel(t, path)
						checked++
					}
					got, err := rt.Run(path, inputs)
					if err != nil {
						t.Fatalf("opset %d: %v", opset, err)
					}
					for i, pc := range group.cases {
						gy := widen(got[fmt.Sprintf("y%d", i)])
						if _, err := absTol(1e-4*maxAbs(pc.want)).compare(gy, pc.want); err != nil {
							t.Errorf("opset %d, %s (%s): %v", opset, pc.label, pc.c.Key(), err)
						}
						compared++
						perOpset[opset]++
						if pc.c.Key() == identityKey {
							identities++
							plain := widen(got["plain"])
							if _, err := absTol(1e-5*maxAbs(plain)).compare(gy, plain); err != nil {
								t.Errorf("opset %d: the identity configuration differs from the plain Conv: %v", opset, err)
							}
						}
					}
				}
			}
		})
	}
	if identities != len(peerGeometries())*len(peerOpsets) {
		t.Errorf("compared the identity with the plain Conv %d times, want %d", identities, len(peerGeometries())*len(peerOpsets))
	}
	t.Logf("compared %d node outputs with the reference in ONNX Runtime (per opset %v) and %d identities with the plain Conv; %d models passed the checker",
		compared, perOpset, identities, checked)
}

// widen returns a tensor's values as float64.
func widen(t peer.Tensor) []float64 {
	out := make([]float64, len(t.Data))
	for i, v := range t.Data {
		out[i] = float64(v)
	}
	return out
}

// writeModelFile serializes m to path.
func writeModelFile(t *testing.T, path string, m *onnxpb.ModelProto) {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
