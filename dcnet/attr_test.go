package dcnet

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// nodeOf builds the node a rewrite would write for c: actual input names
// prefixed with "conv1.", the Conv attributes and the configuration's.
func nodeOf(c Config, name string) *onnxpb.NodeProto {
	var inputs []string
	for _, in := range c.Inputs() {
		if in != "" {
			in = name + "." + in
		}
		inputs = append(inputs, in)
	}
	attrs := []*onnxpb.AttributeProto{
		intsAttr(AttrDilations, 1, 1), intAttr(AttrGroup, 1), intsAttr(AttrKernelShape, 3, 3),
		intsAttr(AttrPads, 1, 1, 1, 1), intsAttr(AttrStrides, 1, 1),
	}
	return &onnxpb.NodeProto{
		Name:      proto.String(name),
		Domain:    proto.String(Domain),
		OpType:    proto.String(c.OpType()),
		Input:     inputs,
		Output:    []string{name + ".out"},
		Attribute: append(attrs, c.Attributes()...),
	}
}

// normalized returns c as FromNode reads it back: rho is 0 when learnable
// or unused.
func normalized(c Config) Config {
	if c.LearnRho || !c.NeedsRho() {
		c.Rho = 0
	}
	return c
}

func TestAttributeRoundTrip(t *testing.T) {
	n := 0
	for _, base := range allConfigs(1.75) {
		for _, inputs := range []struct{ bias, scale bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
			c := base
			c.Bias, c.ChannelScale = inputs.bias, inputs.scale
			c.Beta, c.K, c.Eps = 0.125, 0.375, 1e-3
			if !c.NeedsRho() {
				c.Rho = 3 // unused: written as 0
			}
			node := nodeOf(c, "conv1")
			got, err := FromNode(node)
			if err != nil {
				t.Errorf("%s: %v", c.Key(), err)
				continue
			}
			if diff := cmp.Diff(normalized(c), got); diff != "" {
				t.Errorf("%s: FromNode(node) (-want +got):\n%s", c.Key(), diff)
			}
			if got.Key() != c.Key() || got.OpType() != node.GetOpType() {
				t.Errorf("%s: key after the round trip %q", c.Key(), got.Key())
			}
			if len(c.Attributes()) != len(ConfigAttributes()) {
				t.Errorf("%s: %d attributes, want all %d", c.Key(), len(c.Attributes()), len(ConfigAttributes()))
			}
			n++
		}
	}
	t.Logf("%d configurations read back", n)
}

func TestIsDecoupled(t *testing.T) {
	tests := []struct {
		domain, op string
		want       bool
	}{
		{Domain, "DecoupledConv_0123abcd", true},
		{Domain, "DecoupledConv", true},
		{Domain, "DecoupledConvV2", true},
		{"", "DecoupledConv_0123abcd", false},
		{"ai.onnx", "Conv", false},
		{Domain, "Conv", false},
	}
	for _, tt := range tests {
		n := &onnxpb.NodeProto{Domain: proto.String(tt.domain), OpType: proto.String(tt.op)}
		if got := IsDecoupled(n); got != tt.want {
			t.Errorf("IsDecoupled(%s.%s) = %v, want %v", tt.domain, tt.op, got, tt.want)
		}
	}
	if IsDecoupled(nil) {
		t.Error("IsDecoupled(nil) = true")
	}
}

