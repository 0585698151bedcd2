package data

import (
	"math"
	"slices"
	"testing"
)

// TestSyntheticDeterministic checks that images depend on the seed, split
// and index alone, stay in [0, 1] and spread the labels evenly.
func TestSyntheticDeterministic(t *testing.T) {
	for _, shape := range [][3]int{{1, 28, 28}, {3, 32, 32}, {3, 9, 20}} {
		o := SyntheticOptions{Classes: 7, Train: 70, Test: 14, Shape: shape, Seed: 11}
		a, _ := newSynthetic(o, SplitTrain)
		b, _ := newSynthetic(o, SplitTrain)
		test, _ := newSynthetic(o, SplitTest)
		o.Seed = 12
		other, _ := newSynthetic(o, SplitTrain)
		counts := make([]int, 7)
		for i := range a.Len() {
			x, y, err := a.Image(i)
			if err != nil {
				t.Fatal(err)
			}
			if x.C != shape[0] || x.H != shape[1] || x.W != shape[2] {
				t.Fatalf("shape %dx%dx%d, want %v", x.C, x.H, x.W, shape)
			}
			for _, v := range x.Pix {
				if v < 0 || v > 1 || math.IsNaN(float64(v)) {
					t.Fatalf("sample %d holds %v", i, v)
				}
			}
			counts[y]++
			x2, y2, _ := b.Image(i)
			if !slices.Equal(x.Pix, x2.Pix) || y != y2 {
				t.Fatalf("sample %d differs between two opens with one seed", i)
			}
			if i < test.Len() {
				if xt, _, _ := test.Image(i); slices.Equal(x.Pix, xt.Pix) {
					t.Fatalf("sample %d is the same in train and test", i)
				}
			}
			if xo, _, _ := other.Image(i); slices.Equal(x.Pix, xo.Pix) {
				t.Fatalf("sample %d is the same under another seed", i)
			}
		}
		for y, n := range counts {
			if n != 10 {
				t.Errorf("shape %v: class %d has %d samples, want 10", shape, y, n)
			}
		}
	}
}

// TestSyntheticLearnable trains two linear classifiers on raw pixels of the
// default generated set: the task must be clearly learnable (far above the
// 10% of chance) but not linearly trivial (nearest centroid well short of
// 100%, logistic regression short of 100% on the training samples).
func TestSyntheticLearnable(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 7000 images and trains two classifiers; run without -short")
	}
	for _, shape := range [][3]int{{1, 28, 28}, {3, 32, 32}} {
		o := SyntheticOptions{Shape: shape}
		train, _ := newSynthetic(o, SplitTrain)
		test, _ := newSynthetic(o, SplitTest)
		x, y := collectPix(t, train)
		xt, yt := collectPix(t, test)
		cent := nearestCentroid(x, y, xt, yt, 10)
		trainAcc, testAcc := logisticRegression(x, y, xt, yt, 10, 3)
		t.Logf("%v: nearest centroid %.1f%%, logistic regression %.1f%% train, %.1f%% test", shape, 100*cent, 100*trainAcc, 100*testAcc)
		if cent < 0.7 || cent > 0.95 {
			t.Errorf("%v: nearest centroid gets %.1f%%, want 70-95%%", shape, 100*cent)
		}
		if testAcc < 0.8 || trainAcc >= 0.999 {
			t.Errorf("%v: logistic regression gets %.1f%% of train, %.1f%% of test; want under 99.9%% and over 80%%", shape, 100*trainAcc, 100*testAcc)
		}
	}
}

// collectPix returns the pixels and labels of every sample of s.
func collectPix(t *testing.T, s Set) ([][]float32, []int) {
	imgs, labels := collect(t, s)
	pix := make([][]float32, len(imgs))
	for i, img := range imgs {
		pix[i] = img.Pix
	}
	return pix, labels
}

// nearestCentroid returns the test accuracy of the nearest class mean.
func nearestCentroid(x [][]float32, y []int, xt [][]float32, yt []int, k int) float64 {
	d := len(x[0])
	mean := make([][]float64, k)
	n := make([]float64, k)
	for c := range mean {
		mean[c] = make([]float64, d)
	}
	for i, v := range x {
		for j, p := range v {
			mean[y[i]][j] += float64(p)
		}
		n[y[i]]++
	}
	for c := range mean {
		for j := range mean[c] {
			mean[c][j] /= n[c]
		}
	}
	right := 0
	for i, v := range xt {
		best, bestDist := -1, math.Inf(1)
		for c := range mean {
			dist := 0.0
			for j, p := range v {
				e := float64(p) - mean[c][j]
				dist += e * e
			}
			if dist < bestDist {
				best, bestDist = c, dist
			}
		}
		if best == yt[i] {
			right++
		}
	}
	return float64(right) / float64(len(xt))
}

// logisticRegression trains softmax regression on centred pixels by plain
// SGD for the given epochs and returns the train and test accuracy.
func logisticRegression(x [][]float32, y []int, xt [][]float32, yt []int, k, epochs int) (float64, float64) {
	d := len(x[0])
	w := make([]float64, k*(d+1)) // row c: d weights, then the bias
	logits := make([]float64, k)
	score := func(v []float32) {
		for c := range k {
			row := w[c*(d+1) : (c+1)*(d+1)]
			s := row[d]
			for j, p := range v {
				s += row[j] * float64(p-0.5)
			}
			logits[c] = s
		}
	}
	const lr = 0.002
	for range epochs {
		for i, v := range x {
			score(v)
			top := slices.Max(logits)
			z := 0.0
			for c := range logits {
				logits[c] = math.Exp(logits[c] - top)
				z += logits[c]
			}
			for c := range k {
				g := logits[c] / z
				if c == y[i] {
					g--
				}
				row := w[c*(d+1) : (c+1)*(d+1)]
				for j, p := range v {
					row[j] -= lr * g * float64(p-0.5)
				}
				row[d] -= lr * g
			}
		}
	}
	accuracy := func(x [][]float32, y []int) float64 {
		right := 0
		for i, v := range x {
			score(v)
			if c := slices.Index(logits, slices.Max(logits)); c == y[i] {
				right++
			}
		}
		return float64(right) / float64(len(x))
	}
	return accuracy(x, y), accuracy(xt, yt)
}
