package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// maxImagePixels bounds the size of an image file Set.Image decodes
// (2^26 pixels, e.g. 8192x8192), so a small file claiming a huge size is
// refused before the decoder allocates for it.
const maxImagePixels = 1 << 26

// imageExt reports whether name has an image extension the image folder
// format reads (.png, .jpg, .jpeg, in any case).
func imageExt(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// hidden reports whether a file or directory name is hidden (starts with a
// dot).
func hidden(name string) bool { return strings.HasPrefix(name, ".") }

// hasImageTree reports whether dir looks like an image folder: a
// sub-directory (directly, or under train/ or test/) holds an image file.
func hasImageTree(dir string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || found {
			return fs.SkipDir
		}
		rel, _ := filepath.Rel(dir, path)
		depth := strings.Count(rel, string(filepath.Separator))
		if d.IsDir() {
			if path != dir && (hidden(d.Name()) || depth >= 3) {
				return fs.SkipDir
			}
			return nil
		}
		if depth >= 1 && imageExt(d.Name()) {
			found = true
			return fs.SkipAll
		}
		return nil
	})
	return found
}

// folderSource is an image folder: DIR/CLASS/... or DIR/train/CLASS/... and
// DIR/test/CLASS/....
type folderSource struct {
	dir         string
	split       bool   // the train/test layout
	train, test string // roots of the splits, empty when absent
	classes     []string
}

// newFolderSource finds the layout and classes of an image folder. In the
// train/test layout both splits must have the same class directories.
func newFolderSource(dir string) (*folderSource, error) {
	if !isDir(dir) {
		return nil, fmt.Errorf("opening %s: not a directory", dir)
	}
	s := &folderSource{dir: dir}
	trainDir, testDir := filepath.Join(dir, "train"), filepath.Join(dir, "test")
	if hasSubdirs(trainDir) || hasSubdirs(testDir) {
		s.split = true
		if isDir(trainDir) {
			s.train = trainDir
		}
		if isDir(testDir) {
			s.test = testDir
		}
	} else {
		s.train = dir
	}
	var trainCls, testCls []string
	var err error
	if s.train != "" {
		if trainCls, err = classDirs(s.train); err != nil {
			return nil, err
		}
	}
	if s.test != "" {
		if testCls, err = classDirs(s.test); err != nil {
			return nil, err
		}
	}
	if s.train != "" && s.test != "" && !slices.Equal(trainCls, testCls) {
		return nil, fmt.Errorf("opening %s: the class directories of %s and %s differ: %s", dir, s.train, s.test, classDiff(trainCls, testCls))
	}
	s.classes = trainCls
	if s.train == "" {
		s.classes = testCls
	}
	return s, nil
}

// hasSubdirs reports whether dir is a directory with a non-hidden
// sub-directory.
func hasSubdirs(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if !hidden(e.Name()) && isDir(filepath.Join(dir, e.Name())) {
			return true
		}
	}
	return false
}

// classDirs returns the names of the non-hidden sub-directories of root,
// sorted.
func classDirs(root string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", root, err)
	}
	var names []string
	for _, e := range entries {
		if !hidden(e.Name()) && isDir(filepath.Join(root, e.Name())) {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("reading %s: no class sub-directories", root)
	}
	slices.Sort(names)
	return names, nil
}

// classDiff describes how two sorted lists of class names differ.
func classDiff(a, b []string) string {
	var onlyA, onlyB []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			onlyA = append(onlyA, x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			onlyB = append(onlyB, x)
		}
	}
	var parts []string
	if len(onlyA) > 0 {
		parts = append(parts, "only in train: "+strings.Join(onlyA, ", "))
	}
	if len(onlyB) > 0 {
		parts = append(parts, "only in test: "+strings.Join(onlyB, ", "))
	}
	return strings.Join(parts, "; ")
}

func (s *folderSource) hasTrain() bool { return s.train != "" }
func (s *folderSource) hasTest() bool  { return s.test != "" }
func (s *folderSource) trainFiles() string {
	return "no train/ directory beside test/"
}
func (s *folderSource) testFiles() string {
	if s.split {
		return "no test/ directory beside train/"
	}
	return "no train/ and test/ directories"
}

