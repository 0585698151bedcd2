package rewrite_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// build returns a freshly built model from package models.
func build(t *testing.T, name string, edit func(*models.Config)) *onnximport.Model {
	t.Helper()
	cfg, err := models.DefaultConfig(name)
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := models.Build(name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := &onnximport.Model{Proto: p}
	if err := m.Check(); err != nil {
		t.Fatal(err)
	}
	return m
}

// validate is the checker run after every pass: the graph stays valid and
// every shape can still be inferred.
func validate(pass string, m *onnximport.Model) error {
	if err := m.Check(); err != nil {
		return err
	}
	_, err := m.InferShapes()
	return err
}

func config(mag dcnet.Magnitude, ang dcnet.Angular, edit func(*dcnet.Config)) dcnet.Config {
	c := dcnet.DefaultConfig()
	c.Magnitude, c.Angular = mag, ang
	c.LearnRho = c.NeedsRho()
	if edit != nil {
		edit(&c)
	}
	return c
}

func decoupledNames(m *onnximport.Model) []string {
	var out []string
	for _, n := range m.Graph().GetNode() {
		if onnximport.IsDecoupledConv(n) {
			out = append(out, n.GetName())
		}
	}
	return out
}

func TestSelection(t *testing.T) {
	// resnet18 has 20 convolutions: conv1, 16 in the blocks and 3
	// downsample convolutions.
	cases := []struct {
		layers string
		want   []string
	}{
		{"", nil}, // every layer: checked by count below
		{"conv1", []string{"/conv1/Conv"}},
		{"/conv1/Conv", []string{"/conv1/Conv"}},
		{"layer1.0.conv1.weight", []string{"/layer1/layer1.0/conv1/Conv"}},
		{"0,-1", []string{"/conv1/Conv", "/layer4/layer4.1/conv2/Conv"}},
		{"1-2", []string{"/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/conv2/Conv"}},
		{"*downsample*", []string{"/layer2/layer2.0/downsample/downsample.0/Conv", "/layer3/layer3.0/downsample/downsample.0/Conv", "/layer4/layer4.0/downsample/downsample.0/Conv"}},
		{"layer4.*,!*downsample*,!layer4.1.*", []string{"/layer4/layer4.0/conv1/Conv", "/layer4/layer4.0/conv2/Conv"}},
		{"layer2.[01].conv1", []string{"/layer2/layer2.0/conv1/Conv", "/layer2/layer2.1/conv1/Conv"}},
	}
	for _, c := range cases {
		t.Run(c.layers, func(t *testing.T) {
			m := build(t, "resnet18", func(cfg *models.Config) { cfg.Input = [3]int64{3, 32, 32}; cfg.Classes = 10 })
			r, err := rewrite.Run(m, rewrite.Options{Config: config(dcnet.MagBall, dcnet.AngCos, nil), Layers: c.layers}, validate)
			if err != nil {
				t.Fatal(err)
			}
			got := decoupledNames(m)
			if c.layers == "" {
				if len(got) != 20 || r.Total != 20 {
					t.Errorf("rewrote %d of %d layers, want all 20", len(got), r.Total)
				}
				return
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("rewritten layers differ (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSelectionErrors(t *testing.T) {
	cases := []struct {
		layers    string
		want      string
		selection bool // a *SelectionError
	}{
		{"nope", `--layers item "nope" matches no convolution layer (the model has 4: 0 /features/features.0/Conv`, true},
		{"7", `--layers item "7" matches no convolution layer`, true},
		{"0,,1", `empty item`, true},
		{"feat[ures", `unclosed [`, true},
		{"!*", `no selected layer can be rewritten`, false},
	}
	for _, c := range cases {
		t.Run(c.layers, func(t *testing.T) {
			m := build(t, "vgg-mini", nil)
			_, err := rewrite.Run(m, rewrite.Options{Config: dcnet.DefaultConfig(), Layers: c.layers}, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want it to contain %q", err, c.want)
			}
			var se *rewrite.SelectionError
			if got := asSelection(err, &se); got != c.selection {
				t.Errorf("SelectionError = %v, want %v", got, c.selection)
			}
		})
	}
}

func asSelection(err error, se **rewrite.SelectionError) bool {
	for err != nil {
		if e, ok := err.(*rewrite.SelectionError); ok {
			*se = e
			return true
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				if asSelection(e, se) {
					return true
				}
			}
			return false
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func TestFormAndMetadata(t *testing.T) {
	m := build(t, "vgg-mini", func(c *models.Config) { c.Opset = 9 })
	srcIR := m.Proto.GetIrVersion()
	r, err := rewrite.Run(m, rewrite.Options{Config: config(dcnet.MagBall, dcnet.AngCos, nil), Layers: "0-1"}, validate)
	if err != nil {
		t.Fatal(err)
	}
	if srcIR >= 8 {
		t.Fatalf("source IR %d, want an older one for this test", srcIR)
	}
	if got := m.Proto.GetIrVersion(); got != 8 {
		t.Errorf("IR version %d, want 8", got)
	}
	if got := m.Opset(""); got != 9 {
		t.Errorf("default opset changed to %d, want 9", got)
	}
	if got := m.Opset(dcnet.Domain); got != 1 {
		t.Errorf("ai.dcnet opset %d, want 1", got)
	}
	// Second rewrite, another configuration, on other layers.
	tanh := config(dcnet.MagTanh, dcnet.AngSigmoid, func(c *dcnet.Config) { c.LearnRho = false; c.Rho = 2 })
	if _, err := rewrite.Run(m, rewrite.Options{Config: tanh, Layers: "2-3"}, validate); err != nil {
		t.Fatal(err)
	}
	if n := len(m.Proto.GetFunctions()); n != 2 {
		t.Errorf("%d functions, want 2 (one per configuration)", n)
	}
	g := m.Graph()
	for _, n := range g.GetNode() {
		if !onnximport.IsDecoupledConv(n) {
			continue
		}
		if !strings.HasPrefix(n.GetOpType(), "DecoupledConv_") || len(n.GetOpType()) != len("DecoupledConv_")+8 {
			t.Errorf("op type %q, want DecoupledConv_ and 8 hex digits", n.GetOpType())
		}
		if onnximport.AttrInts(n, "pads") == nil {
			t.Errorf("node %q lost the Conv's pads attribute", n.GetName())
		}
	}
	layersJSON, _ := rewrite.Metadata(m.Proto, dcnet.MetaLayers)
	var layers map[string]json.RawMessage
	if err := json.Unmarshal([]byte(layersJSON), &layers); err != nil {
		t.Fatalf("%s is not JSON: %v", dcnet.MetaLayers, err)
	}
	if len(layers) != 4 {
		t.Errorf("%s lists %d layers, want 4", dcnet.MetaLayers, len(layers))
	}
	uncal, _ := rewrite.Metadata(m.Proto, dcnet.MetaUncalibrated)
	want := strings.Join([]string{r.Layers[0].Name, r.Layers[1].Name}, ",")
	if uncal != want {
		t.Errorf("%s = %q, want %q", dcnet.MetaUncalibrated, uncal, want)
	}
	for _, name := range r.Uncalibrated {
		if _, ok := m.Initializer(name + ".rho_v"); !ok {
			t.Errorf("initializer %s.rho_v missing", name)
		}
		if _, ok := m.Initializer(name + ".rho_scale"); !ok {
			t.Errorf("initializer %s.rho_scale missing", name)
		}
	}

	// Rewriting a decoupled layer again is refused by name.
	_, err = rewrite.Run(m, rewrite.Options{Config: dcnet.DefaultConfig(), Layers: r.Layers[0].Name}, nil)
	if err == nil || !strings.Contains(err.Error(), `layer "`+r.Layers[0].Name+`" cannot be rewritten: already decoupled`) {
		t.Errorf("error = %v, want a refusal naming the layer", err)
	}
}

func TestInline(t *testing.T) {
	m := build(t, "vgg-mini", nil)
	r, err := rewrite.Run(m, rewrite.Options{Config: config(dcnet.MagSeg, dcnet.AngLinear, nil), Inline: true}, validate)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Inlined {
		t.Error("report does not say the model was inlined")
	}
	if n := len(m.Proto.GetFunctions()); n != 0 {
		t.Errorf("%d functions left, want none", n)
	}
	for _, o := range m.Proto.GetOpsetImport() {
		if o.GetDomain() == dcnet.Domain {
			t.Error("the ai.dcnet domain is still imported")
		}
	}
	for _, n := range m.Graph().GetNode() {
		if !onnximport.IsDefaultDomain(n.GetDomain()) {
			t.Errorf("node %q is in domain %q", n.GetName(), n.GetDomain())
		}
	}
	if _, err := m.InferShapes(); err == nil {
		// Inlined bodies use operators shape inference does not cover;
		// the graph must still be valid, which validate checked.
		t.Log("inlined graph fully shape-inferred")
	}
}

func TestSkipsWhatCannotBeRewritten(t *testing.T) {
	m := build(t, "vgg-mini", nil)
	g := m.Graph()
	// Make the second convolution grouped: implicit selection skips it
	// with a reason, explicit selection is an error.
	conv := g.GetNode()[2]
	w, _ := m.Initializer(conv.GetInput()[1])
	w.Dims[1] = 8
	w.RawData = w.RawData[:len(w.RawData)/2]
	setGroup(conv, 2)
	r, err := rewrite.Run(m, rewrite.Options{Config: dcnet.DefaultConfig()}, validate)
	if err != nil {
		t.Fatal(err)
	}
	want := []rewrite.Skipped{{Name: conv.GetName(), Reason: "group 2 (grouped and depthwise convolutions stay plain)"}}
	if diff := cmp.Diff(want, r.Skipped, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("skipped differ (-want +got):\n%s", diff)
	}
	m2 := build(t, "vgg-mini", nil)
	c2 := m2.Graph().GetNode()[2]
	w2, _ := m2.Initializer(c2.GetInput()[1])
	w2.Dims[1] = 8
	w2.RawData = w2.RawData[:len(w2.RawData)/2]
	setGroup(c2, 2)
	_, err = rewrite.Run(m2, rewrite.Options{Config: dcnet.DefaultConfig(), Layers: "1"}, nil)
	if err == nil || !strings.Contains(err.Error(), "group 2") {
		t.Errorf("error = %v, want the grouped layer refused", err)
	}
}

// setGroup sets the group attribute of n.
func setGroup(n *onnxpb.NodeProto, g int64) {
	for _, a := range n.GetAttribute() {
		if a.GetName() == "group" {
			a.I = proto.Int64(g)
			return
		}
	}
	n.Attribute = append(n.Attribute, groupAttr(g))
}

func groupAttr(g int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String("group"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(g)}
}
