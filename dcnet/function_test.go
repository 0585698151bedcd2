package dcnet

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// opVersions lists, for each operator a body may use, the default-domain
// opsets at which its definition changed (from the ONNX operator
// changelog). The version an opset binds is the largest one not above it.
var opVersions = map[string][]int64{
	opAbs:             {1, 6, 13},
	opAcos:            {7},
	opAdd:             {1, 6, 7, 13, 14},
	opClip:            {1, 6, 11, 12, 13},
	opConstant:        {1, 9, 11, 12, 13},
	opConv:            {1, 11},
	opDiv:             {1, 6, 7, 13, 14},
	opIdentity:        {1, 13, 14, 16},
	opLog:             {1, 6, 13},
	opMul:             {1, 6, 7, 13, 14},
	opReduceMean:      {1, 11, 13, 18},
	opReduceSumSquare: {1, 11, 13, 18},
	opRelu:            {1, 6, 13, 14},
	opSqrt:            {1, 6, 13},
	opSub:             {1, 6, 7, 13, 14},
	opTanh:            {1, 6, 13},
	opTranspose:       {1, 13},
	opUnsqueeze:       {1, 11, 13},
}

// boundVersion returns the version of op that opset binds, or 0 when op
// does not exist at opset or is not in opVersions.
func boundVersion(op string, opset int64) int64 {
	var v int64
	for _, since := range opVersions[op] {
		if since <= opset {
			v = since
		}
	}
	return v
}

// attrNames returns the names of a node's attributes.
func attrNames(n *onnxpb.NodeProto) []string {
	var out []string
	for _, a := range n.GetAttribute() {
		out = append(out, a.GetName())
	}
	slices.Sort(out)
	return out
}

