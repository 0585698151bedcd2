package data

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkLoaderFashion measures the loader on Fashion-MNIST's train split
// in batches of 64, shuffled, with and without augmentation, normalised, at
// 1x28x28 and converted to 3x32x32; it reports images per second.
func BenchmarkLoaderFashion(b *testing.B) {
	if _, err := os.Stat(filepath.Join(fashionDir, "train-images-idx3-ubyte.gz")); err != nil {
		b.Skip("Fashion-MNIST is missing from " + fashionDir + ": apt-get install dataset-fashion-mnist")
	}
	set, err := Open(fashionDir, OpenOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		aug  Augment
		pre  Preprocess
	}{
		{"1x28x28", AugmentNone, Preprocess{C: 1, H: 28, W: 28, Mean: []float32{0.286}, Std: []float32{0.353}}},
		{"1x28x28/standard", AugmentStandard, Preprocess{C: 1, H: 28, W: 28, Mean: []float32{0.286}, Std: []float32{0.353}}},
		{"3x32x32/standard", AugmentStandard, Preprocess{C: 3, H: 32, W: 32, Mean: []float32{0.286}, Std: []float32{0.353}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := NewLoader(set, LoaderOptions{Batch: 64, Shuffle: true, Augment: bc.aug, Seed: 1, Pre: bc.pre})
			if err != nil {
				b.Fatal(err)
			}
			images := 0
			epoch := 0
			b.ResetTimer()
			for images < b.N {
				for batch, err := range l.Epoch(epoch) {
					if err != nil {
						b.Fatal(err)
					}
					images += len(batch.Labels)
					if images >= b.N {
						break
					}
				}
				epoch++
			}
			b.ReportMetric(float64(images)/b.Elapsed().Seconds(), "images/s")
		})
	}
}
