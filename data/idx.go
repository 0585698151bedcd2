package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Base names of the idx files; each may also carry a .gz suffix.
const (
	idxTrainImages = "train-images-idx3-ubyte"
	idxTrainLabels = "train-labels-idx1-ubyte"
	idxTestImages  = "t10k-images-idx3-ubyte"
	idxTestLabels  = "t10k-labels-idx1-ubyte"
	// idxClassNames optionally lists the class names, one a line.
	idxClassNames = "classes.txt"
)

// idxMinClasses is the number of classes an idx data set has at least.
const idxMinClasses = 10

// fashionClasses are Fashion-MNIST's class names in label order.
var fashionClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

// maxDeflateRatio bounds how many bytes a gzip stream of n bytes can
// decompress to (deflate's limit is 1032:1), to reject a header that claims
// more data than the file can hold before reading it.
const maxDeflateRatio = 1032

// findIDX returns the path of the idx file base in dir, raw preferred over
// gzipped, and whether one exists.
func findIDX(dir, base string) (string, bool) {
	for _, name := range []string{base, base + ".gz"} {
		if p := filepath.Join(dir, name); isFile(p) {
			return p, true
		}
	}
	return "", false
}

// idxArray is the content of one idx file of unsigned bytes.
type idxArray struct {
	dims []int
	data []byte
}

// parseIDXHeader checks the header at the start of b, the content of an
// uncompressed idx file of unsigned bytes with wantDims dimensions, and
// returns the dimensions and the number of data bytes they call for. It
// fails when they call for more than avail bytes.
func parseIDXHeader(b []byte, wantDims int, avail uint64) ([]int, uint64, error) {
	if len(b) < 4 {
		return nil, 0, fmt.Errorf("file of %d bytes is shorter than the idx header", len(b))
	}
	magic := binary.BigEndian.Uint32(b)
	if b[0] != 0 || b[1] != 0 {
		return nil, 0, fmt.Errorf("magic number 0x%08x is not an idx magic number, want 0x%08x", magic, 0x0800|wantDims)
	}
	if b[2] != 0x08 {
		return nil, 0, fmt.Errorf("magic number 0x%08x: data type 0x%02x is not supported (only unsigned bytes, 0x08)", magic, b[2])
	}
	if int(b[3]) != wantDims {
		return nil, 0, fmt.Errorf("magic number 0x%08x: %d dimensions, want %d (magic 0x%08x)", magic, b[3], wantDims, 0x0800|wantDims)
	}
	head := 4 + 4*wantDims
	if len(b) < head {
		return nil, 0, fmt.Errorf("file of %d bytes is shorter than its %d-byte header", len(b), head)
	}
	dims := make([]int, wantDims)
	size := uint64(1)
	for d := range dims {
		v := uint64(binary.BigEndian.Uint32(b[4+4*d:]))
		if d > 0 && v == 0 {
			return nil, 0, fmt.Errorf("header gives dimensions %s: dimension %d is 0", dimString(b[4:head]), d)
		}
		if v != 0 && size > avail/v {
			return nil, 0, fmt.Errorf("header gives dimensions %s, more than the %d bytes of data there can be", dimString(b[4:head]), avail)
		}
		size *= v
		dims[d] = int(v)
	}
	return dims, size, nil
}

// parseIDX parses the content of an uncompressed idx file of unsigned bytes
// with wantDims dimensions. The data must be exactly as long as the
// dimensions say.
func parseIDX(b []byte, wantDims int) (idxArray, error) {
	dims, size, err := parseIDXHeader(b, wantDims, math.MaxUint64)
	if err != nil {
		return idxArray{}, err
	}
	head := 4 + 4*wantDims
	switch got := uint64(len(b) - head); {
	case got < size:
		return idxArray{}, fmt.Errorf("truncated: dimensions %s need %d bytes of data, found %d", dimString(b[4:head]), size, got)
	case got > size:
		return idxArray{}, fmt.Errorf("dimensions %s need %d bytes of data, found %d (%d trailing bytes)", dimString(b[4:head]), size, got, got-size)
	}
	return idxArray{dims: dims, data: b[head:]}, nil
}