// checkBody returns every problem of fn as the body of c at opset: the
// signature, operators that do not exist at the opset or are used in the
// form of another opset, values read before they are defined, attribute
// references.
func checkBody(c Config, fn *onnxpb.FunctionProto, opset int64) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if fn.GetName() != c.OpType() || fn.GetDomain() != Domain {
		fail("function %s.%s, want %s.%s", fn.GetDomain(), fn.GetName(), Domain, c.OpType())
	}
	if !slices.Equal(fn.GetInput(), c.FormalInputs()) || !slices.Equal(fn.GetOutput(), []string{OutputY}) {
		fail("signature %v -> %v, want %v -> [Y]", fn.GetInput(), fn.GetOutput(), c.FormalInputs())
	}
	if len(fn.GetInput()) != len(c.Inputs()) || slices.Contains(fn.GetInput(), "") {
		fail("formal inputs %v: want a non-empty name for each of the node's inputs %q", fn.GetInput(), c.Inputs())
	}
	wantAttrs := []string{"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides",
		"magnitude", "angular", "weighted", "alpha", "beta", "k", "rho", "eps"}
	if !slices.Equal(fn.GetAttribute(), wantAttrs) {
		fail("attributes %v, want %v", fn.GetAttribute(), wantAttrs)
	}
	if len(fn.GetOpsetImport()) != 1 || fn.GetOpsetImport()[0].GetDomain() != "" || fn.GetOpsetImport()[0].GetVersion() != opset {
		fail("opset imports %v, want the default domain at %d alone", fn.GetOpsetImport(), opset)
	}

	// Only the inputs the node passes may be read: an absent input has a
	// formal name but no value.
	defined := map[string]bool{}
	for _, in := range c.Inputs() {
		if in != "" {
			defined[in] = true
		}
	}
	used := map[string]bool{}
	names := map[string]bool{}
	refTypes := map[string]onnxpb.AttributeProto_AttributeType{
		AttrAutoPad: onnxpb.AttributeProto_STRING, AttrDilations: onnxpb.AttributeProto_INTS,
		AttrKernelShape: onnxpb.AttributeProto_INTS, AttrPads: onnxpb.AttributeProto_INTS, AttrStrides: onnxpb.AttributeProto_INTS,
	}
	for i, n := range fn.GetNode() {
		op := n.GetOpType()
		label := fmt.Sprintf("node %d %q (%s)", i, n.GetName(), op)
		if n.GetDomain() != "" {
			fail("%s: domain %q, want the default", label, n.GetDomain())
		}
		if n.GetName() == "" || names[n.GetName()] {
			fail("%s: name empty or repeated", label)
		}
		names[n.GetName()] = true
		v := boundVersion(op, opset)
		if v == 0 {
			fail("%s: operator does not exist at opset %d (or is not in the table)", label, opset)
			continue
		}
		for _, in := range n.GetInput() {
			if in == "" {
				continue
			}
			if !defined[in] {
				fail("%s: input %q is not defined before it is read", label, in)
			}
			used[in] = true
		}
		for _, out := range n.GetOutput() {
			if defined[out] {
				fail("%s: output %q is defined twice", label, out)
			}
			defined[out] = true
		}
		attrs := attrNames(n)
		for _, a := range n.GetAttribute() {
			if ref := a.GetRefAttrName(); ref != "" {
				if !slices.Contains(fn.GetAttribute(), ref) {
					fail("%s: attribute %s refers to %s, which the function does not declare", label, a.GetName(), ref)
				}
				if want, ok := refTypes[ref]; !ok || a.GetType() != want || a.GetName() != ref {
					fail("%s: attribute %s refers to %s as %v", label, a.GetName(), ref, a.GetType())
				}
			}
		}
		switch op {
		case opClip:
			if v < 11 && (len(n.GetInput()) != 1 || !slices.Equal(attrs, []string{"max", "min"})) {
				fail("%s: Clip-%d takes min and max as attributes, got inputs %v and attributes %v", label, v, n.GetInput(), attrs)
			}
			if v >= 11 && (len(n.GetInput()) != 3 || len(attrs) != 0) {
				fail("%s: Clip-%d takes min and max as inputs, got inputs %v and attributes %v", label, v, n.GetInput(), attrs)
			}
		case opUnsqueeze:
			if v < 13 && (len(n.GetInput()) != 1 || !slices.Equal(attrs, []string{"axes"})) {
				fail("%s: Unsqueeze-%d takes axes as an attribute, got inputs %v and attributes %v", label, v, n.GetInput(), attrs)
			}
			if v >= 13 && (len(n.GetInput()) != 2 || len(attrs) != 0) {
				fail("%s: Unsqueeze-%d takes axes as an input, got inputs %v and attributes %v", label, v, n.GetInput(), attrs)
			}
		case opReduceMean, opReduceSumSquare:
			if v >= 18 || !slices.Contains(attrs, "axes") || len(n.GetInput()) != 1 {
				fail("%s: %s-%d takes axes as an attribute, got inputs %v and attributes %v", label, op, v, n.GetInput(), attrs)
			}
		case opConstant:
			t := n.GetAttribute()[0].GetT()
			if !slices.Equal(attrs, []string{"value"}) || t == nil {
				fail("%s: Constant must carry a value tensor, got %v", label, attrs)
			} else if v < 9 && onnxpb.TensorProto_DataType(t.GetDataType()) != onnxpb.TensorProto_FLOAT {
				fail("%s: Constant-%d holds only float tensors, got %v", label, v, onnxpb.TensorProto_DataType(t.GetDataType()))
			}
		case opConv:
			if len(n.GetInput()) != 2 || slices.Contains(attrs, AttrGroup) {
				fail("%s: Conv must have no bias and group 1, got inputs %v and attributes %v", label, n.GetInput(), attrs)
			}
		}
	}
	if !defined[OutputY] {
		fail("output Y is never computed")
	}
	for _, in := range c.Inputs() {
		if in != "" && !used[in] {
			fail("formal input %s is never read", in)
		}
	}
	return errs
}

func TestFunctionBodies(t *testing.T) {
	n := 0
	for _, base := range allConfigs(2) {
		for _, bias := range []bool{false, true} {
			c := base
			c.Bias = bias
			var shape []string // op types other than Constant, which must not depend on the opset
			for opset := int64(MinOpset); opset <= MaxOpset; opset++ {
				fn, err := Function(c, opset)
				if err != nil {
					t.Fatalf("%s at opset %d: %v", c.Key(), opset, err)
				}
				for _, e := range checkBody(c, fn, opset) {
					t.Errorf("%s at opset %d: %s", c.Key(), opset, e)
				}
				var ops []string
				for _, node := range fn.GetNode() {
					if node.GetOpType() != opConstant {
						ops = append(ops, node.GetName()+"="+node.GetOpType())
					}
				}
				if shape == nil {
					shape = ops
				} else if diff := cmp.Diff(shape, ops); diff != "" {
					t.Errorf("%s: the body at opset %d differs from opset %d beyond constants (-%d +%d):\n%s", c.Key(), opset, MinOpset, MinOpset, opset, diff)
				}
				n++
			}
		}
	}
	t.Logf("checked %d bodies (configurations x opsets %d-%d)", n, MinOpset, MaxOpset)
}

