package main

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
)

// foreignDir holds models exported by torch, shared by the packages' tests.
const foreignDir = "../../testdata/foreign"

// TestInspectFlags checks how command lines become inspectOptions.
func TestInspectFlags(t *testing.T) {
	type parsed struct {
		Model          string
		JSON           bool
		Verbose, Quiet bool
	}
	tests := []struct {
		name    string
		args    []string
		want    parsed
		wantErr string // a usage error containing this, when not empty
	}{
		{name: "model", args: []string{"inspect", "m.onnx"}, want: parsed{Model: "m.onnx"}},
		{name: "json", args: []string{"inspect", "--json", "m.onnx"}, want: parsed{Model: "m.onnx", JSON: true}},
		{name: "json after", args: []string{"inspect", "m.onnx", "--json"}, want: parsed{Model: "m.onnx", JSON: true}},
		{name: "verbose", args: []string{"-v", "inspect", "m.onnx"}, want: parsed{Model: "m.onnx", Verbose: true}},
		{name: "quiet after", args: []string{"inspect", "m.onnx", "--quiet"}, want: parsed{Model: "m.onnx", Quiet: true}},
		{name: "dash file", args: []string{"inspect", "--", "-m.onnx"}, want: parsed{Model: "-m.onnx"}},
		{name: "no model", args: []string{"inspect"}, wantErr: "missing argument MODEL"},
		{name: "two models", args: []string{"inspect", "a", "b"}, wantErr: `unexpected argument "b"`},
		{name: "json value", args: []string{"inspect", "--json=maybe", "m.onnx"}, wantErr: `invalid value "maybe" for --json: want true or false`},
		{name: "unknown flag", args: []string{"inspect", "-x", "m.onnx"}, wantErr: "unknown shorthand flag"},
		{name: "verbose and quiet", args: []string{"inspect", "-vq", "m.onnx"}, wantErr: "cannot be used together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *inspectOptions
			root, err := parseArgs(tt.args, func(r *rootOptions) *cobra.Command {
				return newInspectCmd(r, func(o *inspectOptions) error { got = o; return nil })
			})
			if checkParse(t, err, tt.wantErr) {
				return
			}
			p := parsed{Model: got.Model, JSON: got.JSON, Verbose: root.Verbose, Quiet: root.Quiet}
			if diff := cmp.Diff(tt.want, p); diff != "" {
				t.Errorf("options differ (-want +got):\n%s", diff)
			}
		})
	}
}

