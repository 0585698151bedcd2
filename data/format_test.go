package data

import (
	"path/filepath"
	"slices"
	"testing"
)

// TestDetect checks format detection, including what the error says when
// nothing is found.
func TestDetect(t *testing.T) {
	png := pngBytes(t, grayImage(2, 2))
	tests := []struct {
		name  string
		files map[string][]byte
		want  Format
	}{
		{"idx raw", map[string][]byte{idxTrainImages: nil}, FormatIDX},
		{"idx gz test only", map[string][]byte{idxTestImages + ".gz": nil}, FormatIDX},
		{"cifar10", map[string][]byte{"data_batch_1.bin": nil}, FormatCIFAR10},
		{"cifar10 test only", map[string][]byte{cifar10Test: nil}, FormatCIFAR10},
		{"cifar10 archive", map[string][]byte{cifar10Subdir + "/data_batch_1.bin": nil}, FormatCIFAR10},
		{"cifar100", map[string][]byte{cifar100Train: nil}, FormatCIFAR100},
		{"cifar100 archive", map[string][]byte{cifar100Subdir + "/test.bin": nil}, FormatCIFAR100},
		{"image folder", map[string][]byte{"cat/1.JPG": png}, FormatImageFolder},
		{"image folder split", map[string][]byte{"train/cat/1.png": png}, FormatImageFolder},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range tc.files {
				writeFile(t, filepath.Join(dir, name), b, false)
			}
			got, err := Detect(dir)
			if err != nil || got != tc.want {
				t.Errorf("Detect = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if got, err := Detect("synthetic"); err != nil || got != FormatSynthetic {
		t.Errorf("Detect(synthetic) = %q, %v", got, err)
	}

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "notes", "a.txt"), []byte("x"), false)
	writeFile(t, filepath.Join(dir, "top.png"), png, false)
	_, err := Detect(dir)
	wantErrNaming(t, err, dir, idxTrainImages, "data_batch_1.bin", cifar100Train, "image folder")
	_, err = Detect(filepath.Join(dir, "missing"))
	wantErrNaming(t, err, filepath.Join(dir, "missing"))
	_, err = Detect(filepath.Join(dir, "top.png"))
	wantErrNaming(t, err, filepath.Join(dir, "top.png"), "not a directory")
	_, err = Open(dir, OpenOptions{})
	wantErrNaming(t, err, dir, "found none of")
}

// TestOpenOptionErrors checks that bad options are refused with the
// directory named.
func TestOpenOptionErrors(t *testing.T) {
	dir := t.TempDir()
	writeIDXDir(t, dir, 20, 5, 2, 2, false)
	tests := []struct {
		name string
		opts OpenOptions
		want string
	}{
		{"unknown format", OpenOptions{Format: "tfrecord"}, "unknown format \"tfrecord\"; known formats: idx, cifar10, cifar100, imagefolder, synthetic"},
		{"unknown split", OpenOptions{Split: "val"}, "unknown split"},
		{"negative fraction", OpenOptions{ValSplit: -0.1}, "outside [0, 1)"},
		{"whole fraction", OpenOptions{ValSplit: 1}, "outside [0, 1)"},
		{"fraction of all", OpenOptions{Split: SplitAll, ValSplit: 0.1}, "takes no validation fraction"},
		{"wrong format", OpenOptions{Format: FormatCIFAR10}, "neither data_batch_1.bin nor test_batch.bin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(dir, tc.opts)
			wantErrNaming(t, err, dir, tc.want)
		})
	}
	if !slices.Equal(Formats(), []Format{"idx", "cifar10", "cifar100", "imagefolder", "synthetic"}) {
		t.Errorf("Formats() = %q", Formats())
	}
}

// TestValSplit checks held-out fractions: seeded, disjoint, covering the
// train split, stratified, and the same for every split requested.
func TestValSplit(t *testing.T) {
	dir := t.TempDir()
	writeIDXDir(t, dir, 200, 10, 1, 1, true)
	open := func(split Split, frac float64, seed uint64) []int {
		t.Helper()
		s, err := Open(dir, OpenOptions{Split: split, ValSplit: frac, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		sub, ok := s.(*subset)
		if !ok {
			t.Fatalf("split %s with a fraction is a %T", split, s)
		}
		return sub.indices
	}
	train, held := open(SplitTrain, 0.25, 7), open(SplitTest, 0.25, 7)
	if len(held) != 50 || len(train) != 150 {
		t.Fatalf("%d held out and %d kept of 200 at 0.25, want 50 and 150", len(held), len(train))
	}
	all := append(slices.Clone(train), held...)
	slices.Sort(all)
	for i, v := range all {
		if v != i {
			t.Fatalf("kept and held-out samples are not disjoint or do not cover the train split (at %d: %d)", i, v)
		}
	}
	perClass := make([]int, 10)
	for _, i := range held {
		perClass[i%10]++ // the fixture's label is i mod 10
	}
	for y, n := range perClass {
		if n != 5 {
			t.Errorf("class %d: %d held out, want 5 of 20", y, n)
		}
	}
	if again := open(SplitTest, 0.25, 7); !slices.Equal(again, held) {
		t.Error("the same seed held out different samples")
	}
	if other := open(SplitTest, 0.25, 8); slices.Equal(other, held) {
		t.Error("another seed held out the same samples")
	}
	s, err := Open(dir, OpenOptions{Split: SplitTest, ValSplit: 0.25, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	_, y, err := s.Image(3)
	if err != nil || y != held[3]%10 {
		t.Errorf("held-out sample 3 has label %d (%v), want %d", y, err, held[3]%10)
	}
}

// TestSyntheticOpen checks the generated data set through Open.
func TestSyntheticOpen(t *testing.T) {
	syn := SyntheticOptions{Classes: 4, Train: 40, Test: 12, Shape: [3]int{3, 12, 10}, Seed: 3}
	for _, tc := range []struct {
		split Split
		n     int
	}{{SplitTrain, 40}, {SplitTest, 12}, {SplitAll, 52}} {
		s, err := Open("synthetic", OpenOptions{Split: tc.split, Synthetic: syn})
		if err != nil {
			t.Fatal(err)
		}
		if s.Len() != tc.n || len(s.Classes()) != 4 {
			t.Errorf("split %s: %d samples and %d classes, want %d and 4", tc.split, s.Len(), len(s.Classes()), tc.n)
		}
		img, _, err := s.Image(0)
		if err != nil || img.C != 3 || img.H != 12 || img.W != 10 {
			t.Errorf("split %s: sample 0 is %dx%dx%d (%v), want 3x12x10", tc.split, img.C, img.H, img.W, err)
		}
	}
	_, err := Open("synthetic", OpenOptions{Synthetic: SyntheticOptions{Classes: 1, Shape: [3]int{2, 4, 4}}})
	wantErrNaming(t, err, "1 classes", "2 channels", "size 4x4")
	// A directory named synthetic is a directory.
	wd := t.TempDir()
	writeIDXDir(t, filepath.Join(wd, "synthetic"), 3, 1, 2, 2, false)
	if f, err := Detect(filepath.Join(wd, "synthetic")); err != nil || f != FormatIDX {
		t.Errorf("Detect(DIR/synthetic) = %q, %v; want idx", f, err)
	}
}
