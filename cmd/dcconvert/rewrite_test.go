package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// TestRewriteFlags checks how command lines become rewriteOptions.
func TestRewriteFlags(t *testing.T) {
	def := dcnet.DefaultConfig()
	with := func(change func(*dcnet.Config)) dcnet.Config {
		c := def
		change(&c)
		return c
	}
	tests := []struct {
		name    string
		args    []string
		want    rewrite.Options
		json    bool
		wantErr string // a usage error containing this, when not empty
	}{
		{name: "defaults", args: []string{"m.onnx", "-o", "o.onnx"}, want: rewrite.Options{Config: def}},
		{name: "ball learns its radius by default", args: []string{"m.onnx", "-o", "o", "--mag", "ball"},
			want: rewrite.Options{Config: with(func(c *dcnet.Config) { c.Magnitude = dcnet.MagBall; c.LearnRho = true })}},
		{name: "fixed radius", args: []string{"m.onnx", "-o", "o", "--mag", "seg", "--rho", "2.5", "--beta", "0.25"},
			want: rewrite.Options{Config: with(func(c *dcnet.Config) { c.Magnitude = dcnet.MagSeg; c.Rho = 2.5; c.Beta = 0.25 })}},
		{name: "every operator flag", args: []string{"m.onnx", "-o", "o", "--mag", "tanh", "--rho", "learn", "--ang", "sigmoid", "--k", "0.5",
			"--weighted", "log", "--alpha", "2", "--eps", "1e-3", "--layers", "features.*,!0", "--inline", "--json"},
			json: true,
			want: rewrite.Options{Layers: "features.*,!0", Inline: true, Config: with(func(c *dcnet.Config) {
				c.Magnitude, c.LearnRho, c.Angular, c.K, c.Weighted, c.Alpha, c.Eps = dcnet.MagTanh, true, dcnet.AngSigmoid, 0.5, dcnet.WeightLog, 2, 1e-3
			})}},
		{name: "missing output", args: []string{"m.onnx"}, wantErr: "missing required flag -o/--output"},
		{name: "missing model", args: []string{"-o", "o"}, wantErr: "missing argument MODEL"},
		{name: "unknown magnitude", args: []string{"m.onnx", "-o", "o", "--mag", "bal"}, wantErr: "--mag"},
		{name: "unknown angular", args: []string{"m.onnx", "-o", "o", "--ang", "sin"}, wantErr: "--ang"},
		{name: "unknown weighting", args: []string{"m.onnx", "-o", "o", "--weighted", "sqrt"}, wantErr: "--weighted"},
		{name: "negative radius", args: []string{"m.onnx", "-o", "o", "--mag", "ball", "--rho", "-1"}, wantErr: "--rho"},
		{name: "zero k", args: []string{"m.onnx", "-o", "o", "--ang", "sigmoid", "--k", "0"}, wantErr: "--k"},
		{name: "zero eps", args: []string{"m.onnx", "-o", "o", "--eps", "0"}, wantErr: "--eps"},
		{name: "zero alpha", args: []string{"m.onnx", "-o", "o", "--alpha", "0"}, wantErr: "--alpha"},
		{name: "negative beta", args: []string{"m.onnx", "-o", "o", "--mag", "mix", "--beta", "-0.5"}, wantErr: "--beta"},
		{name: "alpha not a number", args: []string{"m.onnx", "-o", "o", "--alpha", "big"}, wantErr: `--alpha "big": want a number > 0 or auto`},
		{name: "radius unused", args: []string{"m.onnx", "-o", "o", "--mag", "linear", "--rho", "2"}, wantErr: "--rho: magnitude linear has no radius"},
		{name: "beta unused", args: []string{"m.onnx", "-o", "o", "--mag", "ball", "--beta", "1"}, wantErr: "--beta: magnitude ball does not use beta"},
		{name: "k unused", args: []string{"m.onnx", "-o", "o", "--k", "1"}, wantErr: "--k: angular activation cos does not use k"},
		{name: "alpha auto without data", args: []string{"m.onnx", "-o", "o", "--alpha", "auto"}, wantErr: "give --calib DATA"},
		{name: "rho auto without data", args: []string{"m.onnx", "-o", "o", "--mag", "ball", "--rho", "auto"}, wantErr: "give --calib DATA"},
		{name: "calib with nothing to calibrate", args: []string{"m.onnx", "-o", "o", "--calib", "data/"}, wantErr: "--calib: nothing to calibrate"},
		{name: "calib batches alone", args: []string{"m.onnx", "-o", "o", "--mag", "ball", "--calib-batches", "2"}, wantErr: "--calib-batches: give --calib DATA too"},
		{name: "zero calib batches", args: []string{"m.onnx", "-o", "o", "--mag", "ball", "--calib", "d", "--calib-batches", "0"}, wantErr: "--calib-batches 0"},
		{name: "calibrated", args: []string{"m.onnx", "-o", "o", "--mag", "ball", "--rho", "auto", "--alpha", "auto", "--calib", "synthetic"},
			want: rewrite.Options{RhoAuto: true, AlphaAuto: true, Config: with(func(c *dcnet.Config) { c.Magnitude = dcnet.MagBall; c.Rho = 1 })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *rewriteOptions
			_, err := parseArgs(append([]string{"rewrite"}, tt.args...), func(r *rootOptions) *cobra.Command {
				return newRewriteCmd(r, func(o *rewriteOptions) error { got = o; return nil })
			})
			if checkParse(t, err, tt.wantErr) {
				return
			}
			if diff := cmp.Diff(tt.want, got.Rewrite); diff != "" {
				t.Errorf("options differ (-want +got):\n%s", diff)
			}
			if got.JSON != tt.json {
				t.Errorf("JSON = %v, want %v", got.JSON, tt.json)
			}
		})
	}
}

