package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
)

// defaultConfig returns the builder's defaults, failing the test on error.
func defaultConfig(t *testing.T, name string) models.Config {
	t.Helper()
	cfg, err := models.DefaultConfig(name)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestModelsFlags checks how command lines become modelsOptions.
func TestModelsFlags(t *testing.T) {
	vgg16 := defaultConfig(t, "vgg16")
	mini := defaultConfig(t, "vgg-mini")
	with := func(cfg models.Config, change func(*models.Config)) models.Config {
		change(&cfg)
		return cfg
	}
	type parsed struct {
		Name, Out string
		Config    models.Config
		Quiet     bool
	}
	tests := []struct {
		name    string
		args    []string
		want    parsed
		wantErr string // a usage error containing this, when not empty
	}{
		{name: "defaults", args: []string{"vgg16", "-o", "v.onnx"}, want: parsed{Name: "vgg16", Out: "v.onnx", Config: vgg16}},
		{name: "vgg-mini defaults", args: []string{"vgg-mini", "--output", "m.onnx"}, want: parsed{Name: "vgg-mini", Out: "m.onnx", Config: mini}},
		{name: "defaults are the builder's", args: []string{"vgg-mini", "-o", "m.onnx"}, want: parsed{Name: "vgg-mini", Out: "m.onnx",
			Config: models.Config{Input: [3]int64{1, 28, 28}, Classes: 10, Opset: 13, Seed: 1}}},
		{name: "every flag", args: []string{"vgg11", "-o", "c.onnx", "--input", "3x32x32", "--classes", "100", "--bn", "--opset", "9", "--seed", "7"},
			want: parsed{Name: "vgg11", Out: "c.onnx", Config: models.Config{Input: [3]int64{3, 32, 32}, Classes: 100, BN: true, Opset: 9, Seed: 7}}},
		{name: "input upper case", args: []string{"resnet18", "-o", "r.onnx", "--input=3X64X48"},
			want: parsed{Name: "resnet18", Out: "r.onnx", Config: with(vgg16, func(c *models.Config) { c.Input = [3]int64{3, 64, 48} })}},
		{name: "bn false", args: []string{"vgg13", "-o", "x", "--bn=false"}, want: parsed{Name: "vgg13", Out: "x", Config: vgg16}},
		{name: "opset bounds", args: []string{"vgg-mini", "-o", "x", "--opset", "17"}, want: parsed{Name: "vgg-mini", Out: "x", Config: with(mini, func(c *models.Config) { c.Opset = 17 })}},
		{name: "quiet", args: []string{"-q", "vgg-mini", "-o", "x"}, want: parsed{Name: "vgg-mini", Out: "x", Config: mini, Quiet: true}},
		{name: "no name", args: []string{"-o", "x"}, wantErr: "missing argument NAME"},
		{name: "two names", args: []string{"vgg11", "vgg13", "-o", "x"}, wantErr: `unexpected argument "vgg13"`},
		{name: "unknown name", args: []string{"vgg12", "-o", "x"}, wantErr: `unknown model "vgg12": choose one of vgg11, vgg13, vgg16, vgg19, vgg-mini, resnet18`},
		{name: "no output", args: []string{"vgg16"}, wantErr: "missing required flag -o/--output"},
		{name: "empty output", args: []string{"vgg16", "-o", ""}, wantErr: "missing required flag -o/--output"},
		{name: "input two dims", args: []string{"vgg16", "-o", "x", "--input", "224x224"}, wantErr: `invalid argument "224x224" for "--input" flag: want CxHxW`},
		{name: "input zero", args: []string{"vgg16", "-o", "x", "--input", "0x224x224"}, wantErr: "want CxHxW"},
		{name: "input words", args: []string{"vgg16", "-o", "x", "--input", "threexbyxfour"}, wantErr: "want CxHxW"},
		{name: "classes zero", args: []string{"vgg16", "-o", "x", "--classes", "0"}, wantErr: "--classes 0: must be at least 1"},
		{name: "classes word", args: []string{"vgg16", "-o", "x", "--classes", "many"}, wantErr: `invalid value "many" for --classes: not a whole number`},
		{name: "opset low", args: []string{"vgg16", "-o", "x", "--opset", "6"}, wantErr: "--opset 6: must be in 7..17"},
		{name: "opset high", args: []string{"vgg16", "-o", "x", "--opset", "18"}, wantErr: "--opset 18: must be in 7..17"},
		{name: "seed zero", args: []string{"vgg16", "-o", "x", "--seed", "0"}, wantErr: "--seed 0: must be at least 1"},
		{name: "seed negative", args: []string{"vgg16", "-o", "x", "--seed", "-1"}, wantErr: `invalid value "-1" for --seed`},
		{name: "seed huge", args: []string{"vgg16", "-o", "x", "--seed", "99999999999999999999"}, wantErr: "out of range"},
		{name: "problems together", args: []string{"vgg16", "-o", "x", "--classes", "0", "--opset", "3"}, wantErr: "--classes 0: must be at least 1\n--opset 3"},
		{name: "unknown flag", args: []string{"vgg16", "-o", "x", "--batch", "3"}, wantErr: "unknown flag: --batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *modelsOptions
			args := tt.args
			if len(args) > 0 && args[0] == "-q" {
				args = append([]string{"-q", "models"}, args[1:]...)
			} else {
				args = append([]string{"models"}, args...)
			}
			root, err := parseArgs(args, func(r *rootOptions) *cobra.Command {
				return newModelsCmd(r, func(o *modelsOptions) error { got = o; return nil })
			})
			if checkParse(t, err, tt.wantErr) {
				return
			}
			p := parsed{Name: got.Name, Out: got.Out, Config: got.Config, Quiet: root.Quiet}
			if diff := cmp.Diff(tt.want, p); diff != "" {
				t.Errorf("options differ (-want +got):\n%s", diff)
			}
		})
	}
}