// open lists the image files of a split: every .png, .jpg and .jpeg file
// under each class directory (sub-directories included, hidden ones
// skipped), in lexical order of path.
func (s *folderSource) open(split Split) (Set, error) {
	root := s.train
	if split == SplitTest {
		root = s.test
	}
	set := &folderSet{classes: s.classes}
	var errs []error
	for y, class := range s.classes {
		dir := filepath.Join(root, class)
		n := len(set.files)
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != dir && hidden(d.Name()) {
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if d.IsDir() || !imageExt(d.Name()) {
				return nil
			}
			set.files = append(set.files, path)
			set.labels = append(set.labels, y)
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("reading %s: %w", dir, err))
		} else if len(set.files) == n {
			errs = append(errs, fmt.Errorf("reading %s: class %q has no .png, .jpg or .jpeg files", dir, class))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return set, nil
}

// folderSet is one split of an image folder: a list of files, each decoded
// when asked for.
type folderSet struct {
	files   []string
	labels  []int
	classes []string
}

func (s *folderSet) Len() int          { return len(s.files) }
func (s *folderSet) Classes() []string { return s.classes }
func (s *folderSet) label(i int) int   { return s.labels[i] }

// Image reads and decodes the file of sample i: grayscale images (8 or 16
// bit) give one channel, all others three (alpha dropped after compositing
// onto black).
func (s *folderSet) Image(i int) (Image, int, error) {
	if i < 0 || i >= len(s.files) {
		return Image{}, 0, indexError(i, len(s.files))
	}
	path := s.files[i]
	img, err := decodeImageFile(path)
	if err != nil {
		return Image{}, 0, fmt.Errorf("reading %s: %w", path, err)
	}
	return img, s.labels[i], nil
}

// decodeImageFile reads and decodes a PNG or JPEG file (told apart by
// content, not name).
func decodeImageFile(path string) (Image, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Image{}, err
	}
	return decodeImage(b)
}

// decodeImage decodes a PNG or JPEG image held in b.
func decodeImage(b []byte) (Image, error) {
	var (
		decode       func([]byte) (image.Image, error)
		decodeConfig func([]byte) (image.Config, error)
	)
	switch {
	case bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")):
		decode = func(b []byte) (image.Image, error) { return png.Decode(bytes.NewReader(b)) }
		decodeConfig = func(b []byte) (image.Config, error) { return png.DecodeConfig(bytes.NewReader(b)) }
	case bytes.HasPrefix(b, []byte("\xff\xd8")):
		decode = func(b []byte) (image.Image, error) { return jpeg.Decode(bytes.NewReader(b)) }
		decodeConfig = func(b []byte) (image.Config, error) { return jpeg.DecodeConfig(bytes.NewReader(b)) }
	default:
		return Image{}, errors.New("not a PNG or JPEG file")
	}
	cfg, err := decodeConfig(b)
	if err != nil {
		return Image{}, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > maxImagePixels {
		return Image{}, fmt.Errorf("image size %dx%d is empty or over the %d pixels read", cfg.Width, cfg.Height, maxImagePixels)
	}
	m, err := decode(b)
	if err != nil {
		return Image{}, err
	}
	return fromImage(m), nil
}

// fromImage converts a decoded image to CHW float32 in [0, 1].
func fromImage(m image.Image) Image {
	r := m.Bounds()
	h, w := r.Dy(), r.Dx()
	switch m := m.(type) {
	case *image.Gray:
		pix := make([]float32, h*w)
		for y := range h {
			off := (y+r.Min.Y-m.Rect.Min.Y)*m.Stride + (r.Min.X - m.Rect.Min.X)
			bytesToFloat(pix[y*w:(y+1)*w], m.Pix[off:off+w])
		}
		return Image{C: 1, H: h, W: w, Pix: pix}
	case *image.Gray16:
		pix := make([]float32, h*w)
		for y := range h {
			for x := range w {
				pix[y*w+x] = float32(m.Gray16At(r.Min.X+x, r.Min.Y+y).Y) / 0xffff
			}
		}
		return Image{C: 1, H: h, W: w, Pix: pix}
	case *image.YCbCr:
		pix := make([]float32, 3*h*w)
		plane := h * w
		for y := range h {
			for x := range w {
				c := m.YCbCrAt(r.Min.X+x, r.Min.Y+y)
				cr, cg, cb := color.YCbCrToRGB(c.Y, c.Cb, c.Cr)
				pix[y*w+x] = byteScale[cr]
				pix[plane+y*w+x] = byteScale[cg]
				pix[2*plane+y*w+x] = byteScale[cb]
			}
		}
		return Image{C: 3, H: h, W: w, Pix: pix}
	}
	pix := make([]float32, 3*h*w)
	plane := h * w
	for y := range h {
		for x := range w {
			cr, cg, cb, _ := m.At(r.Min.X+x, r.Min.Y+y).RGBA() // alpha-premultiplied: composited onto black
			pix[y*w+x] = float32(cr) / 0xffff
			pix[plane+y*w+x] = float32(cg) / 0xffff
			pix[2*plane+y*w+x] = float32(cb) / 0xffff
		}
	}
	return Image{C: 3, H: h, W: w, Pix: pix}
}
