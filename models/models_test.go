package models

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// marshal encodes m deterministically.
func marshal(t testing.TB, m *onnxpb.ModelProto) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatalf("marshalling %s: %v", m.GetGraph().GetName(), err)
	}
	return b
}

// writeModel writes m to dir/file and returns the path.
func writeModel(t testing.TB, dir, file string, m *onnxpb.ModelProto) string {
	t.Helper()
	path := filepath.Join(dir, file)
	if err := os.WriteFile(path, marshal(t, m), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustBuild(t testing.TB, name string, cfg Config) *onnxpb.ModelProto {
	t.Helper()
	m, err := Build(name, cfg)
	if err != nil {
		t.Fatalf("Build(%q, %+v): %v", name, cfg, err)
	}
	return m
}

// floats decodes a FLOAT initializer's raw_data.
func floats(t testing.TB, tp *onnxpb.TensorProto) []float32 {
	t.Helper()
	raw := tp.GetRawData()
	if tp.GetDataType() != int32(onnxpb.TensorProto_FLOAT) || len(raw)%4 != 0 {
		t.Fatalf("initializer %s: data type %d with %d raw bytes, want FLOAT raw_data", tp.GetName(), tp.GetDataType(), len(raw))
	}
	v := make([]float32, len(raw)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return v
}

func initializer(t testing.TB, m *onnxpb.ModelProto, name string) *onnxpb.TensorProto {
	t.Helper()
	for _, tp := range m.GetGraph().GetInitializer() {
		if tp.GetName() == name {
			return tp
		}
	}
	t.Fatalf("%s has no initializer %q", m.GetGraph().GetName(), name)
	return nil
}

// isRunningStat reports whether an initializer is a BatchNormalization
// running statistic: state, not a trainable parameter.
func isRunningStat(name string) bool {
	return strings.HasSuffix(name, ".running_mean") || strings.HasSuffix(name, ".running_var")
}

// countParams counts parameters as torch's parameters() does: every
// initializer's elements except BatchNormalization running statistics, which
// are counted separately.
func countParams(m *onnxpb.ModelProto) (params, running int64) {
	for _, tp := range m.GetGraph().GetInitializer() {
		n := int64(1)
		for _, d := range tp.GetDims() {
			n *= d
		}
		if isRunningStat(tp.GetName()) {
			running += n
		} else {
			params += n
		}
	}
	return params, running
}

func TestNames(t *testing.T) {
	want := []string{"vgg11", "vgg13", "vgg16", "vgg19", "vgg-mini", "resnet18"}
	if diff := cmp.Diff(want, Names()); diff != "" {
		t.Errorf("Names() mismatch (-want +got):\n%s", diff)
	}
	Names()[0] = "changed"
	if Names()[0] != "vgg11" {
		t.Error("Names() returns the package's own slice")
	}
}

func TestDefaultConfig(t *testing.T) {
	tests := []struct {
		name string
		want Config
	}{
		{"vgg11", Config{Input: [3]int64{3, 224, 224}, Classes: 1000, Opset: 13, Seed: 1}},
		{"vgg13", Config{Input: [3]int64{3, 224, 224}, Classes: 1000, Opset: 13, Seed: 1}},
		{"vgg16", Config{Input: [3]int64{3, 224, 224}, Classes: 1000, Opset: 13, Seed: 1}},
		{"vgg19", Config{Input: [3]int64{3, 224, 224}, Classes: 1000, Opset: 13, Seed: 1}},
		{"vgg-mini", Config{Input: [3]int64{1, 28, 28}, Classes: 10, Opset: 13, Seed: 1}},
		{"resnet18", Config{Input: [3]int64{3, 224, 224}, Classes: 1000, Opset: 13, Seed: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DefaultConfig(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("DefaultConfig(%q) mismatch (-want +got):\n%s", tt.name, diff)
			}
		})
	}
	if _, err := DefaultConfig("alexnet"); err == nil {
		t.Error(`DefaultConfig("alexnet") succeeded, want an error`)
	}
}

func TestIRVersion(t *testing.T) {
	want := map[int64]int64{6: 0, 7: 3, 8: 3, 9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 0}
	for opset, ir := range want {
		if got := IRVersion(opset); got != ir {
			t.Errorf("IRVersion(%d) = %d, want %d", opset, got, ir)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name   string
		model  string
		cfg    Config
		fields []string // ConfigError fields reported, in order
		want   []string // substrings of the message
	}{
		{"unknown name", "vgg15", Config{}, []string{"name"},
			[]string{`unknown model "vgg15"`, "vgg11, vgg13, vgg16, vgg19, vgg-mini, resnet18"}},
		{"empty name", "", Config{}, []string{"name"}, []string{`unknown model ""`}},
		{"opset too low", "vgg-mini", Config{Opset: 6}, []string{"opset"}, []string{"vgg-mini: opset 6", "7..17"}},
		{"opset too high", "resnet18", Config{Opset: 18}, []string{"opset"}, []string{"opset 18", "7..17"}},
		{"opset negative", "vgg11", Config{Opset: -13}, []string{"opset"}, []string{"opset -13"}},
		{"classes negative", "vgg-mini", Config{Classes: -1}, []string{"classes"}, []string{"classes -1", "at least 1"}},
		{"input zero channel", "vgg-mini", Config{Input: [3]int64{0, 28, 28}}, []string{"input"}, []string{"input 0x28x28", "positive"}},
		{"input negative width", "resnet18", Config{Input: [3]int64{3, 32, -32}}, []string{"input"}, []string{"input 3x32x-32", "positive"}},
		{"input dimension too large", "resnet18", Config{Input: [3]int64{3, 1 << 40, 32}}, []string{"input"}, []string{"input 3x1099511627776x32", "not supported"}},
		{"several problems", "vgg11", Config{Opset: 99, Classes: -5, Input: [3]int64{3, 0, 0}},
			[]string{"opset", "classes", "input"}, []string{"opset 99", "classes -5", "input 3x0x0"}},
		{"vgg too small", "vgg11", Config{Input: [3]int64{3, 16, 16}}, []string{"input"},
			[]string{"input 3x16x16 is too small", "0x0 at features.20 (MaxPool)"}},
		{"vgg too narrow", "vgg16", Config{Input: [3]int64{3, 224, 31}}, []string{"input"},
			[]string{"input 3x224x31 is too small", "7x0 at features.30 (MaxPool)"}},
		{"vgg-mini too small", "vgg-mini", Config{Input: [3]int64{1, 3, 3}}, []string{"input"},
			[]string{"input 1x3x3 is too small", "0x0 at features.9 (MaxPool)"}},
		{"vgg-mini bn too small", "vgg-mini", Config{Input: [3]int64{1, 1, 1}, BN: true}, []string{"input"},
			[]string{"input 1x1x1 is too small", "0x0 at features.6 (MaxPool)"}},
		{"vgg map not a multiple of 7", "vgg19", Config{Input: [3]int64{3, 256, 256}}, []string{"input"},
			[]string{"input 3x256x256 does not fit", "8x8", "multiple of 7x7"}},
		{"vgg map multiple of 7 in one direction only", "vgg11", Config{Input: [3]int64{3, 448, 300}}, []string{"input"},
			[]string{"input 3x448x300 does not fit", "14x9"}},
		{"classes beyond any file", "vgg11", Config{Classes: math.MaxInt64}, []string{"classes"},
			[]string{"vgg11: classes 9223372036854775807 is too large"}},
		{"classes over 2 GiB of weights", "resnet18", Config{Classes: 2_000_000}, []string{"classes"},
			[]string{"resnet18: classes 2000000 is too large", "3.86 GiB"}},
		{"input channels over 2 GiB of weights", "resnet18", Config{Input: [3]int64{1 << 20, 32, 32}}, []string{"input"},
			[]string{"resnet18: input 1048576x32x32 is too large"}},
		{"weights over 2 GiB", "vgg-mini", Config{Input: [3]int64{1, 8192, 8192}}, []string{"input"},
			[]string{"vgg-mini: input 1x8192x8192 is too large", "32 GiB"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Build(tt.model, tt.cfg)
			if err == nil {
				t.Fatalf("Build(%q, %+v) succeeded, want an error", tt.model, tt.cfg)
			}
			if m != nil {
				t.Error("Build returned a model along with its error")
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			for _, line := range strings.Split(msg, "\n") {
				if line == "" || line[0] < 'a' || line[0] > 'z' || strings.HasSuffix(line, ".") {
					t.Errorf("error line %q: want lowercase start and no trailing period", line)
				}
			}
			if diff := cmp.Diff(tt.fields, configFields(err)); diff != "" {
				t.Errorf("ConfigError fields mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// configFields lists the Field of every *ConfigError in err's tree.
func configFields(err error) []string {
	var fields []string
	var walk func(error)
	walk = func(err error) {
		if ce, ok := err.(*ConfigError); ok {
			fields = append(fields, ce.Field)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	return fields
}

func TestConfigErrorAs(t *testing.T) {
	_, err := Build("vgg11", Config{Classes: -1})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "classes" {
		t.Errorf("errors.As(%v) = %v, field %+v; want a classes ConfigError", err, ce != nil, ce)
	}
}

// The torchvision counts are torch's parameters(): weights and biases,
// including BatchNormalization's scale and bias, but not its running mean and
// variance (buffers in torch; initializers here, counted apart).
func TestParamCounts(t *testing.T) {
	cifar := [3]int64{3, 32, 32}
	tests := []struct {
		name    string
		model   string
		cfg     Config
		params  int64
		running int64
		heavy   bool // builds a 224x224 VGG: ~550 MB and a second or more
	}{
		// vgg11 at 3x32x32, 10 classes. Convolutions (weights + biases):
		// 3*64*9+64 = 1,792; 64*128*9+128 = 73,856; 128*256*9+256 = 295,168;
		// 256*256*9+256 = 590,080; 256*512*9+512 = 1,180,160; three of
		// 512*512*9+512 = 2,359,808 = 7,079,424; together 9,220,480 (as
		// torchvision's vgg11 features). The last map is 1x1, so the
		// classifier is 512->512 (262,656), 512->512 (262,656), 512->10
		// (5,130): 9,220,480 + 530,442 = 9,750,922.
		{"vgg11 cifar", "vgg11", Config{Input: cifar, Classes: 10}, 9_750_922, 0, false},
		// BN adds scale and bias for 64+128+256+256+512+512+512+512 = 2,752
		// channels (5,504), and as many running statistics.
		{"vgg11_bn cifar", "vgg11", Config{Input: cifar, Classes: 10, BN: true}, 9_756_426, 5_504, false},
		// vgg-mini: 1*16*9+16 = 160; 16*16*9+16 = 2,320; 16*32*9+32 = 4,640;
		// 32*32*9+32 = 9,248; 32*7*7*64+64 = 100,416; 64*10+10 = 650.
		{"vgg-mini", "vgg-mini", Config{}, 117_434, 0, false},
		{"vgg-mini bn", "vgg-mini", Config{BN: true}, 117_434 + 2*96, 2 * 96, false},
		// torchvision's resnet18: 11,689,512 parameters, 9,600 running
		// statistics. At 10 classes fc loses 990*513 = 507,870.
		{"resnet18", "resnet18", Config{}, 11_689_512, 9_600, false},
		{"resnet18 cifar", "resnet18", Config{Input: cifar, Classes: 10}, 11_181_642, 9_600, false},
		{"vgg11", "vgg11", Config{}, 132_863_336, 0, true},
		{"vgg13", "vgg13", Config{}, 133_047_848, 0, true},
		{"vgg16", "vgg16", Config{}, 138_357_544, 0, true},
		{"vgg19", "vgg19", Config{}, 143_667_240, 0, true},
		{"vgg16_bn", "vgg16", Config{BN: true}, 138_365_992, 8_448, true},
		// 448x448: a 14x14 map pooled with kernel 2 to 7x7, same classifier.
		{"vgg11 at 448", "vgg11", Config{Input: [3]int64{3, 448, 448}}, 132_863_336, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.heavy && testing.Short() {
				t.Skip("builds a full 224x224 VGG (~550 MB); run without -short")
			}
			m := mustBuild(t, tt.model, tt.cfg)
			params, running := countParams(m)
			if params != tt.params || running != tt.running {
				t.Errorf("%s: %d parameters and %d running statistics, want %d and %d",
					tt.name, params, running, tt.params, tt.running)
			}
		})
	}
}

func TestDeterminism(t *testing.T) {
	cifar := [3]int64{3, 32, 32}
	tests := []struct {
		name  string
		model string
		cfg   Config
	}{
		{"vgg-mini", "vgg-mini", Config{}},
		{"vgg-mini bn opset 7", "vgg-mini", Config{BN: true, Opset: 7}},
		{"vgg11 cifar", "vgg11", Config{Input: cifar, Classes: 10}},
		{"resnet18 cifar", "resnet18", Config{Input: cifar, Classes: 10, Opset: 17}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			read := func(seed uint64, file string) []byte {
				cfg := tt.cfg
				cfg.Seed = seed
				b, err := os.ReadFile(writeModel(t, dir, file, mustBuild(t, tt.model, cfg)))
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
			a, b := read(42, "a.onnx"), read(42, "b.onnx")
			if !bytes.Equal(a, b) {
				t.Errorf("two builds with seed 42 differ (%d and %d bytes)", len(a), len(b))
			}
			if zero, one := read(0, "zero.onnx"), read(1, "one.onnx"); !bytes.Equal(zero, one) {
				t.Error("seed 0 does not build the same model as seed 1")
			}
			c := read(43, "c.onnx")
			if bytes.Equal(a, c) {
				t.Fatal("seeds 42 and 43 build identical files")
			}
			// Every randomly initialised (non-constant) tensor differs
			// between the seeds.
			cfg42, cfg43 := tt.cfg, tt.cfg
			cfg42.Seed, cfg43.Seed = 42, 43
			m42, m43 := mustBuild(t, tt.model, cfg42), mustBuild(t, tt.model, cfg43)
			random := 0
			for i, tp := range m42.GetGraph().GetInitializer() {
				raw := tp.GetRawData()
				if bytes.Equal(raw, bytes.Repeat(raw[:4], len(raw)/4)) {
					continue
				}
				random++
				if bytes.Equal(raw, m43.GetGraph().GetInitializer()[i].GetRawData()) {
					t.Errorf("%s is the same for seeds 42 and 43", tp.GetName())
				}
			}
			if random == 0 {
				t.Error("no randomly initialised tensor")
			}
		})
	}
}

// A tensor's values depend only on the seed and its name: the same layer in
// other networks, or after inserting BatchNormalization, gets the same values.
func TestInitIndependentOfLayout(t *testing.T) {
	cifar := Config{Input: [3]int64{3, 32, 32}, Classes: 10, Seed: 5}
	bn := cifar
	bn.BN = true
	bn.Opset = 9
	vgg11 := mustBuild(t, "vgg11", cifar)
	vgg11bn := mustBuild(t, "vgg11", bn)
	vgg13 := mustBuild(t, "vgg13", cifar)
	tests := []struct {
		name   string
		a, b   *onnxpb.ModelProto
		tensor string
	}{
		{"vgg11 and vgg13 first conv", vgg11, vgg13, "features.0.weight"},
		{"vgg11 with and without BN", vgg11, vgg11bn, "features.0.weight"},
		{"vgg11 and vgg13 last linear", vgg11, vgg13, "classifier.6.weight"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !bytes.Equal(initializer(t, tt.a, tt.tensor).GetRawData(), initializer(t, tt.b, tt.tensor).GetRawData()) {
				t.Errorf("%s differs between %s and %s", tt.tensor, tt.a.GetGraph().GetName(), tt.b.GetGraph().GetName())
			}
		})
	}
}

// meanStd returns the mean and the standard deviation of v.
func meanStd(v []float32) (mean, std float64) {
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	for _, x := range v {
		d := float64(x) - mean
		std += d * d
	}
	return mean, math.Sqrt(std / float64(len(v)))
}

func TestInitStatistics(t *testing.T) {
	cifar := [3]int64{3, 32, 32}
	vgg := mustBuild(t, "vgg11", Config{Input: cifar, Classes: 10, BN: true, Seed: 3})
	resnet := mustBuild(t, "resnet18", Config{Input: cifar, Classes: 10, Seed: 3})
	// The tolerance on the standard deviation is relative; the sampling
	// error of a std over n normal draws is about std/sqrt(2n): 0.05% for
	// the 2.4M weights of a 512x512x3x3 convolution. The mean must lie
	// within 4 standard errors (std/sqrt(n)) of 0.
	tests := []struct {
		name    string
		m       *onnxpb.ModelProto
		tensor  string
		std     float64
		relTol  float64
		dims    []int64
		isConst bool // every element equals std
	}{
		{"vgg conv 512x512x3x3 kaiming fan_out", vgg, "features.25.weight", math.Sqrt(2.0 / (512 * 9)), 0.01, []int64{512, 512, 3, 3}, false},
		{"vgg conv 128x64x3x3 kaiming fan_out", vgg, "features.4.weight", math.Sqrt(2.0 / (128 * 9)), 0.02, []int64{128, 64, 3, 3}, false},
		{"vgg linear 512x512 normal 0.01", vgg, "classifier.0.weight", 0.01, 0.02, []int64{512, 512}, false},
		{"vgg conv bias zero", vgg, "features.0.bias", 0, 0, []int64{64}, true},
		{"vgg linear bias zero", vgg, "classifier.6.bias", 0, 0, []int64{10}, true},
		{"vgg bn scale one", vgg, "features.1.weight", 1, 0, []int64{64}, true},
		{"vgg bn bias zero", vgg, "features.1.bias", 0, 0, []int64{64}, true},
		{"vgg bn mean zero", vgg, "features.1.running_mean", 0, 0, []int64{64}, true},
		{"vgg bn var one", vgg, "features.1.running_var", 1, 0, []int64{64}, true},
		{"resnet conv1 7x7 kaiming fan_out", resnet, "conv1.weight", math.Sqrt(2.0 / (64 * 49)), 0.02, []int64{64, 3, 7, 7}, false},
		{"resnet layer4 conv kaiming fan_out", resnet, "layer4.1.conv2.weight", math.Sqrt(2.0 / (512 * 9)), 0.01, []int64{512, 512, 3, 3}, false},
		{"resnet downsample 1x1 kaiming fan_out", resnet, "layer4.0.downsample.0.weight", math.Sqrt(2.0 / 512), 0.02, []int64{512, 256, 1, 1}, false},
		{"resnet fc normal 0.01", resnet, "fc.weight", 0.01, 0.05, []int64{10, 512}, false},
		{"resnet fc bias zero", resnet, "fc.bias", 0, 0, []int64{10}, true},
		{"resnet bn var one", resnet, "layer2.0.downsample.1.running_var", 1, 0, []int64{128}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp := initializer(t, tt.m, tt.tensor)
			if diff := cmp.Diff(tt.dims, tp.GetDims()); diff != "" {
				t.Fatalf("%s dims mismatch (-want +got):\n%s", tt.tensor, diff)
			}
			v := floats(t, tp)
			if tt.isConst {
				for i, x := range v {
					if float64(x) != tt.std {
						t.Fatalf("%s[%d] = %g, want %g", tt.tensor, i, x, tt.std)
					}
				}
				return
			}
			mean, std := meanStd(v)
			if rel := math.Abs(std-tt.std) / tt.std; rel > tt.relTol {
				t.Errorf("%s: std %.6g, want %.6g (relative error %.3g > %g)", tt.tensor, std, tt.std, rel, tt.relTol)
			}
			if bound := 4 * tt.std / math.Sqrt(float64(len(v))); math.Abs(mean) > bound {
				t.Errorf("%s: mean %.3g, want within %.3g of 0", tt.tensor, mean, bound)
			}
		})
	}
}

// TestOpsetForms checks, for every builder and opset, the parts of the graph
// that differ between opsets and the conventions every graph keeps.
func TestOpsetForms(t *testing.T) {
	inputs := map[string][3]int64{"vgg-mini": {1, 28, 28}}
	n := 0
	for _, name := range Names() {
		for opset := int64(MinOpset); opset <= MaxOpset; opset++ {
			in, ok := inputs[name]
			if !ok {
				in = [3]int64{3, 32, 32}
			}
			t.Run(fmt.Sprintf("%s/opset%d", name, opset), func(t *testing.T) {
				m := mustBuild(t, name, Config{Input: in, Classes: 10, BN: true, Opset: opset})
				checkForms(t, m, opset, in)
			})
			n++
		}
	}
	t.Logf("checked %d graphs", n)
}

func checkForms(t *testing.T, m *onnxpb.ModelProto, opset int64, in [3]int64) {
	t.Helper()
	g := m.GetGraph()
	if got, want := m.GetIrVersion(), IRVersion(opset); got != want {
		t.Errorf("ir_version %d, want %d", got, want)
	}
	if len(m.GetOpsetImport()) != 1 || m.GetOpsetImport()[0].GetDomain() != "" || m.GetOpsetImport()[0].GetVersion() != opset {
		t.Errorf("opset_import %v, want the default domain at %d", m.GetOpsetImport(), opset)
	}
	if m.GetProducerName() != "dcconvert" || m.GetProducerVersion() != ProducerVersion {
		t.Errorf("producer %q %q", m.GetProducerName(), m.GetProducerVersion())
	}

	// Inputs: "input" first, then the initializers exactly when IR < 4.
	var inputNames []string
	for _, vi := range g.GetInput() {
		inputNames = append(inputNames, vi.GetName())
	}
	wantInputs := []string{"input"}
	if m.GetIrVersion() < 4 {
		for _, tp := range g.GetInitializer() {
			wantInputs = append(wantInputs, tp.GetName())
		}
	}
	if diff := cmp.Diff(wantInputs, inputNames); diff != "" {
		t.Errorf("graph inputs mismatch (-want +got):\n%s", diff)
	}
	for i, vi := range g.GetInput()[1:] {
		if got, want := shapeOf(vi), fmt.Sprint(g.GetInitializer()[i].GetDims()); got != want {
			t.Errorf("input %s has shape %s, want %s", vi.GetName(), got, want)
		}
	}
	if got, want := shapeOf(g.GetInput()[0]), fmt.Sprintf("[batch_size %d %d %d]", in[0], in[1], in[2]); got != want {
		t.Errorf("input shape %s, want %s", got, want)
	}
	if len(g.GetOutput()) != 1 || g.GetOutput()[0].GetName() != "output" || shapeOf(g.GetOutput()[0]) != "[batch_size 10]" {
		t.Errorf("outputs %v, want one output [batch_size 10]", g.GetOutput())
	}

	names := map[string]bool{}
	produced := map[string]bool{"input": true}
	for _, tp := range g.GetInitializer() {
		produced[tp.GetName()] = true
	}
	for _, nd := range g.GetNode() {
		if names[nd.GetName()] {
			t.Errorf("node name %s used twice", nd.GetName())
		}
		names[nd.GetName()] = true
		for _, x := range nd.GetInput() {
			if !produced[x] {
				t.Errorf("node %s reads %s before it is produced", nd.GetName(), x)
			}
		}
		if len(nd.GetOutput()) != 1 {
			t.Errorf("node %s has %d outputs, want 1", nd.GetName(), len(nd.GetOutput()))
		}
		produced[nd.GetOutput()[0]] = true
		attrs := map[string]bool{}
		for _, a := range nd.GetAttribute() {
			attrs[a.GetName()] = true
		}
		check := func(cond bool, format string, args ...any) {
			if !cond {
				t.Errorf("node %s (%s): %s", nd.GetName(), nd.GetOpType(), fmt.Sprintf(format, args...))
			}
		}
		switch nd.GetOpType() {
		case opMaxPool:
			check(attrs["ceil_mode"] == (opset >= 10), "ceil_mode present %v at opset %d", attrs["ceil_mode"], opset)
			check(!attrs["dilations"] && !attrs["storage_order"], "unexpected attribute")
		case opAveragePool:
			check(!attrs["ceil_mode"] || opset >= 10, "ceil_mode at opset %d", opset)
		case opBatchNormalization:
			check(len(attrs) == 2 && attrs["epsilon"] && attrs["momentum"], "attributes %v, want epsilon and momentum", attrs)
			check(len(nd.GetInput()) == 5, "%d inputs", len(nd.GetInput()))
		case opGemm:
			check(len(nd.GetInput()) == 3, "%d inputs, want A, B and C", len(nd.GetInput()))
			check(attrs["transB"], "no transB")
		case opDropout:
			check(len(nd.GetInput()) == 1 && len(attrs) == 0, "inputs %v attributes %v, want neither ratio nor training_mode", nd.GetInput(), attrs)
		case opFlatten:
			check(nd.GetAttribute()[0].GetI() == 1, "axis %d", nd.GetAttribute()[0].GetI())
		case opConv, opRelu, opAdd, opGlobalAveragePool:
		default:
			t.Errorf("node %s: unexpected op type %s", nd.GetName(), nd.GetOpType())
		}
	}
	last := g.GetNode()[len(g.GetNode())-1]
	if last.GetOutput()[0] != "output" {
		t.Errorf("last node %s writes %s, want output", last.GetName(), last.GetOutput()[0])
	}
}

// shapeOf writes a value's shape as [d0 d1 ...], symbolic dims by name.
func shapeOf(vi *onnxpb.ValueInfoProto) string {
	var dims []string
	for _, d := range vi.GetType().GetTensorType().GetShape().GetDim() {
		if p := d.GetDimParam(); p != "" {
			dims = append(dims, p)
		} else {
			dims = append(dims, fmt.Sprint(d.GetDimValue()))
		}
	}
	return "[" + strings.Join(dims, " ") + "]"
}

// summary is a readable listing of a model: its header, nodes and
// initializers, for golden files.
func summary(m *onnxpb.ModelProto) string {
	var b strings.Builder
	g := m.GetGraph()
	fmt.Fprintf(&b, "graph %s ir %d opset %d\n", g.GetName(), m.GetIrVersion(), m.GetOpsetImport()[0].GetVersion())
	for _, vi := range g.GetInput() {
		fmt.Fprintf(&b, "input %s %s\n", vi.GetName(), shapeOf(vi))
	}
	for _, vi := range g.GetOutput() {
		fmt.Fprintf(&b, "output %s %s\n", vi.GetName(), shapeOf(vi))
	}
	for _, nd := range g.GetNode() {
		var attrs []string
		for _, a := range nd.GetAttribute() {
			switch a.GetType() {
			case onnxpb.AttributeProto_INT:
				attrs = append(attrs, fmt.Sprintf("%s=%d", a.GetName(), a.GetI()))
			case onnxpb.AttributeProto_INTS:
				attrs = append(attrs, fmt.Sprintf("%s=%v", a.GetName(), a.GetInts()))
			case onnxpb.AttributeProto_FLOAT:
				attrs = append(attrs, fmt.Sprintf("%s=%g", a.GetName(), a.GetF()))
			}
		}
		line := fmt.Sprintf("node %s %s(%s) -> %s %s", nd.GetName(), nd.GetOpType(),
			strings.Join(nd.GetInput(), ", "), strings.Join(nd.GetOutput(), ", "), strings.Join(attrs, " "))
		fmt.Fprintln(&b, strings.TrimRight(line, " "))
	}
	for _, tp := range g.GetInitializer() {
		fmt.Fprintf(&b, "initializer %s %v\n", tp.GetName(), tp.GetDims())
	}
	return b.String()
}

// TestGolden compares model listings with testdata/*.golden; go test
// -run TestGolden -update rewrites them.
func TestGolden(t *testing.T) {
	tests := []struct {
		file  string
		model string
		cfg   Config
	}{
		{"vgg-mini_bn_opset13.golden", "vgg-mini", Config{BN: true}},
		{"vgg11_cifar_opset9.golden", "vgg11", Config{Input: [3]int64{3, 32, 32}, Classes: 10, Opset: 9}},
		{"vgg-mini_opset7.golden", "vgg-mini", Config{Opset: 7}},
		{"resnet18_opset13.golden", "resnet18", Config{Input: [3]int64{3, 32, 32}, Classes: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := summary(mustBuild(t, tt.model, tt.cfg))
			path := filepath.Join("testdata", tt.file)
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGolden -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
			}
		})
	}
}

// The 224x224 VGG head: an AveragePool of kernel map/7 in front of Flatten.
func TestVGGPool(t *testing.T) {
	if testing.Short() {
		t.Skip("builds full-size VGGs (~530 MB each); run without -short")
	}
	tests := []struct {
		name   string
		input  [3]int64
		kernel []int64
	}{
		{"224", [3]int64{3, 224, 224}, []int64{1, 1}},
		{"448x224", [3]int64{1, 448, 224}, []int64{2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustBuild(t, "vgg11", Config{Input: tt.input})
			i := slices.IndexFunc(m.GetGraph().GetNode(), func(n *onnxpb.NodeProto) bool { return n.GetOpType() == opAveragePool })
			if i < 0 {
				t.Fatal("no AveragePool")
			}
			nd := m.GetGraph().GetNode()[i]
			if nd.GetName() != "/avgpool/AveragePool" {
				t.Errorf("pool named %s", nd.GetName())
			}
			for _, a := range nd.GetAttribute() {
				if diff := cmp.Diff(tt.kernel, a.GetInts()); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", a.GetName(), diff)
				}
			}
			if dims := initializer(t, m, "classifier.0.weight").GetDims(); dims[1] != 25088 {
				t.Errorf("classifier.0.weight dims %v, want [4096 25088]", dims)
			}
		})
	}
}

// BenchmarkBuild times Build and the encoding of its result.
func BenchmarkBuild(b *testing.B) {
	tests := []struct {
		name  string
		model string
		cfg   Config
	}{
		{"vgg-mini", "vgg-mini", Config{}},
		{"resnet18", "resnet18", Config{}},
		{"vgg16", "vgg16", Config{}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				size = len(marshal(b, mustBuild(b, tt.model, tt.cfg)))
			}
			b.ReportMetric(float64(size), "file-bytes")
		})
	}
}