// TestModelsHelp checks that the help text shows the defaults of
// models.DefaultConfig.
func TestModelsHelp(t *testing.T) {
	code, stdout, _ := runCLI("models", "--help")
	if code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	// Compare with runs of spaces collapsed: column widths are cobra's.
	help := strings.Join(strings.Fields(stdout), " ")
	for _, want := range []string{
		"--input CxHxW input shape without the batch dimension (default 3x224x224; vgg-mini 1x28x28)",
		"--classes int number of output classes (default 1000; vgg-mini 10)",
		"--opset int default-domain opset, 7 to 17 (default 13)",
		"--seed uint seed of the weight initialisation, at least 1 (default 1)",
		"-o, --output string",
		"vgg11, vgg13, vgg16, vgg19, vgg-mini, resnet18",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, stdout)
		}
	}
}

// TestRunModels calls runModels with hand-built options.
func TestRunModels(t *testing.T) {
	mini := defaultConfig(t, "vgg-mini")
	tests := []struct {
		name      string
		opts      modelsOptions
		out       string // the file to write, relative to a new directory
		stderr    string // regexp standard error must match
		params    int64  // the parameters inspect must count in the file
		wantErr   string // an error containing this, when not empty
		wantUsage bool   // whether that error is a usage error
	}{
		{name: "vgg-mini", opts: modelsOptions{Name: "vgg-mini", Config: mini}, out: "m.onnx",
			stderr: `^wrote \S+m.onnx: vgg-mini, 117,434 parameters, opset 13, 472.7 kB\n$`, params: 117434},
		{name: "zero config means defaults", opts: modelsOptions{Name: "vgg-mini"}, out: "m.onnx",
			stderr: `^wrote \S+: vgg-mini, 117,434 parameters, opset 13, `, params: 117434},
		{name: "bn opset 7", opts: modelsOptions{Name: "vgg-mini", Config: models.Config{Input: [3]int64{1, 28, 28}, Classes: 10, BN: true, Opset: 7, Seed: 1}}, out: "bn.onnx",
			stderr: `^wrote \S+: vgg-mini_bn, 117,818 parameters, opset 7, `, params: 117818},
		{name: "quiet", opts: modelsOptions{rootOptions: &rootOptions{Quiet: true}, Name: "vgg-mini", Config: mini}, out: "q.onnx", stderr: `^$`, params: 117434},
		{name: "verbose", opts: modelsOptions{rootOptions: &rootOptions{Verbose: true}, Name: "vgg-mini", Config: mini}, out: "v.onnx",
			stderr: `^built vgg-mini in .*\nwrote `, params: 117434},
		{name: "subdirectory", opts: modelsOptions{Name: "vgg-mini", Config: mini}, out: "missing/m.onnx",
			wantErr: "writing ", wantUsage: false},
		{name: "bad opset", opts: modelsOptions{Name: "vgg-mini", Config: models.Config{Opset: 99}}, out: "m.onnx",
			wantErr: "opset 99 is not supported", wantUsage: true},
		{name: "input too small", opts: modelsOptions{Name: "vgg16", Config: models.Config{Input: [3]int64{3, 8, 8}}}, out: "m.onnx",
			wantErr: "input 3x8x8", wantUsage: true},
		{name: "unknown builder", opts: modelsOptions{Name: "lenet"}, out: "m.onnx",
			wantErr: `unknown model "lenet"`, wantUsage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			streams, _, errOut := testIO()
			opts := tt.opts
			if opts.rootOptions == nil {
				opts.rootOptions = &rootOptions{}
			}
			opts.IO = streams
			opts.Out = filepath.Join(dir, tt.out)
			err := runModels(&opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || isUsageError(err) != tt.wantUsage {
					t.Fatalf("error = %v (usage error: %v), want one containing %q (usage error: %v)", err, isUsageError(err), tt.wantErr, tt.wantUsage)
				}
				if names := dirEntries(t, dir); len(names) != 0 {
					t.Errorf("failed run left %v in the output directory", names)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !regexp.MustCompile(tt.stderr).MatchString(errOut.String()) {
				t.Errorf("stderr %q does not match %q", errOut, tt.stderr)
			}
			m, err := onnximport.ReadFile(opts.Out)
			if err != nil {
				t.Fatal(err)
			}
			if got := floatParameters(m.Graph()); got != tt.params {
				t.Errorf("written model has %d parameters, want %d", got, tt.params)
			}
			if names := dirEntries(t, dir); len(names) != 1 {
				t.Errorf("output directory holds %v, want the model alone", names)
			}
		})
	}
}

// TestModelsNoOutputOnFailure runs failing models commands and checks that
// they leave no file behind and do not touch an existing one.
func TestModelsNoOutputOnFailure(t *testing.T) {
	tests := []struct {
		name string
		args []string // "OUT" is replaced by the output path
		out  string   // the output path, relative to a new directory
		code int
	}{
		{"bad opset", []string{"models", "vgg-mini", "--opset", "99", "-o", "OUT"}, "m.onnx", exitUsage},
		{"input too small", []string{"models", "vgg16", "--input", "3x8x8", "-o", "OUT"}, "m.onnx", exitUsage},
		{"missing directory", []string{"models", "vgg-mini", "-o", "OUT"}, "missing/m.onnx", exitFailure},
		{"output is a directory", []string{"models", "vgg-mini", "-o", "OUT"}, "existing", exitFailure},
		{"parent is a file", []string{"models", "vgg-mini", "-o", "OUT"}, "old.onnx/m.onnx", exitFailure},
		{"existing file kept", []string{"models", "vgg-mini", "--classes", "0", "-o", "OUT"}, "old.onnx", exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			old := []byte("old contents")
			if err := os.WriteFile(filepath.Join(dir, "old.onnx"), old, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(filepath.Join(dir, "existing"), 0o755); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, tt.out)
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "OUT", out)
			}
			code, _, stderr := runCLI(args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d: %s", code, tt.code, stderr)
			}
			if diff := cmp.Diff([]string{"existing", "old.onnx"}, dirEntries(t, dir)); diff != "" {
				t.Errorf("directory changed (-want +got):\n%s", diff)
			}
			if names := dirEntries(t, filepath.Join(dir, "existing")); len(names) != 0 {
				t.Errorf("directory %q holds %v, want nothing", "existing", names)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "old.onnx")); err != nil || !bytes.Equal(b, old) {
				t.Errorf("old.onnx holds %q (%v), want %q", b, err, old)
			}
		})
	}
}