// dimString formats the big-endian dimensions of an idx header as AxBxC.
func dimString(b []byte) string {
	var parts []string
	for i := 0; i+4 <= len(b); i += 4 {
		parts = append(parts, strconv.FormatUint(uint64(binary.BigEndian.Uint32(b[i:])), 10))
	}
	return strings.Join(parts, "x")
}

// readIDX reads an idx file, raw or gzipped (told apart by the gzip magic
// bytes, not the name), of size bytes from r, and parses it. It allocates no
// more than the file holds: a raw file is read whole (size bytes), a gzipped
// one as it decompresses, up to what its header claims.
func readIDX(r io.Reader, size int64, wantDims int) (idxArray, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(2)
	if len(magic) < 2 || magic[0] != 0x1f || magic[1] != 0x8b {
		b := make([]byte, size) // the file's own length
		if _, err := io.ReadFull(br, b); err != nil {
			return idxArray{}, err
		}
		return parseIDX(b, wantDims)
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		return idxArray{}, fmt.Errorf("gzip: %w", err)
	}
	head := 4 + 4*wantDims
	hb := make([]byte, head)
	if n, err := io.ReadFull(zr, hb); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			_, _, err := parseIDXHeader(hb[:n], wantDims, 0)
			return idxArray{}, err // the short header
		}
		return idxArray{}, fmt.Errorf("gzip: %w", err)
	}
	_, want, err := parseIDXHeader(hb, wantDims, uint64(size)*maxDeflateRatio)
	if err != nil {
		return idxArray{}, err
	}
	var buf bytes.Buffer
	buf.Write(hb)
	// One byte more than claimed reveals trailing data.
	if _, err := io.Copy(&buf, io.LimitReader(zr, int64(want)+1)); err != nil {
		return idxArray{}, fmt.Errorf("gzip: %w", err)
	}
	if uint64(buf.Len()) > uint64(head)+want {
		return idxArray{}, fmt.Errorf("dimensions %s need %d bytes of data, and trailing data follows them", dimString(hb[4:]), want)
	}
	return parseIDX(buf.Bytes(), wantDims)
}

