package data

import (
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"path/filepath"
	"slices"
	"testing"
)

// folderSample is one file of a test image folder and what it decodes to.
type folderSample struct {
	path string // relative to the split root
	data []byte
	c    int
	pix  []float32
	tol  tolerance
}

// folderSamples returns files of three classes (ants: gray PNG, bees: RGB
// PNG and 16-bit gray PNG, cats: RGB JPEG and gray JPEG), each 6x5, in the
// order Open lists them.
func folderSamples(t testing.TB, seed int) []folderSample {
	g, gf := grayPattern(6, 5, seed)
	rgb, rf := rgbPattern(6, 5, seed)
	g16 := image.NewGray16(image.Rect(0, 0, 5, 6))
	g16f := make([]float32, 30)
	for i := range 30 {
		v := uint16(1000*i + seed)
		g16.SetGray16(i%5, i/5, color.Gray16{Y: v})
		g16f[i] = float32(v) / 0xffff
	}
	gj, gjf := grayPattern(6, 5, seed+1)
	for i := range gj.Pix { // smooth for JPEG
		gj.Pix[i] = byte(100 + i)
		gjf[i] = float32(100+i) / 255
	}
	return []folderSample{
		{"ants/a1.png", pngBytes(t, g), 1, gf, exact},
		{"bees/b1.PNG", pngBytes(t, rgb), 3, rf, exact},
		{"bees/nested/b2.png", pngBytes(t, g16), 1, g16f, exact},
		{"cats/c1.jpeg", jpegBytes(t, rgb), 3, rf, jpegTol},
		{"cats/c2.jpg", jpegBytes(t, gj), 1, gjf, jpegTol},
	}
}

// writeFolder writes samples under root, with files Open must skip.
func writeFolder(t testing.TB, root string, samples []folderSample) {
	for _, s := range samples {
		writeFile(t, filepath.Join(root, s.path), s.data, false)
	}
	writeFile(t, filepath.Join(root, "ants", "notes.txt"), []byte("not an image"), false)
	writeFile(t, filepath.Join(root, "ants", ".hidden.png"), []byte("not read"), false)
	writeFile(t, filepath.Join(root, ".git", "x.png"), []byte("not a class"), false)
	writeFile(t, filepath.Join(root, "README.png"), []byte("top-level files are no samples"), false)
}

// checkFolder checks that s holds samples with labels ants 0, bees 1,
// cats 2.
func checkFolder(t *testing.T, s Set, samples []folderSample) {
	t.Helper()
	if want := []string{"ants", "bees", "cats"}; !slices.Equal(s.Classes(), want) {
		t.Errorf("classes %q, want %q", s.Classes(), want)
	}
	if s.Len() != len(samples) {
		t.Fatalf("%d samples, want %d", s.Len(), len(samples))
	}
	wantLabels := []int{0, 1, 1, 2, 2}
	for i, want := range samples {
		img, y, err := s.Image(i)
		if err != nil {
			t.Fatalf("%s: %v", want.path, err)
		}
		if img.C != want.c || img.H != 6 || img.W != 5 {
			t.Errorf("%s: shape %dx%dx%d, want %dx6x5", want.path, img.C, img.H, img.W, want.c)
			continue
		}
		checkFloats(t, want.path, img.Pix, want.pix, want.tol)
		if y != wantLabels[i] {
			t.Errorf("%s: label %d, want %d", want.path, y, wantLabels[i])
		}
	}
}