func TestFunctionUsesOnlyWhatItNeeds(t *testing.T) {
	ops := func(c Config) []string {
		fn, err := Function(c, 13)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, n := range fn.GetNode() {
			out = append(out, n.GetOpType())
		}
		return out
	}
	for _, c := range allConfigs(2) {
		got := ops(c)
		needsAcos := c.Angular == AngLinear || c.Angular == AngSigmoid
		if slices.Contains(got, opAcos) != needsAcos {
			t.Errorf("%s: Acos present = %v, want %v", c.Key(), !needsAcos, needsAcos)
		}
		if slices.Contains(got, opRelu) != c.NeedsRho() && c.Magnitude != MagTanh {
			t.Errorf("%s: Relu present = %v", c.Key(), slices.Contains(got, opRelu))
		}
		if slices.Contains(got, opTranspose) != (c.Weighted != WeightNone) {
			t.Errorf("%s: Transpose present = %v", c.Key(), slices.Contains(got, opTranspose))
		}
	}
}

func TestFunctionErrors(t *testing.T) {
	for _, opset := range []int64{0, 6, 18, 21} {
		_, err := Function(DefaultConfig(), opset)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("opset %d is not supported (opsets 7 to 17 are)", opset)) {
			t.Errorf("Function at opset %d: %v, want an unsupported-opset error", opset, err)
		}
	}
	_, err := Function(withConfig(func(c *Config) { c.Magnitude = MagBall }), 13)
	if err == nil || !strings.Contains(err.Error(), "--rho 0 is not a valid radius") {
		t.Errorf("Function of an invalid configuration: %v", err)
	}
}

// formatFunction writes a function's node list, one node a line, with the
// attributes that matter: references as @name, values otherwise.
func formatFunction(fn *onnxpb.FunctionProto) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s(%s) -> %s\n", fn.GetName(), strings.Join(fn.GetInput(), ", "), strings.Join(fn.GetOutput(), ", "))
	for _, n := range fn.GetNode() {
		fmt.Fprintf(&b, "  %s = %s(%s)", strings.Join(n.GetOutput(), ", "), n.GetOpType(), strings.Join(n.GetInput(), ", "))
		for _, a := range n.GetAttribute() {
			b.WriteString(" " + a.GetName() + "=")
			switch {
			case a.GetRefAttrName() != "":
				b.WriteString("@" + a.GetRefAttrName())
			case a.GetType() == onnxpb.AttributeProto_TENSOR:
				t := a.GetT()
				if onnxpb.TensorProto_DataType(t.GetDataType()) == onnxpb.TensorProto_INT64 {
					fmt.Fprintf(&b, "int64%v", t.GetInt64Data())
				} else {
					fmt.Fprintf(&b, "float(%.9g)", t.GetFloatData()[0])
				}
			case a.GetType() == onnxpb.AttributeProto_INTS:
				fmt.Fprint(&b, a.GetInts())
			case a.GetType() == onnxpb.AttributeProto_INT:
				fmt.Fprint(&b, a.GetI())
			case a.GetType() == onnxpb.AttributeProto_FLOAT:
				fmt.Fprintf(&b, "%.9g", a.GetF())
			default:
				fmt.Fprintf(&b, "%v", a.GetType())
			}
		}
		if n.GetName() != n.GetOutput()[0] {
			fmt.Fprintf(&b, " [node %s]", n.GetName())
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestFunctionGolden(t *testing.T) {
	configs := []Config{
		withConfig(func(c *Config) { c.Weighted, c.Bias = WeightLinear, true }), // the identity
		withConfig(func(c *Config) { c.Magnitude, c.Alpha = MagSphere, 1 }),
		withConfig(func(c *Config) {
			c.Magnitude, c.Angular, c.LearnRho, c.Bias, c.ChannelScale = MagBall, AngSigmoid, true, true, true
		}),
		withConfig(func(c *Config) {
			c.Magnitude, c.Angular, c.Weighted, c.Rho, c.Alpha = MagSeg, AngSqcos, WeightLog, 2.5, 2
		}),
		withConfig(func(c *Config) { c.Magnitude, c.Angular, c.Beta, c.Bias = MagMix, AngLinear, 0.25, true }),
		withConfig(func(c *Config) { c.Magnitude, c.Angular, c.Rho, c.ChannelScale = MagTanh, AngCos, 1.5, true }),
	}
	var b strings.Builder
	b.WriteString("# Function bodies; regenerate with go test ./dcnet -run TestFunctionGolden -update\n")
	for _, c := range configs {
		for _, opset := range []int64{7, 11, 13} {
			fn, err := Function(c, opset)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "\n## %s, opset %d\n# key %s\n", c.Summary(), opset, c.Key())
			b.WriteString(formatFunction(fn))
		}
	}
	path := filepath.Join("testdata", "function.golden")
	if *update {
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./dcnet -run TestFunctionGolden -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), b.String()); diff != "" {
		t.Errorf("function bodies differ from %s (-want +got):\n%s", path, diff)
	}
}