// writeModel writes p to dir/name and returns the path.
func writeModel(t *testing.T, dir, name string, p *onnxpb.ModelProto) string {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// buildModel builds a model of the models package, failing the test on
// error.
func buildModel(t *testing.T, name string, cfg models.Config) *onnxpb.ModelProto {
	t.Helper()
	p, err := models.Build(name, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunInspect calls runInspect with hand-built options.
func TestRunInspect(t *testing.T) {
	dir := t.TempDir()
	mini := writeModel(t, dir, "mini.onnx", buildModel(t, "vgg-mini", models.Config{}))
	tests := []struct {
		name    string
		opts    inspectOptions
		want    []string // strings the output must contain
		stderr  string   // what standard error must start with
		wantErr string
	}{
		{name: "text", opts: inspectOptions{Model: mini}, want: []string{"parameters:    117,434", "convolutions:  4, 4 rewritable"}},
		{name: "json", opts: inspectOptions{Model: mini, JSON: true}, want: []string{`"parameters": 117434`, `"rewritable": 4`}},
		{name: "quiet changes nothing", opts: inspectOptions{Model: mini, rootOptions: &rootOptions{Quiet: true}}, want: []string{"117,434"}},
		{name: "verbose times", opts: inspectOptions{Model: mini, rootOptions: &rootOptions{Verbose: true}}, want: []string{"117,434"}, stderr: "read and checked " + mini + " in "},
		{name: "missing", opts: inspectOptions{Model: filepath.Join(dir, "none.onnx")}, wantErr: "reading " + filepath.Join(dir, "none.onnx") + ": no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			streams, out, errOut := testIO()
			opts := tt.opts
			if opts.rootOptions == nil {
				opts.rootOptions = &rootOptions{}
			}
			opts.IO = streams
			err := runInspect(&opts)
			if tt.wantErr != "" {
				if err == nil || isUsageError(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want a failure containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if !strings.HasPrefix(errOut.String(), tt.stderr) || (tt.stderr == "" && errOut.Len() != 0) {
				t.Errorf("stderr = %q, want %q", errOut, tt.stderr)
			}
		})
	}
}

// TestInspectGolden compares the text and JSON reports of built models, a
// hand-made model with unusual convolutions, and the torch exports under
// testdata/foreign with golden files.
func TestInspectGolden(t *testing.T) {
	type goldenCase struct {
		name  string
		path  string                    // a fixture, or
		model func() *onnxpb.ModelProto // a model to write to a temporary directory
	}
	cases := []goldenCase{
		{name: "vgg-mini", model: func() *onnxpb.ModelProto { return buildModel(t, "vgg-mini", models.Config{}) }},
		{name: "vgg-mini-bn-opset7", model: func() *onnxpb.ModelProto {
			return buildModel(t, "vgg-mini", models.Config{BN: true, Opset: 7})
		}},
		{name: "resnet18-cifar", model: func() *onnxpb.ModelProto {
			return buildModel(t, "resnet18", models.Config{Input: [3]int64{3, 32, 32}, Classes: 10})
		}},
		{name: "unusual", model: unusualModel},
	}
	fixtures, _ := filepath.Glob(filepath.Join(foreignDir, "*", "model.onnx"))
	if len(fixtures) == 0 {
		t.Logf("no torch exports under %s: only built models are checked", foreignDir)
	}
	for _, f := range fixtures {
		cases = append(cases, goldenCase{name: "foreign-" + filepath.Base(filepath.Dir(f)), path: f})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path, dir := tc.path, ""
			if tc.model != nil {
				dir = t.TempDir()
				path = writeModel(t, dir, tc.name+".onnx", tc.model())
			}
			for _, asJSON := range []bool{false, true} {
				args := []string{"inspect", path}
				ext := ".txt"
				if asJSON {
					args = append(args, "--json")
					ext = ".json"
				}
				code, stdout, stderr := runCLI(args...)
				if code != exitOK {
					t.Fatalf("dcconvert %s: exit code %d: %s", strings.Join(args, " "), code, stderr)
				}
				if stderr != "" {
					t.Errorf("stderr = %q, want nothing", stderr)
				}
				if asJSON {
					var r InspectReport
					if err := json.Unmarshal([]byte(stdout), &r); err != nil {
						t.Fatalf("--json output does not decode: %v", err)
					}
				}
				if dir != "" {
					// The temporary directory differs from run to run.
					stdout = strings.ReplaceAll(stdout, dir+string(filepath.Separator), "")
				}
				compareGolden(t, "inspect/"+tc.name+ext, stdout)
			}
		})
	}
}

// unusualModel builds a small model whose convolutions cover what inspect
// tells apart: a grouped one, SAME_UPPER padding that resolves to
// asymmetric pads, a weight computed by a node, a weight fed as a graph
// input, one behind an operator shape inference does not support, a 3-D
// one and one of another domain. One output is declared with a shape that
// contradicts the inferred one.
func unusualModel() *onnxpb.ModelProto {
	tensor := func(name string, dims ...int64) *onnxpb.TensorProto {
		n := int64(1)
		for _, d := range dims {
			n *= d
		}
		return &onnxpb.TensorProto{
			Name:     proto.String(name),
			Dims:     dims,
			DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			RawData:  make([]byte, 4*n),
		}
	}
	// value declares a FLOAT tensor; without dims, its shape is not declared.
	value := func(name string, dims ...any) *onnxpb.ValueInfoProto {
		var sh []*onnxpb.TensorShapeProto_Dimension
		for _, d := range dims {
			switch d := d.(type) {
			case int:
				sh = append(sh, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}})
			case string:
				sh = append(sh, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}})
			}
		}
		tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT))}
		if len(dims) > 0 {
			tt.Shape = &onnxpb.TensorShapeProto{Dim: sh}
		}
		return &onnxpb.ValueInfoProto{
			Name: proto.String(name),
			Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tt}},
		}
	}
	ints := func(name string, v ...int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
	}
	str := func(name, v string) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
	}
	integer := func(name string, v int64) *onnxpb.AttributeProto {
		return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
	}
	node := func(name, op string, in, out []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{Name: proto.String(name), OpType: proto.String(op), Input: in, Output: out, Attribute: attrs}
	}
	custom := node("custom", onnximport.OpConv, []string{"x", "w_same"}, []string{"y_custom"})
	custom.Domain = proto.String("com.example")
	unnamed := node("", onnximport.OpConv, []string{"x", "w_plain", "b_plain"}, []string{"y_unnamed"}, ints("pads", 0, 0, 0, 0), ints("strides", 2, 2))
	return &onnxpb.ModelProto{
		IrVersion:       proto.Int64(8),
		ProducerName:    proto.String("hand"),
		ProducerVersion: proto.String("1"),
		OpsetImport: []*onnxpb.OperatorSetIdProto{
			{Domain: proto.String(""), Version: proto.Int64(17)},
			{Domain: proto.String("com.example"), Version: proto.Int64(1)},
		},
		Graph: &onnxpb.GraphProto{
			Name: proto.String("unusual"),
			Node: []*onnxpb.NodeProto{
				node("grouped", onnximport.OpConv, []string{"x", "w_grouped"}, []string{"y_grouped"}, integer("group", 2), ints("pads", 1, 1, 1, 1)),
				node("depthwise", onnximport.OpConv, []string{"x", "w_depthwise"}, []string{"y_depthwise"}, integer("group", 4), ints("kernel_shape", 3, 3), ints("pads", 1, 1, 1, 1)),
				node("same", onnximport.OpConv, []string{"x", "w_same"}, []string{"y_same"}, str("auto_pad", "SAME_UPPER"), ints("strides", 2, 2)),
				node("copy", onnximport.OpIdentity, []string{"w_same"}, []string{"w_copy"}),
				node("computed", onnximport.OpConv, []string{"x", "w_copy"}, []string{"y_computed"}, ints("dilations", 2, 2)),
				node("fed", onnximport.OpConv, []string{"x", "w_input"}, []string{"y_fed"}),
				node("erf", "Erf", []string{"x"}, []string{"e"}),
				node("after_erf", onnximport.OpConv, []string{"e", "w_plain", "b_plain"}, []string{"y_after_erf"}, ints("pads", 1, 1, 1, 1)),
				node("conv3d", onnximport.OpConv, []string{"v", "w_3d"}, []string{"y_3d"}, ints("pads", 1, 1, 1, 1, 1, 1)),
				custom,
				unnamed,
			},
			Initializer: []*onnxpb.TensorProto{
				tensor("w_grouped", 8, 2, 3, 3),
				tensor("w_depthwise", 4, 1, 3, 3),
				tensor("w_same", 4, 4, 2, 2),
				tensor("w_plain", 6, 4, 3, 3),
				tensor("b_plain", 6),
				tensor("w_3d", 2, 2, 3, 3, 3),
				{Name: proto.String("steps"), Dims: []int64{1}, DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: []int64{3}},
			},
			Input: []*onnxpb.ValueInfoProto{
				value("x", "N", 4, 9, 9),
				value("v", "N", 2, 4, 4, 4),
				value("w_input", 4, 4, 1, 1),
			},
			Output: []*onnxpb.ValueInfoProto{
				value("y_grouped", "N", 8, 9, 9),
				value("y_depthwise"),
				value("y_same", "N", 4, 4, 4),
				value("y_computed"),
				value("y_fed"),
				value("y_after_erf", "N", 6, 9, 9),
				value("y_3d"),
				value("y_custom"),
				value("y_unnamed"),
			},
		},
	}
}

