package data

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"
)

// syntheticSet returns a small generated set for loader tests.
func syntheticSet(t testing.TB, n int, shape [3]int) Set {
	t.Helper()
	s, err := Open(SyntheticName, OpenOptions{Synthetic: SyntheticOptions{Train: n, Shape: shape, Seed: 9}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// epochBatches runs one epoch and returns its batches.
func epochBatches(t testing.TB, l *Loader, epoch int) []Batch {
	t.Helper()
	var out []Batch
	for b, err := range l.Epoch(epoch) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestLoaderDeterminism checks that batches are the same whatever the
// number of workers and GOMAXPROCS, and equal to a serial computation.
func TestLoaderDeterminism(t *testing.T) {
	set := syntheticSet(t, 101, [3]int{3, 16, 14})
	opts := LoaderOptions{Batch: 8, Shuffle: true, Augment: AugmentStandard, Seed: 42,
		Pre: Preprocess{C: 1, H: 12, W: 12, Mean: []float32{0.2}, Std: []float32{0.3}}}
	var ref []Batch
	for _, procs := range []int{1, 4} {
		for _, workers := range []int{1, 8, 0} {
			t.Run(fmt.Sprintf("GOMAXPROCS=%d/workers=%d", procs, workers), func(t *testing.T) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				o := opts
				o.Workers = workers
				o.Prefetch = workers%3 + 1
				l, err := NewLoader(set, o)
				if err != nil {
					t.Fatal(err)
				}
				got := epochBatches(t, l, 3)
				if ref == nil {
					ref = got
					return
				}
				if len(got) != len(ref) {
					t.Fatalf("%d batches, want %d", len(got), len(ref))
				}
				for k := range got {
					if !slices.Equal(got[k].X, ref[k].X) || !slices.Equal(got[k].Labels, ref[k].Labels) ||
						!slices.Equal(got[k].Indices, ref[k].Indices) || !slices.Equal(got[k].Shape, ref[k].Shape) {
						t.Fatalf("batch %d differs from the first run's", k)
					}
				}
			})
		}
	}
	// Serially, sample by sample.
	size := 12 * 12
	for k, b := range ref {
		for pos, idx := range b.Indices {
			img, y, err := set.Image(idx)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]float32, size)
			if err := opts.Pre.apply(want, img, AugmentStandard, 42, 3, idx); err != nil {
				t.Fatal(err)
			}
			checkFloats(t, fmt.Sprintf("batch %d sample %d", k, pos), b.X[pos*size:(pos+1)*size], want, exact)
			if b.Labels[pos] != y {
				t.Errorf("batch %d sample %d: label %d, want %d", k, pos, b.Labels[pos], y)
			}
		}
	}
}

// TestLoaderOrder checks the order of the samples, the batch sizes and
// resuming part way.
func TestLoaderOrder(t *testing.T) {
	set := syntheticSet(t, 10, [3]int{1, 8, 8})
	pre := Preprocess{C: 1, H: 8, W: 8}
	plain, err := NewLoader(set, LoaderOptions{Batch: 4, Pre: pre})
	if err != nil {
		t.Fatal(err)
	}
	if n := plain.BatchesPerEpoch(); n != 3 {
		t.Errorf("%d batches per epoch, want 3", n)
	}
	bs := epochBatches(t, plain, 0)
	var order []int
	for _, b := range bs {
		order = append(order, b.Indices...)
	}
	if !slices.Equal(order, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) || len(bs[2].Labels) != 2 || !slices.Equal(bs[2].Shape, []int{2, 1, 8, 8}) {
		t.Errorf("without shuffling: order %v, last batch %v", order, bs[2].Shape)
	}

	drop, err := NewLoader(set, LoaderOptions{Batch: 4, DropLast: true, Shuffle: true, Seed: 5, Pre: pre})
	if err != nil {
		t.Fatal(err)
	}
	if n := drop.BatchesPerEpoch(); n != 2 || len(epochBatches(t, drop, 0)) != 2 {
		t.Errorf("DropLast: %d batches per epoch, want 2", n)
	}
	e0, e0again, e1 := drop.Order(0), drop.Order(0), drop.Order(1)
	if !slices.Equal(e0, e0again) || slices.Equal(e0, e1) {
		t.Errorf("shuffled orders: epoch 0 %v and %v, epoch 1 %v", e0, e0again, e1)
	}
	sorted := slices.Sorted(slices.Values(e0))
	if !slices.Equal(sorted, order) {
		t.Errorf("epoch order %v is no permutation", e0)
	}

	shuf, err := NewLoader(set, LoaderOptions{Batch: 3, Shuffle: true, Seed: 5, Pre: pre, Augment: AugmentCrop})
	if err != nil {
		t.Fatal(err)
	}
	whole := epochBatches(t, shuf, 2)
	var tail []Batch
	for b, err := range shuf.Batches(2, 2) {
		if err != nil {
			t.Fatal(err)
		}
		tail = append(tail, b)
	}
	if len(tail) != 2 || !slices.Equal(tail[0].X, whole[2].X) || !slices.Equal(tail[1].Indices, whole[3].Indices) {
		t.Errorf("Batches(2, 2) is not the tail of the epoch")
	}
	for _, err := range shuf.Batches(2, 9) {
		wantErrNaming(t, err, "batch 9")
	}
}

// TestLoaderStopsEarly checks that leaving the loop stops every goroutine.
func TestLoaderStopsEarly(t *testing.T) {
	set := syntheticSet(t, 200, [3]int{1, 16, 16})
	l, err := NewLoader(set, LoaderOptions{Batch: 4, Workers: 8, Prefetch: 4, Pre: Preprocess{C: 1, H: 16, W: 16}})
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for range 5 {
		n := 0
		for _, err := range l.Epoch(0) {
			if err != nil {
				t.Fatal(err)
			}
			if n++; n == 2 {
				break
			}
		}
	}
	// Goroutines that return may take a moment to be gone from the count.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before the loops, %d after", before, after)
	}
}

