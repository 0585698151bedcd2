package data

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// wantCIFAR checks that s holds the records made by cifarRecords from
// record first on.
func wantCIFAR(t *testing.T, s Set, l cifarLayout, first, n int) {
	t.Helper()
	if s.Len() != n {
		t.Fatalf("%d samples, want %d", s.Len(), n)
	}
	imgs, labels := collect(t, s)
	for k, img := range imgs {
		i := first + k
		if img.C != 3 || img.H != 32 || img.W != 32 {
			t.Fatalf("sample %d has shape %dx%dx%d, want 3x32x32", k, img.C, img.H, img.W)
		}
		want := make([]float32, cifarPixels)
		for p := range want {
			want[p] = float32(byte(i+5*p)) / 255
		}
		checkFloats(t, "sample "+strconv.Itoa(k), img.Pix, want, exact)
		if labels[k] != i*7%l.numLabels {
			t.Errorf("sample %d: label %d, want %d", k, labels[k], i*7%l.numLabels)
		}
	}
}

// TestCIFAR10ReadBack writes CIFAR-10 batches and reads them back.
func TestCIFAR10ReadBack(t *testing.T) {
	for _, sub := range []string{"", cifar10Subdir} {
		t.Run("sub="+sub, func(t *testing.T) {
			top := t.TempDir()
			dir := filepath.Join(top, sub)
			for k := 1; k <= 5; k++ {
				writeFile(t, filepath.Join(dir, fmt.Sprintf("data_batch_%d.bin", k)), cifarRecords(3, cifar10Layout, 3*(k-1)), false)
			}
			writeFile(t, filepath.Join(dir, cifar10Test), cifarRecords(4, cifar10Layout, 100), false)
			if f, err := Detect(top); err != nil || f != FormatCIFAR10 {
				t.Fatalf("Detect = %q, %v; want cifar10", f, err)
			}
			for _, format := range []Format{"", FormatCIFAR10} {
				train, err := Open(top, OpenOptions{Format: format})
				if err != nil {
					t.Fatal(err)
				}
				wantCIFAR(t, train, cifar10Layout, 0, 15)
				if !slices.Equal(train.Classes(), cifar10Classes) {
					t.Errorf("classes %q", train.Classes())
				}
				test, err := Open(top, OpenOptions{Format: format, Split: SplitTest})
				if err != nil {
					t.Fatal(err)
				}
				wantCIFAR(t, test, cifar10Layout, 100, 4)
			}
			all, err := Open(top, OpenOptions{Split: SplitAll})
			if err != nil {
				t.Fatal(err)
			}
			if all.Len() != 19 {
				t.Errorf("all: %d samples, want 19", all.Len())
			}
			if _, y, err := all.Image(15); err != nil || y != 100*7%10 {
				t.Errorf("all: sample 15 has label %d (%v), want the first test label", y, err)
			}
		})
	}
}

// TestCIFAR100ReadBack writes CIFAR-100 files and reads them back, with
// class names from fine_label_names.txt.
func TestCIFAR100ReadBack(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, cifar100Train), cifarRecords(30, cifar100Layout, 0), false)
	writeFile(t, filepath.Join(dir, cifar100Test), cifarRecords(5, cifar100Layout, 50), false)
	if f, err := Detect(dir); err != nil || f != FormatCIFAR100 {
		t.Fatalf("Detect = %q, %v; want cifar100", f, err)
	}
	train, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantCIFAR(t, train, cifar100Layout, 0, 30)
	if len(train.Classes()) != 100 || train.Classes()[99] != "worm" {
		t.Errorf("default classes: %d, last %q", len(train.Classes()), train.Classes()[len(train.Classes())-1])
	}
	test, err := Open(dir, OpenOptions{Split: SplitTest})
	if err != nil {
		t.Fatal(err)
	}
	wantCIFAR(t, test, cifar100Layout, 50, 5)

	var names []byte
	for k := range 100 {
		names = fmt.Appendf(names, "class%03d\n", k)
	}
	writeFile(t, filepath.Join(dir, cifar100Meta), names, false)
	train, err = Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := train.Classes(); got[0] != "class000" || got[99] != "class099" {
		t.Errorf("classes from %s: %q ... %q", cifar100Meta, got[0], got[99])
	}
}

// TestCIFARErrors checks that malformed CIFAR files give errors naming the
// file.
func TestCIFARErrors(t *testing.T) {
	tests := []struct {
		name   string
		layout cifarLayout
		files  map[string][]byte
		bad    string // the file the error names
		want   string
	}{
		{"truncated record", cifar10Layout, map[string][]byte{"data_batch_1.bin": cifarRecords(2, cifar10Layout, 0)[:5000]}, "data_batch_1.bin", "not a whole number of 3073-byte records"},
		{"empty batch", cifar10Layout, map[string][]byte{"data_batch_1.bin": {}}, "data_batch_1.bin", "empty"},
		{"label out of range", cifar10Layout, map[string][]byte{"data_batch_1.bin": append([]byte{10}, make([]byte, cifarPixels)...)}, "data_batch_1.bin", "label 10 is out of range"},
		{"gap in batches", cifar10Layout, map[string][]byte{"data_batch_1.bin": cifarRecords(1, cifar10Layout, 0), "data_batch_3.bin": cifarRecords(1, cifar10Layout, 0)}, ".", "data_batch_3.bin is there but data_batch_2.bin is missing"},
		{"meta with 9 names", cifar10Layout, map[string][]byte{"data_batch_1.bin": cifarRecords(1, cifar10Layout, 0), cifar10Meta: []byte("a\nb\nc\nd\ne\nf\ng\nh\ni\n\n")}, cifar10Meta, "9 class names, want 10"},
		{"test truncated", cifar10Layout, map[string][]byte{cifar10Test: make([]byte, 3074)}, cifar10Test, "1 bytes over"},
		{"fine label out of range", cifar100Layout, map[string][]byte{cifar100Train: append([]byte{0, 100}, make([]byte, cifarPixels)...)}, cifar100Train, "label 100 is out of range"},
		{"coarse label out of range", cifar100Layout, map[string][]byte{cifar100Train: append([]byte{20, 1}, make([]byte, cifarPixels)...)}, cifar100Train, "coarse label 20"},
		{"cifar10 records as cifar100", cifar100Layout, map[string][]byte{cifar100Train: cifarRecords(3, cifar10Layout, 0)}, cifar100Train, "3074-byte records"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range tc.files {
				writeFile(t, filepath.Join(dir, name), b, false)
			}
			split := SplitTrain
			if _, ok := tc.files[cifar10Test]; ok {
				split = SplitTest
			}
			_, err := Open(dir, OpenOptions{Split: split})
			wantErrNaming(t, err, filepath.Join(dir, tc.bad), tc.want)
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, "data_batch_1.bin")
		writeFile(t, p, cifarRecords(1, cifar10Layout, 0), false)
		if err := os.Chmod(p, 0); err != nil {
			t.Skip(err)
		}
		if f, err := os.Open(p); err == nil { // root reads anything
			f.Close()
			t.Skip("files stay readable for this user")
		}
		_, err := Open(dir, OpenOptions{})
		wantErrNaming(t, err, p)
	})
}