// readIDXFile reads and parses the idx file at path.
func readIDXFile(path string, wantDims int) (idxArray, error) {
	f, err := os.Open(path)
	if err != nil {
		return idxArray{}, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return idxArray{}, fmt.Errorf("reading %s: %w", path, err)
	}
	a, err := readIDX(f, fi.Size(), wantDims)
	if err != nil {
		return idxArray{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return a, nil
}

// idxSource is an idx data directory.
type idxSource struct {
	dir                   string
	trainImg, trainLbl    string // paths, empty when missing
	testImg, testLbl      string
	classes               []string
	trainLabels, testLbls []byte
}

// newIDXSource finds the idx files of dir and reads the label files, which
// fix the number of classes for both splits.
func newIDXSource(dir string) (*idxSource, error) {
	s := &idxSource{dir: dir}
	s.trainImg, _ = findIDX(dir, idxTrainImages)
	s.trainLbl, _ = findIDX(dir, idxTrainLabels)
	s.testImg, _ = findIDX(dir, idxTestImages)
	s.testLbl, _ = findIDX(dir, idxTestLabels)
	var errs []error
	if s.trainImg == "" && s.testImg == "" {
		errs = append(errs, fmt.Errorf("opening %s: neither %s[.gz] nor %s[.gz] is there", dir, idxTrainImages, idxTestImages))
	}
	if s.trainImg != "" && s.trainLbl == "" {
		errs = append(errs, fmt.Errorf("opening %s: %s has no labels: %s[.gz] is missing", dir, filepath.Base(s.trainImg), idxTrainLabels))
	}
	if s.testImg != "" && s.testLbl == "" {
		errs = append(errs, fmt.Errorf("opening %s: %s has no labels: %s[.gz] is missing", dir, filepath.Base(s.testImg), idxTestLabels))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	maxLabel := -1
	for _, p := range []struct {
		path string
		dst  *[]byte
	}{{s.trainLbl, &s.trainLabels}, {s.testLbl, &s.testLbls}} {
		if p.path == "" {
			continue
		}
		a, err := readIDXFile(p.path, 1)
		if err != nil {
			return nil, err
		}
		*p.dst = a.data
		for _, y := range a.data {
			maxLabel = max(maxLabel, int(y))
		}
	}
	names, err := idxClasses(dir, maxLabel)
	if err != nil {
		return nil, err
	}
	s.classes = names
	return s, nil
}

// idxClasses returns the class names of an idx directory whose largest label
// is maxLabel: the lines of classes.txt when present, else Fashion-MNIST's
// names when the directory's path mentions "fashion" and there are 10
// classes, else the labels as decimal numbers. There are at least 10
// classes.
func idxClasses(dir string, maxLabel int) ([]string, error) {
	path := filepath.Join(dir, idxClassNames)
	names, err := readNames(path)
	switch {
	case err == nil:
		if len(names) <= maxLabel {
			return nil, fmt.Errorf("reading %s: %d class names, but the labels go up to %d", path, len(names), maxLabel)
		}
		return names, nil
	case !errNotExist(err):
		return nil, err
	}
	n := max(idxMinClasses, maxLabel+1)
	abs, _ := filepath.Abs(dir)
	if n == len(fashionClasses) && strings.Contains(strings.ToLower(abs), "fashion") {
		return append([]string(nil), fashionClasses...), nil
	}
	names = make([]string, n)
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	return names, nil
}

// readNames reads a file of names, one a line; blank lines are skipped and
// spaces around names trimmed. A file without names is an error.
func readNames(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errNotExist(err) {
			return nil, err
		}
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	var names []string
	for line := range strings.Lines(string(b)) {
		if name := strings.TrimSpace(line); name != "" {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("reading %s: no class names", path)
	}
	return names, nil
}

func (s *idxSource) hasTrain() bool { return s.trainImg != "" }
func (s *idxSource) hasTest() bool  { return s.testImg != "" }
func (s *idxSource) trainFiles() string {
	return idxTrainImages + "[.gz] is missing"
}
func (s *idxSource) testFiles() string {
	return idxTestImages + "[.gz] is missing"
}

// open reads the images of a split.
func (s *idxSource) open(split Split) (Set, error) {
	imgPath, lblPath, labels := s.trainImg, s.trainLbl, s.trainLabels
	if split == SplitTest {
		imgPath, lblPath, labels = s.testImg, s.testLbl, s.testLbls
	}
	a, err := readIDXFile(imgPath, 3)
	if err != nil {
		return nil, err
	}
	if a.dims[0] != len(labels) {
		return nil, fmt.Errorf("reading %s: %s holds %d images but %s holds %d labels",
			s.dir, filepath.Base(imgPath), a.dims[0], filepath.Base(lblPath), len(labels))
	}
	return &idxSet{h: a.dims[1], w: a.dims[2], pix: a.data, labels: labels, classes: s.classes}, nil
}

// idxSet is one split of an idx data set, held as bytes.
type idxSet struct {
	h, w    int
	pix     []byte // n images of h*w bytes
	labels  []byte
	classes []string
}

func (s *idxSet) Len() int          { return len(s.labels) }
func (s *idxSet) Classes() []string { return s.classes }
func (s *idxSet) label(i int) int   { return int(s.labels[i]) }

func (s *idxSet) Image(i int) (Image, int, error) {
	if i < 0 || i >= len(s.labels) {
		return Image{}, 0, indexError(i, len(s.labels))
	}
	n := s.h * s.w
	pix := make([]float32, n)
	bytesToFloat(pix, s.pix[i*n:(i+1)*n])
	return Image{C: 1, H: s.h, W: s.w, Pix: pix}, int(s.labels[i]), nil
}

// byteScale maps a byte to [0, 1].
var byteScale = func() (t [256]float32) {
	for i := range t {
		t[i] = float32(i) / 255
	}
	return t
}()

// bytesToFloat writes src/255 to dst.
func bytesToFloat(dst []float32, src []byte) {
	for i, b := range src {
		dst[i] = byteScale[b]
	}
}
