package onnximport

import (
	"os"
	"path/filepath"
	"testing"
)

// benchModel returns the model file named by DCCONVERT_BENCH_MODEL (for
// example a VGG16 written by `dcconvert models vgg16`), or skips.
func benchModel(b *testing.B) string {
	path := os.Getenv("DCCONVERT_BENCH_MODEL")
	if path == "" {
		b.Skip("set DCCONVERT_BENCH_MODEL to a model file (bench/run.sh --heavy makes a VGG16)")
	}
	return path
}

// BenchmarkRead reads, checks and decodes every initializer of a model.
// Its baseline, BenchmarkReadBytesOnly, reads the file's bytes and nothing
// else: the I/O floor.
func BenchmarkRead(b *testing.B) {
	path := benchModel(b)
	info, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(info.Size())
	for b.Loop() {
		m, err := ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range m.Graph().GetInitializer() {
			if _, err := m.Tensor(t); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkReadBytesOnly is the I/O floor for BenchmarkRead.
func BenchmarkReadBytesOnly(b *testing.B) {
	path := benchModel(b)
	info, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(info.Size())
	for b.Loop() {
		if _, err := os.ReadFile(path); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite encodes a model and writes it atomically.
func BenchmarkWrite(b *testing.B) {
	path := benchModel(b)
	m, err := ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "out.onnx")
	info, _ := os.Stat(path)
	b.SetBytes(info.Size())
	for b.Loop() {
		if err := m.WriteFile(out); err != nil {
			b.Fatal(err)
		}
	}
}
