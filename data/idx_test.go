package data

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// TestIDXReadBack writes idx files, raw and gzipped, and reads every split
// back with exact pixel values and labels.
func TestIDXReadBack(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run("gz="+strconv.FormatBool(gz), func(t *testing.T) {
			dir := t.TempDir()
			train, test := writeIDXDir(t, dir, 23, 7, 5, 4, gz)
			if f, err := Detect(dir); err != nil || f != FormatIDX {
				t.Fatalf("Detect = %q, %v; want idx", f, err)
			}
			for _, tc := range []struct {
				split Split
				fix   []idxFixture
			}{
				{SplitTrain, []idxFixture{train}},
				{SplitTest, []idxFixture{test}},
				{SplitAll, []idxFixture{train, test}},
			} {
				s, err := Open(dir, OpenOptions{Split: tc.split})
				if err != nil {
					t.Fatalf("split %s: %v", tc.split, err)
				}
				if want := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}; !slices.Equal(s.Classes(), want) {
					t.Errorf("classes %q, want %q", s.Classes(), want)
				}
				var wantPix []byte
				var wantLabels []byte
				for _, f := range tc.fix {
					wantPix = append(wantPix, f.images()...)
					wantLabels = append(wantLabels, f.labels()...)
				}
				if s.Len() != len(wantLabels) {
					t.Fatalf("split %s: %d samples, want %d", tc.split, s.Len(), len(wantLabels))
				}
				imgs, labels := collect(t, s)
				for i, img := range imgs {
					if img.C != 1 || img.H != 5 || img.W != 4 {
						t.Fatalf("sample %d has shape %dx%dx%d, want 1x5x4", i, img.C, img.H, img.W)
					}
					want := make([]float32, 20)
					for p := range want {
						want[p] = float32(wantPix[i*20+p]) / 255
					}
					checkFloats(t, "split "+string(tc.split)+" sample "+strconv.Itoa(i), img.Pix, want, exact)
					if labels[i] != int(wantLabels[i]) {
						t.Errorf("split %s sample %d: label %d, want %d", tc.split, i, labels[i], wantLabels[i])
					}
				}
				if _, _, err := s.Image(s.Len()); err == nil {
					t.Errorf("split %s: Image(Len()) gave no error", tc.split)
				}
			}
		})
	}
}

// TestIDXClassNames checks the sources of idx class names.
func TestIDXClassNames(t *testing.T) {
	t.Run("classes.txt", func(t *testing.T) {
		dir := t.TempDir()
		writeIDXDir(t, dir, 12, 3, 2, 2, false)
		names := "zero\none\n\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\n"
		writeFile(t, filepath.Join(dir, "classes.txt"), []byte(names), false)
		s, err := Open(dir, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Classes(); len(got) != 11 || got[2] != "two" || got[10] != "ten" {
			t.Errorf("classes %q", got)
		}
	})
	t.Run("too few names", func(t *testing.T) {
		dir := t.TempDir()
		writeIDXDir(t, dir, 12, 3, 2, 2, false)
		path := filepath.Join(dir, "classes.txt")
		writeFile(t, path, []byte("a\nb\n"), false)
		_, err := Open(dir, OpenOptions{})
		wantErrNaming(t, err, path, "2 class names")
	})
	t.Run("fashion", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "Fashion-MNIST")
		writeIDXDir(t, dir, 12, 3, 2, 2, true)
		s, err := Open(dir, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Classes(); !slices.Equal(got, fashionClasses) {
			t.Errorf("classes %q, want Fashion-MNIST's", got)
		}
	})
	t.Run("labels past 9", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, idxTrainImages), idxBytes([]int{2, 1, 1}, []byte{1, 2}), false)
		writeFile(t, filepath.Join(dir, idxTrainLabels), idxBytes([]int{2}, []byte{3, 14}), false)
		s, err := Open(dir, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(s.Classes()); n != 15 {
			t.Errorf("%d classes, want 15", n)
		}
		if _, err := Open(dir, OpenOptions{Split: SplitTest}); err == nil {
			t.Error("the test split of a directory without t10k files opened")
		}
		if has, err := HasTestSplit(dir, ""); err != nil || has {
			t.Errorf("HasTestSplit = %v, %v; want false", has, err)
		}
	})
}

// TestIDXErrors checks that malformed idx files give errors naming the file.
func TestIDXErrors(t *testing.T) {
	good := idxFixture{n: 4, h: 3, w: 2}
	img := idxBytes([]int{4, 3, 2}, good.images())
	lbl := idxBytes([]int{4}, good.labels())
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name     string
		file     string // the file replaced
		content  []byte
		wantText string
	}{
		{"wrong magic", idxTrainImages, append([]byte{1, 2, 3, 4}, img[4:]...), "not an idx magic number"},
		{"labels as images", idxTrainImages, lbl, "1 dimensions, want 3"},
		{"images as labels", idxTrainLabels, img, "3 dimensions, want 1"},
		{"int data type", idxTrainImages, append([]byte{0, 0, 0x0c, 3}, img[4:]...), "data type 0x0c"},
		{"short header", idxTrainImages, img[:10], "shorter than its 16-byte header"},
		{"tiny file", idxTrainImages, img[:2], "shorter than the idx header"},
		{"truncated data", idxTrainImages, img[:len(img)-1], "truncated"},
		{"trailing data", idxTrainImages, append(append([]byte(nil), img...), 9), "1 trailing bytes"},
		{"huge header", idxTrainImages, idxBytes([]int{1 << 30, 1 << 20, 1 << 20}, nil), "more than"},
		{"zero rows", idxTrainImages, idxBytes([]int{4, 0, 2}, nil), "dimension 1 is 0"},
		{"count mismatch", idxTrainLabels, idxBytes([]int{3}, []byte{1, 2, 3}), "holds 4 images but"},
		{"gz truncated", idxTrainImages + ".gz", gz(img)[:30], "reading"},
		{"gz huge header", idxTrainImages + ".gz", gz(idxBytes([]int{1 << 30, 1 << 20, 1 << 20}, nil)), "more than"},
		{"gz short header", idxTrainImages + ".gz", gz(img[:9]), "shorter than"},
		{"gz trailing", idxTrainImages + ".gz", gz(append(append([]byte(nil), img...), 1, 2)), "trailing data"},
		{"gz corrupt", idxTrainImages + ".gz", append([]byte{0x1f, 0x8b}, bytes.Repeat([]byte{0xff}, 40)...), "gzip"},
		{"label out of classes", idxTrainLabels, idxBytes([]int{4}, []byte{1, 2, 3, 200}), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, idxTrainImages), img, false)
			writeFile(t, filepath.Join(dir, idxTrainLabels), lbl, false)
			if filepath.Ext(tc.file) == ".gz" {
				os.Remove(filepath.Join(dir, tc.file[:len(tc.file)-3]))
			}
			path := filepath.Join(dir, tc.file)
			writeFile(t, path, tc.content, false)
			s, err := Open(dir, OpenOptions{})
			if tc.wantText == "" { // accepted: 201 classes
				if err != nil || len(s.Classes()) != 201 {
					t.Fatalf("Open: %v; want 201 classes", err)
				}
				return
			}
			if tc.name == "count mismatch" {
				wantErrNaming(t, err, dir, idxTrainImages, idxTrainLabels, tc.wantText)
				return
			}
			wantErrNaming(t, err, path, tc.wantText)
		})
	}
	t.Run("missing labels", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, idxTrainImages), img, false)
		_, err := Open(dir, OpenOptions{})
		wantErrNaming(t, err, dir, idxTrainLabels)
	})
}
