package models

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/internal/peer"
)

// smallInput is the input every builder is checked at against the peers.
func smallInput(name string) [3]int64 {
	if name == "vgg-mini" {
		return [3]int64{1, 28, 28}
	}
	return [3]int64{3, 32, 32}
}

// randomBatch returns a batch of n normal(0, 1) samples of shape in, drawn
// from a PCG stream seeded with seed.
func randomBatch(n int64, in [3]int64, seed uint64) peer.Tensor {
	r := rand.New(rand.NewPCG(seed, 0))
	x := peer.Tensor{Dims: []int64{n, in[0], in[1], in[2]}, Data: make([]float32, n*in[0]*in[1]*in[2])}
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	return x
}

// runORT runs the model at path on x and checks the output's shape and that
// every value is finite.
func runORT(t *testing.T, rt *peer.Runtime, path string, x peer.Tensor, classes int64) peer.Tensor {
	t.Helper()
	out, err := rt.Run(path, map[string]peer.Tensor{inputName: x})
	if err != nil {
		t.Fatal(err)
	}
	y, ok := out[outputName]
	if !ok {
		t.Fatalf("onnx runtime returned no %q output", outputName)
	}
	if want := []int64{x.Dims[0], classes}; !slices.Equal(y.Dims, want) {
		t.Fatalf("output dims %v, want %v", y.Dims, want)
	}
	for i, v := range y.Data {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("output[%d] = %g", i, v)
		}
	}
	return y
}

// shortOpsets are the opsets checked against the peers under -short: the
// first (IR 3, initializers as inputs), the default, and the last.
var shortOpsets = []int64{MinOpset, DefaultOpset, MaxOpset}

// TestPeerCheckAndRun checks every builder, with and without BN, at every
// opset with the ONNX checker (full check) and runs it in ONNX Runtime on a
// random batch of 2. resnet18 always has batch normalization, so it is
// checked once per opset (TestResNetIgnoresBN shows BN changes nothing).
// Under -short only shortOpsets are checked.
func TestPeerCheckAndRun(t *testing.T) {
	peer.Python(t, "onnx")
	rt := peer.ORT(t)
	const classes = 10
	dir := t.TempDir()
	n := 0
	for _, name := range Names() {
		for _, bn := range []bool{false, true} {
			if bn && name == "resnet18" {
				continue
			}
			for opset := int64(MinOpset); opset <= MaxOpset; opset++ {
				if testing.Short() && !slices.Contains(shortOpsets, opset) {
					continue
				}
				in := smallInput(name)
				cfg := Config{Input: in, Classes: classes, BN: bn, Opset: opset, Seed: 2}
				t.Run(fmt.Sprintf("%s/bn=%v/opset%d", name, bn, opset), func(t *testing.T) {
					path := writeModel(t, dir, "model.onnx", mustBuild(t, name, cfg))
					defer os.Remove(path)
					peer.CheckModel(t, path)
					runORT(t, rt, path, randomBatch(2, in, uint64(opset)), classes)
					n++
				})
			}
		}
	}
	if testing.Short() {
		t.Logf("checked %d models with the onnx checker and onnx runtime (opsets %v only under -short)", n, shortOpsets)
		return
	}
	t.Logf("checked %d models with the onnx checker and onnx runtime", n)
}

func TestResNetIgnoresBN(t *testing.T) {
	cfg := Config{Input: [3]int64{3, 32, 32}, Classes: 10}
	plain := marshal(t, mustBuild(t, "resnet18", cfg))
	cfg.BN = true
	if !bytes.Equal(plain, marshal(t, mustBuild(t, "resnet18", cfg))) {
		t.Error("resnet18 with BN set differs from resnet18 without")
	}
}

