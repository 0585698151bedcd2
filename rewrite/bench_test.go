package rewrite_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// BenchmarkRewrite reads the model named by DCCONVERT_BENCH_MODEL (e.g. a
// VGG16 from `dcconvert models vgg16`), rewrites every Conv into ball x cos
// with a learnable radius and writes the result: the rewrite command end
// to end. bench/run.sh --heavy measures the command next to Python.
func BenchmarkRewrite(b *testing.B) {
	path := os.Getenv("DCCONVERT_BENCH_MODEL")
	if path == "" {
		b.Skip("set DCCONVERT_BENCH_MODEL to a model file (bench/run.sh --heavy makes a VGG16)")
	}
	info, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "out.onnx")
	cfg := dcnet.DefaultConfig()
	cfg.Magnitude, cfg.LearnRho = dcnet.MagBall, true
	b.SetBytes(info.Size())
	for b.Loop() {
		m, err := onnximport.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rewrite.Run(m, rewrite.Options{Config: cfg}, nil); err != nil {
			b.Fatal(err)
		}
		if err := m.WriteFile(out); err != nil {
			b.Fatal(err)
		}
	}
}