// writeVGGMini writes a vgg-mini model into dir.
func writeVGGMini(t *testing.T, dir string) string {
	t.Helper()
	cfg, _ := models.DefaultConfig("vgg-mini")
	p, err := models.Build("vgg-mini", cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "vgg-mini.onnx")
	if err := (&onnximport.Model{Proto: p}).WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRewriteCommand(t *testing.T) {
	dir := t.TempDir()
	src := writeVGGMini(t, dir)
	out := filepath.Join(dir, "dc.onnx")
	code, stdout, stderr := runCLI("rewrite", src, "--mag", "ball", "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("wrote to standard output without --json: %q", stdout)
	}
	for _, want := range []string{"/features/features.0/Conv", "[16,1,3,3]", "ball(rho=learn) x cos",
		"note: 4 layers have a learnable radius", "4 of 4 convolution layers decoupled (function form, opset 13)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("standard error lacks %q:\n%s", want, stderr)
		}
	}
	m, err := onnximport.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, node := range m.Graph().GetNode() {
		if onnximport.IsDecoupledConv(node) {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d decoupled nodes, want 4", n)
	}

	// inspect shows the decoupled layers and their calibration state.
	code, stdout, stderr = runCLI("inspect", out)
	if code != 0 {
		t.Fatalf("inspect exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "decoupled: ball(rho=learn) x cos, uncalibrated") || !strings.Contains(stdout, "0 rewritable, 4 decoupled") {
		t.Errorf("inspect output lacks the decoupled layers:\n%s", stdout)
	}

	// --json for scripts, nothing on standard error with -q.
	code, stdout, stderr = runCLI("rewrite", "-q", src, "--mag", "tanh", "--rho", "1.5", "--layers", "0,-1", "--json", "-o", out)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var r rewrite.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("--json output is not a report: %v\n%s", err, stdout)
	}
	if len(r.Layers) != 2 || r.Layers[0].Index != 0 || r.Layers[1].Index != 3 || r.Total != 4 {
		t.Errorf("report = %+v, want layers 0 and 3 of 4", r)
	}
}

// TestRewriteCalibrated rewrites with every calibration on synthetic data
// and checks what the model records.
func TestRewriteCalibrated(t *testing.T) {
	dir := t.TempDir()
	src := writeVGGMini(t, dir)
	out := filepath.Join(dir, "cal.onnx")
	code, _, stderr := runCLI("rewrite", src, "--mag", "tanh", "--ang", "sigmoid", "--alpha", "auto",
		"--calib", "synthetic", "--calib-batches", "2", "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stderr, "not calibrated") {
		t.Errorf("calibrated layers reported as uncalibrated:\n%s", stderr)
	}
	m, err := onnximport.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rewrite.Metadata(m.Proto, dcnet.MetaUncalibrated); ok {
		t.Errorf("metadata %s present after calibration", dcnet.MetaUncalibrated)
	}
	for _, n := range m.Graph().GetNode() {
		if !onnximport.IsDecoupledConv(n) {
			continue
		}
		scale, _ := m.Initializer(n.GetName() + ".rho_scale")
		_, ok := m.Initializer(n.GetName() + ".alpha")
		if scale == nil || !ok {
			t.Fatalf("layer %q lacks its calibrated RhoScale or Alpha", n.GetName())
		}
		s, _ := m.Tensor(scale)
		if s.Float[0] == 1 || !(s.Float[0] > 0) {
			t.Errorf("layer %q: RhoScale %g, want a measured patch norm", n.GetName(), s.Float[0])
		}
	}
	code, stdout, stderr := runCLI("inspect", out)
	if code != 0 || strings.Contains(stdout, "uncalibrated") || !strings.Contains(stdout, "scaled") {
		t.Errorf("inspect (exit %d) does not show calibrated, scaled layers:\n%s%s", code, stdout, stderr)
	}
	// --rho auto fixes the radius in the configuration.
	code, _, stderr = runCLI("rewrite", "-q", src, "--mag", "ball", "--rho", "auto", "--calib", "synthetic", "--calib-batches", "1", "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	m, _ = onnximport.ReadFile(out)
	for _, n := range m.Graph().GetNode() {
		if onnximport.IsDecoupledConv(n) {
			if rho := onnximport.AttrFloat(n, "rho", 0); !(rho > 0) || rho == 1 {
				t.Errorf("layer %q: rho %g, want the measured mean patch norm", n.GetName(), rho)
			}
		}
	}
}

// TestRewriteBadInput: a clear error, the right exit code and no output
// file.
func TestRewriteBadInput(t *testing.T) {
	dir := t.TempDir()
	src := writeVGGMini(t, dir)
	noConv := filepath.Join(dir, "noconv.onnx")
	m, _ := onnximport.ReadFile(src)
	g := m.Graph()
	var nodes []*onnxpb.NodeProto
	for _, n := range g.GetNode() {
		if n.GetOpType() != onnximport.OpConv {
			nodes = append(nodes, n)
		}
	}
	// Drop the features: the classifier reads the input directly.
	g.Node = nodes[4:]
	g.Node[0].Input[0] = "input"
	if err := m.WriteFile(noConv); err != nil {
		t.Fatal(err)
	}
	intConv := filepath.Join(dir, "intconv.onnx")
	m, _ = onnximport.ReadFile(src)
	w, _ := m.Initializer(m.Graph().GetNode()[0].GetInput()[1])
	w.DataType = pointer(int32(onnxpb.TensorProto_INT32))
	if err := m.WriteFile(intConv); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing file", []string{filepath.Join(dir, "nope.onnx")}, 1, "nope.onnx: no such file or directory"},
		{"no conv", []string{noConv}, 1, "the model has no Conv to rewrite"},
		{"non-float conv named", []string{intConv, "--layers", "0"}, 1, `layer "/features/features.0/Conv" cannot be rewritten: weight "features.0.weight" is INT32 (only float32 convolutions are rewritten)`},
		{"contradictory flags", []string{src, "--mag", "sphere", "--rho", "1"}, 2, "--rho: magnitude sphere has no radius"},
		{"unknown layer", []string{src, "--layers", "conv9"}, 2, `--layers item "conv9" matches no convolution layer`},
		{"decoupled again", nil, 1, "already decoupled"},
	}
	dc := filepath.Join(dir, "dc.onnx")
	if code, _, stderr := runCLI("rewrite", "-q", src, "-o", dc); code != 0 {
		t.Fatal(stderr)
	}
	cases[len(cases)-1].args = []string{dc, "--layers", "/features/features.0/Conv"}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+strings.ReplaceAll(c.name, " ", "-")+".onnx")
			before := dirEntries(t, dir)
			code, _, stderr := runCLI(append(append([]string{"rewrite"}, c.args...), "-o", out)...)
			if code != c.code {
				t.Errorf("exit %d, want %d", code, c.code)
			}
			if !strings.HasPrefix(stderr, "dcconvert: ") || !strings.Contains(stderr, c.want) {
				t.Errorf("stderr %q does not contain %q", stderr, c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Error("an output file was written")
			}
			if diff := cmp.Diff(before, dirEntries(t, dir)); diff != "" {
				t.Errorf("directory changed (-before +after):\n%s", diff)
			}
		})
	}
}

func pointer[T any](v T) *T { return &v }