// TestTorchReference runs models in ONNX Runtime and their weights in the
// same network built with PyTorch and torchvision (testdata/torch_reference.py,
// which loads every initializer with load_state_dict(strict=True)), and
// compares the outputs. The tolerance is relative to the output's scale:
// |ort - torch| <= 1e-4 * max|torch|, since the 0.01-std classifiers give
// outputs far below 1.
func TestTorchReference(t *testing.T) {
	const relTol = 1e-4
	py := peer.Python(t, "onnx", "torch", "torchvision", "numpy")
	rt := peer.ORT(t)
	tests := []struct {
		name  string
		model string
		cfg   Config
		heavy bool // a 224x224 VGG: ~530 MB in Go, torch and ORT
	}{
		{"vgg-mini", "vgg-mini", Config{}, false},
		{"vgg-mini bn opset 7", "vgg-mini", Config{BN: true, Opset: 7}, false},
		{"vgg11 bn cifar opset 9", "vgg11", Config{Input: [3]int64{3, 32, 32}, Classes: 10, BN: true, Opset: 9}, false},
		{"vgg16 cifar opset 17", "vgg16", Config{Input: [3]int64{3, 32, 32}, Classes: 10, Opset: 17}, false},
		{"vgg13 2x2 map", "vgg13", Config{Input: [3]int64{3, 64, 64}, Classes: 10, Opset: 11}, false},
		{"resnet18 cifar", "resnet18", Config{Input: [3]int64{3, 32, 32}, Classes: 10}, false},
		{"resnet18 1x40x48 opset 8", "resnet18", Config{Input: [3]int64{1, 40, 48}, Classes: 7, Opset: 8}, false},
		{"vgg11 224", "vgg11", Config{Classes: 10}, true},
	}
	dir := t.TempDir()
	n := 0
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.heavy && testing.Short() {
				t.Skip("runs a full 224x224 VGG in ONNX Runtime and PyTorch; run without -short")
			}
			m := mustBuild(t, tt.model, tt.cfg)
			cfg, err := builders[slices.Index(Names(), tt.model)].resolve(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			path := writeModel(t, dir, "model.onnx", m)
			defer os.Remove(path)
			x := randomBatch(2, cfg.Input, uint64(i))
			got := runORT(t, rt, path, x, int64(cfg.Classes))
			want := torchOutput(t, py, path, tt.model, cfg.BN, x)
			if len(want) != len(got.Data) {
				t.Fatalf("torch gave %d values, onnx runtime %d", len(want), len(got.Data))
			}
			var scale, worst float64
			for _, v := range want {
				scale = max(scale, math.Abs(float64(v)))
			}
			if scale == 0 {
				t.Fatal("torch output is all zero")
			}
			for j := range want {
				worst = max(worst, math.Abs(float64(got.Data[j])-float64(want[j])))
			}
			if worst > relTol*scale {
				t.Errorf("max |ort - torch| = %.3g, want <= %g * %.3g", worst, relTol, scale)
			}
			t.Logf("max |ort - torch| = %.3g at output scale %.3g", worst, scale)
			n++
		})
	}
	t.Logf("compared %d models between onnx runtime and pytorch", n)
}

// torchOutput runs testdata/torch_reference.py on the model at path and x.
func torchOutput(t *testing.T, py, path, arch string, bn bool, x peer.Tensor) []float32 {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.f32"), filepath.Join(dir, "out.f32")
	raw := make([]byte, 4*len(x.Data))
	for i, v := range x.Data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	if err := os.WriteFile(in, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	shape := make([]string, len(x.Dims))
	for i, d := range x.Dims {
		shape[i] = fmt.Sprint(d)
	}
	args := []string{filepath.Join("testdata", "torch_reference.py"),
		"--model", path, "--arch", arch, "--input", in, "--shape", strings.Join(shape, ","), "--output", out}
	if bn {
		args = append(args, "--bn")
	}
	cmd := exec.Command(py, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("torch_reference.py: %v\n%s", err, stderr.String())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	y := make([]float32, len(raw)/4)
	for i := range y {
		y[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return y
}