// TestInspectBadInput feeds files that are not models through the command
// line: each must fail with exit code 1 and one line naming the file.
func TestInspectBadInput(t *testing.T) {
	dir := t.TempDir()
	good, err := proto.Marshal(buildModel(t, "vgg-mini", models.Config{}))
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	files := map[string][]byte{
		"truncated.onnx": good[:len(good)/2],
		"random.onnx":    random,
		"empty.onnx":     {},
		"text.onnx":      []byte("this is not a model\n"),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		path   string
		reason string // regexp for what follows "reading PATH: "
	}{
		{"truncated", "truncated.onnx", `^not an ONNX model: .+`},
		{"random bytes", "random.onnx", `^not an ONNX model: .+`},
		{"empty", "empty.onnx", `^file is empty$`},
		{"text", "text.onnx", `^not an ONNX model: .+`},
		{"missing", "missing.onnx", `^no such file or directory$`},
		{"directory", ".", `^is a directory$`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.path)
			for _, args := range [][]string{{"inspect", path}, {"inspect", "--json", path}} {
				code, stdout, stderr := runCLI(args...)
				if code != exitFailure {
					t.Errorf("exit code %d, want %d", code, exitFailure)
				}
				if stdout != "" {
					t.Errorf("stdout = %q, want nothing", stdout)
				}
				prefix := "dcconvert: reading " + path + ": "
				line, ok := strings.CutPrefix(stderr, prefix)
				if !ok || strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
					t.Fatalf("stderr = %q, want one line starting %q", stderr, prefix)
				}
				if !regexp.MustCompile(tt.reason).MatchString(strings.TrimSuffix(line, "\n")) {
					t.Errorf("reason %q does not match %q", line, tt.reason)
				}
			}
		})
	}
}