// TestModelsDeterministic checks that the same flags write the same bytes
// and that another seed gives other weights.
func TestModelsDeterministic(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, args ...string) []byte {
		t.Helper()
		path := filepath.Join(dir, name)
		code, _, stderr := runCLI(append([]string{"models", "vgg-mini", "-q", "-o", path}, args...)...)
		if code != exitOK {
			t.Fatalf("exit code %d: %s", code, stderr)
		}
		if stderr != "" {
			t.Errorf("stderr = %q with -q, want nothing", stderr)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, c := write("a.onnx"), write("b.onnx", "--seed", "1"), write("c.onnx", "--seed", "2")
	if !bytes.Equal(a, b) {
		t.Error("the default seed and --seed 1 wrote different bytes")
	}
	if bytes.Equal(a, c) {
		t.Error("--seed 2 wrote the same bytes as --seed 1")
	}
}

// TestModelsVGG16 writes the full VGG16 and checks the summary against
// torchvision's parameter count.
func TestModelsVGG16(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 553 MB model; run without -short to include it")
	}
	out := filepath.Join(t.TempDir(), "vgg16.onnx")
	code, _, stderr := runCLI("models", "vgg16", "-o", out)
	if code != exitOK {
		t.Fatalf("exit code %d: %s", code, stderr)
	}
	want := "wrote " + out + ": vgg16, 138,357,544 parameters, opset 13, 553.4 MB\n"
	if stderr != want {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
	code, stdout, stderr := runCLI("inspect", "--json", out)
	if code != exitOK {
		t.Fatalf("inspect: exit code %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, `"parameters": 138357544`) || !strings.Contains(stdout, `"rewritable": 13`) {
		t.Errorf("inspect --json of vgg16 lacks the parameter or rewritable count")
	}
}