// TestImageFolderFlat reads a DIR/CLASS/ tree back.
func TestImageFolderFlat(t *testing.T) {
	dir := t.TempDir()
	samples := folderSamples(t, 10)
	writeFolder(t, dir, samples)
	if f, err := Detect(dir); err != nil || f != FormatImageFolder {
		t.Fatalf("Detect = %q, %v; want imagefolder", f, err)
	}
	s, err := Open(dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	checkFolder(t, s, samples)
	if has, err := HasTestSplit(dir, ""); err != nil || has {
		t.Errorf("HasTestSplit = %v, %v; want false", has, err)
	}
	_, err = Open(dir, OpenOptions{Split: SplitTest})
	wantErrNaming(t, err, dir, "no test split")
	all, err := Open(dir, OpenOptions{Split: SplitAll})
	if err != nil || all.Len() != len(samples) {
		t.Errorf("split all: %v", err)
	}
	// A validation fraction gives it a test split: half of each class of
	// 1, 2 and 2 files, rounded, leaving every class one file to train on.
	held, err := Open(dir, OpenOptions{Split: SplitTest, ValSplit: 0.5, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	kept, err := Open(dir, OpenOptions{Split: SplitTrain, ValSplit: 0.5, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if held.Len()+kept.Len() != len(samples) || held.Len() != 2 {
		t.Errorf("held out %d and kept %d of %d", held.Len(), kept.Len(), len(samples))
	}
}

// TestImageFolderSplit reads a DIR/train/CLASS/, DIR/test/CLASS/ tree back.
func TestImageFolderSplit(t *testing.T) {
	dir := t.TempDir()
	train, test := folderSamples(t, 10), folderSamples(t, 40)
	writeFolder(t, filepath.Join(dir, "train"), train)
	writeFolder(t, filepath.Join(dir, "test"), test)
	if f, err := Detect(dir); err != nil || f != FormatImageFolder {
		t.Fatalf("Detect = %q, %v; want imagefolder", f, err)
	}
	for _, tc := range []struct {
		split   Split
		samples []folderSample
	}{{SplitTrain, train}, {SplitTest, test}} {
		t.Run(string(tc.split), func(t *testing.T) {
			s, err := Open(dir, OpenOptions{Split: tc.split})
			if err != nil {
				t.Fatal(err)
			}
			checkFolder(t, s, tc.samples)
		})
	}
	all, err := Open(dir, OpenOptions{Split: SplitAll})
	if err != nil || all.Len() != 10 {
		t.Fatalf("split all: %d samples, %v", all.Len(), err)
	}
	if has, err := HasTestSplit(dir, FormatImageFolder); err != nil || !has {
		t.Errorf("HasTestSplit = %v, %v; want true", has, err)
	}
}

// pngOfSize returns a valid 1x1 PNG whose header claims w x h.
func pngOfSize(t testing.TB, w, h uint32) []byte {
	b := pngBytes(t, image.NewGray(image.Rect(0, 0, 1, 1)))
	// The IHDR chunk: length at 8, type at 12, data at 16, CRC after 13 bytes.
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// TestImageFolderErrors checks the errors of malformed image folders, each
// naming the file or directory at fault.
func TestImageFolderErrors(t *testing.T) {
	good := pngBytes(t, image.NewGray(image.Rect(0, 0, 2, 2)))
	t.Run("class mismatch", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "train", "a", "1.png"), good, false)
		writeFile(t, filepath.Join(dir, "train", "b", "1.png"), good, false)
		writeFile(t, filepath.Join(dir, "test", "a", "1.png"), good, false)
		writeFile(t, filepath.Join(dir, "test", "c", "1.png"), good, false)
		_, err := Open(dir, OpenOptions{})
		wantErrNaming(t, err, filepath.Join(dir, "train"), filepath.Join(dir, "test"), "only in train: b", "only in test: c")
	})
	t.Run("empty class", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "a", "1.png"), good, false)
		writeFile(t, filepath.Join(dir, "b", "x.txt"), good, false)
		_, err := Open(dir, OpenOptions{Format: FormatImageFolder})
		wantErrNaming(t, err, filepath.Join(dir, "b"), `class "b" has no`)
	})
	t.Run("no classes", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "1.png"), good, false)
		_, err := Open(dir, OpenOptions{Format: FormatImageFolder})
		wantErrNaming(t, err, dir, "no class sub-directories")
	})
	corrupt := []struct {
		name string
		data []byte
		want string
	}{
		{"truncated.png", good[:len(good)-15], "unexpected EOF"},
		{"garbage.png", []byte("hello, world"), "not a PNG or JPEG file"},
		{"truncated.jpg", jpegBytes(t, image.NewGray(image.Rect(0, 0, 8, 8)))[:40], "reading"},
		{"huge.png", pngOfSize(t, 1<<16, 1<<16), "over the"},
		{"bad-crc.png", func() []byte { b := append([]byte(nil), good...); b[20]++; return b }(), "checksum"},
	}
	for _, tc := range corrupt {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "a", tc.name)
			writeFile(t, path, tc.data, false)
			s, err := Open(dir, OpenOptions{})
			if err != nil {
				t.Fatalf("Open: %v (files are decoded when read)", err)
			}
			_, _, err = s.Image(0)
			wantErrNaming(t, err, path, tc.want)
			l, err := NewLoader(s, LoaderOptions{Batch: 1, Pre: Preprocess{C: 1, H: 2, W: 2}})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, err := range l.Epoch(0) {
				n++
				wantErrNaming(t, err, path, "sample 0")
			}
			if n != 1 {
				t.Errorf("the loader yielded %d times, want 1 (the error)", n)
			}
		})
	}
}

// TestImageFolderAlpha checks that alpha is composited onto black.
func TestImageFolderAlpha(t *testing.T) {
	m := image.NewNRGBA(image.Rect(0, 0, 2, 1))
	m.SetNRGBA(0, 0, color.NRGBA{R: 255, G: 100, B: 0, A: 255})
	m.SetNRGBA(1, 0, color.NRGBA{R: 255, G: 255, B: 255, A: 51})
	img, err := decodeImage(pngBytes(t, m))
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{1, 0.2, 100.0 / 255, 0.2, 0, 0.2}
	checkFloats(t, "pixels", img.Pix, want, bits16)
	if img.C != 3 {
		t.Errorf("%d channels, want 3", img.C)
	}
}
