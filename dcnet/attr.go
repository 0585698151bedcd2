package dcnet

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Names of the attributes a decoupled convolution node carries besides
// the source Conv's own.
const (
	AttrMagnitude = "magnitude"
	AttrAngular   = "angular"
	AttrWeighted  = "weighted"
	AttrAlpha     = "alpha"
	AttrBeta      = "beta"
	AttrK         = "k"
	AttrRho       = "rho"
	AttrEps       = "eps"
)

// Names of the Conv attributes a decoupled convolution keeps.
const (
	AttrAutoPad     = "auto_pad"
	AttrDilations   = "dilations"
	AttrGroup       = "group"
	AttrKernelShape = "kernel_shape"
	AttrPads        = "pads"
	AttrStrides     = "strides"
)

// ConvAttributes returns the names of the Conv attributes, in the order
// the function declares them.
func ConvAttributes() []string {
	return []string{AttrAutoPad, AttrDilations, AttrGroup, AttrKernelShape, AttrPads, AttrStrides}
}

// ConfigAttributes returns the names of the configuration attributes, in
// the order Attributes writes them.
func ConfigAttributes() []string {
	return []string{AttrMagnitude, AttrAngular, AttrWeighted, AttrAlpha, AttrBeta, AttrK, AttrRho, AttrEps}
}

// Attributes returns the configuration attributes a decoupled convolution
// node carries besides the source Conv's: magnitude, angular and weighted
// as STRING, alpha, beta, k, rho and eps as FLOAT. All eight are always
// written, used or not. rho is written as 0 when the radius is learnable
// (it lives in the inputs RhoV and RhoScale) or the magnitude has none;
// beta and k are written as they are even when unused.
func (c Config) Attributes() []*onnxpb.AttributeProto {
	rho := c.Rho
	if c.LearnRho || !c.NeedsRho() {
		rho = 0
	}
	return []*onnxpb.AttributeProto{
		stringAttr(AttrMagnitude, string(c.Magnitude)),
		stringAttr(AttrAngular, string(c.Angular)),
		stringAttr(AttrWeighted, string(c.Weighted)),
		floatAttr(AttrAlpha, c.Alpha),
		floatAttr(AttrBeta, c.Beta),
		floatAttr(AttrK, c.K),
		floatAttr(AttrRho, rho),
		floatAttr(AttrEps, c.Eps),
	}
}

// IsDecoupled reports whether n is a decoupled convolution: an op of
// Domain whose type starts with OpPrefix.
func IsDecoupled(n *onnxpb.NodeProto) bool {
	return onnximport.IsDecoupledConv(n)
}

// FromNode reads the configuration of a decoupled convolution node from
// its attributes (never from its op type) and the presence of its inputs:
// Bias when input 2 is a non-empty name, ChannelScale for input 3,
// LearnRho when inputs 4 and 5 (RhoV and RhoScale) are both given. The
// configuration is validated; every problem is reported, each naming the
// node.
func FromNode(n *onnxpb.NodeProto) (Config, error) {
	if n == nil {
		return Config{}, errors.New("reading a decoupled convolution: no node")
	}
	label := fmt.Sprintf("node %q (%s.%s)", n.GetName(), n.GetDomain(), n.GetOpType())
	if !IsDecoupled(n) {
		return Config{}, fmt.Errorf("%s: not a decoupled convolution (want domain %s and an op type starting with %s)", label, Domain, OpPrefix)
	}
	var errs []error
	fail := func(err error) { errs = append(errs, fmt.Errorf("%s: %w", label, err)) }

	attrs := map[string]*onnxpb.AttributeProto{}
	for _, a := range n.GetAttribute() {
		attrs[a.GetName()] = a
	}
	str := func(name string) string {
		a, ok := attrs[name]
		switch {
		case !ok:
			fail(fmt.Errorf("attribute %s is missing", name))
		case a.GetType() != onnxpb.AttributeProto_STRING:
			fail(fmt.Errorf("attribute %s is %v, want STRING", name, a.GetType()))
		default:
			return string(a.GetS())
		}
		return ""
	}
	flt := func(name string) float32 {
		a, ok := attrs[name]
		switch {
		case !ok:
			fail(fmt.Errorf("attribute %s is missing", name))
		case a.GetType() != onnxpb.AttributeProto_FLOAT:
			fail(fmt.Errorf("attribute %s is %v, want FLOAT", name, a.GetType()))
		default:
			return a.GetF()
		}
		return 0
	}
	c := Config{
		Magnitude: Magnitude(str(AttrMagnitude)),
		Angular:   Angular(str(AttrAngular)),
		Weighted:  Weighting(str(AttrWeighted)),
		Alpha:     flt(AttrAlpha),
		Beta:      flt(AttrBeta),
		K:         flt(AttrK),
		Rho:       flt(AttrRho),
		Eps:       flt(AttrEps),
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}

	in := n.GetInput()
	present := func(i int) bool { return i < len(in) && in[i] != "" }
	switch {
	case len(in) > IndexRhoScale+1:
		fail(fmt.Errorf("%d inputs, want at most %d (%s)", len(in), IndexRhoScale+1,
			strings.Join([]string{InputX, InputW, InputB, InputAlpha, InputRhoV, InputRhoScale}, ", ")))
	case !present(IndexX) || !present(IndexW):
		fail(fmt.Errorf("inputs %s and %s are required", InputX, InputW))
	}
	c.Bias = present(IndexB)
	c.ChannelScale = present(IndexAlpha)
	switch rv, rs := present(IndexRhoV), present(IndexRhoScale); {
	case rv != rs:
		fail(fmt.Errorf("inputs %s and %s must be given together", InputRhoV, InputRhoScale))
	case rv:
		c.LearnRho = true
		if c.Magnitude.Valid() && !c.NeedsRho() {
			fail(fmt.Errorf("inputs %s and %s are given but magnitude %s has no radius (only %s have one)",
				InputRhoV, InputRhoScale, c.Magnitude, joinOr(rhoMagnitudes(), "and")))
		}
	}
	for _, p := range c.problems() {
		fail(p.attrError())
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// stringAttr is a STRING attribute.
func stringAttr(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

// floatAttr is a FLOAT attribute.
func floatAttr(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

// intsAttr is an INTS attribute.
func intsAttr(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

// intAttr is an INT attribute.
func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// refAttr is an attribute of a function body node that takes the value of
// the calling node's attribute of the same name.
func refAttr(name string, typ onnxpb.AttributeProto_AttributeType) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: typ.Enum(), RefAttrName: proto.String(name)}
}