// badSet fails on one sample and has a label out of range on another.
type badSet struct{ Set }

func (b badSet) Image(i int) (Image, int, error) {
	switch i {
	case 5:
		return Image{}, 0, fmt.Errorf("reading sample-%d.png: broken", i)
	case 7:
		img, _, err := b.Set.Image(i)
		return img, 99, err
	}
	return b.Set.Image(i)
}

// TestLoaderErrors checks option errors and sample errors.
func TestLoaderErrors(t *testing.T) {
	set := syntheticSet(t, 10, [3]int{1, 8, 8})
	pre := Preprocess{C: 1, H: 8, W: 8}
	tests := []struct {
		name string
		set  Set
		opts LoaderOptions
		want string
	}{
		{"no batch", set, LoaderOptions{Pre: pre}, "batch size 0"},
		{"bad augment", set, LoaderOptions{Batch: 1, Augment: "cutout", Pre: pre}, `unknown augmentation "cutout"`},
		{"bad pre", set, LoaderOptions{Batch: 1, Pre: Preprocess{C: 4, H: 8, W: 8}}, "4 input channels"},
		{"too few for one batch", set, LoaderOptions{Batch: 11, DropLast: true, Pre: pre}, "no whole batch"},
		{"negative workers", set, LoaderOptions{Batch: 1, Workers: -1, Pre: pre}, "-1 workers"},
		{"empty", &subset{base: set}, LoaderOptions{Batch: 1, Pre: pre}, "empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewLoader(tc.set, tc.opts)
			wantErrNaming(t, err, tc.want)
		})
	}
	for _, tc := range []struct {
		batch int
		want  string
	}{{4, "sample-5.png"}, {8, "sample-5.png"}, {1, "sample-5.png"}} {
		l, err := NewLoader(badSet{set}, LoaderOptions{Batch: tc.batch, Workers: 3, Pre: pre})
		if err != nil {
			t.Fatal(err)
		}
		good := 0
		var last error
		for _, err := range l.Epoch(0) {
			if err != nil {
				last = err
				continue
			}
			good++
		}
		wantErrNaming(t, last, tc.want, "sample 5")
		if want := 5 / tc.batch; good != want {
			t.Errorf("batch %d: %d good batches before the error, want %d", tc.batch, good, want)
		}
	}
	l, _ := NewLoader(&subset{base: badSet{set}, indices: []int{7}}, LoaderOptions{Batch: 1, Pre: pre})
	for _, err := range l.Epoch(0) {
		wantErrNaming(t, err, "label 99 is out of range [0, 10)")
	}
}