func TestFromNodeErrors(t *testing.T) {
	ball := withConfig(func(c *Config) { c.Magnitude, c.Rho = MagBall, 2 })
	setAttr := func(name string, a *onnxpb.AttributeProto) func(*onnxpb.NodeProto) {
		return func(n *onnxpb.NodeProto) {
			for i, old := range n.Attribute {
				if old.GetName() == name {
					if a == nil {
						n.Attribute = append(n.Attribute[:i], n.Attribute[i+1:]...)
					} else {
						n.Attribute[i] = a
					}
					return
				}
			}
		}
	}
	tests := []struct {
		name   string
		c      Config
		change func(*onnxpb.NodeProto)
		want   []string // substrings of the error, in order
	}{
		{"not decoupled", ball, func(n *onnxpb.NodeProto) { n.Domain = proto.String("") },
			[]string{`node "conv1" (.DecoupledConv_`, "not a decoupled convolution (want domain ai.dcnet"}},
		{"missing attribute", ball, setAttr(AttrEps, nil), []string{`node "conv1" (ai.dcnet.DecoupledConv_`, "attribute eps is missing"}},
		{"attribute of the wrong type", ball, setAttr(AttrMagnitude, intAttr(AttrMagnitude, 1)),
			[]string{"attribute magnitude is INT, want STRING"}},
		{"float attribute of the wrong type", ball, setAttr(AttrAlpha, stringAttr(AttrAlpha, "1")),
			[]string{"attribute alpha is STRING, want FLOAT"}},
		{"unknown magnitude", ball, setAttr(AttrMagnitude, stringAttr(AttrMagnitude, "bal")),
			[]string{`attribute magnitude: "bal" is not a magnitude function (want sphere, ball, tanh, linear, seg, log or mix)`}},
		{"unknown angular and weighting", ball, func(n *onnxpb.NodeProto) {
			setAttr(AttrAngular, stringAttr(AttrAngular, "tan"))(n)
			setAttr(AttrWeighted, stringAttr(AttrWeighted, "sq"))(n)
		}, []string{`attribute angular: "tan" is not an angular activation`, `attribute weighted: "sq" is not a weighting (want none, linear or log)`}},
		{"radius 0", ball, setAttr(AttrRho, floatAttr(AttrRho, 0)),
			[]string{"attribute rho: 0 is not a valid radius (want a number greater than 0)"}},
		{"eps negative", ball, setAttr(AttrEps, floatAttr(AttrEps, -1)),
			[]string{"attribute eps: -1 is not a valid epsilon (want a number greater than 0)"}},
		{"RhoV without RhoScale", withConfig(func(c *Config) { c.Magnitude, c.LearnRho = MagBall, true }),
			func(n *onnxpb.NodeProto) { n.Input = n.Input[:5] },
			[]string{"inputs RhoV and RhoScale must be given together"}},
		{"RhoScale without RhoV", withConfig(func(c *Config) { c.Magnitude, c.LearnRho = MagBall, true }),
			func(n *onnxpb.NodeProto) { n.Input[IndexRhoV] = "" },
			[]string{"inputs RhoV and RhoScale must be given together"}},
		{"learnable radius on linear", DefaultConfig(),
			func(n *onnxpb.NodeProto) { n.Input = []string{"x", "w", "", "", "v", "s"} },
			[]string{"inputs RhoV and RhoScale are given but magnitude linear has no radius (only ball, tanh and seg have one)"}},
		{"no filters", ball, func(n *onnxpb.NodeProto) { n.Input = []string{"x"} }, []string{"inputs X and W are required"}},
		{"too many inputs", ball, func(n *onnxpb.NodeProto) { n.Input = []string{"x", "w", "b", "a", "v", "s", "z"} },
			[]string{"7 inputs, want at most 6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := nodeOf(tt.c, "conv1")
			tt.change(n)
			_, err := FromNode(n)
			if err == nil {
				t.Fatal("FromNode succeeded, want an error")
			}
			msg := err.Error()
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q lacks %q (in order)", msg, w)
				}
				rest = rest[i+len(w):]
			}
			for _, line := range strings.Split(msg, "\n") {
				if !strings.HasPrefix(line, `node "conv1" (`) {
					t.Errorf("error line %q does not name the node", line)
				}
			}
		})
	}
	if _, err := FromNode(nil); err == nil {
		t.Error("FromNode(nil) succeeded")
	}
}
