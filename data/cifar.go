package data

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File names of the CIFAR binary versions.
const (
	cifar10TrainPattern = "data_batch_%d.bin"
	cifar10Batches      = 5
	cifar10Test         = "test_batch.bin"
	cifar10Meta         = "batches.meta.txt"
	cifar100Train       = "train.bin"
	cifar100Test        = "test.bin"
	cifar100Meta        = "fine_label_names.txt"
)

// CIFAR records: label byte(s), then 32x32 red, green and blue planes.
const (
	cifarSide   = 32
	cifarPixels = 3 * cifarSide * cifarSide
)

// cifarLayout describes the records of one CIFAR version.
type cifarLayout struct {
	record     int // bytes per record
	labelAt    int // offset of the label used (CIFAR-100: the fine label)
	numLabels  int
	coarseAt   int // offset of CIFAR-100's coarse label, or -1
	numCoarse  int
	defaultCls []string
}

var (
	cifar10Layout  = cifarLayout{record: 1 + cifarPixels, labelAt: 0, numLabels: 10, coarseAt: -1, defaultCls: cifar10Classes}
	cifar100Layout = cifarLayout{record: 2 + cifarPixels, labelAt: 1, numLabels: 100, coarseAt: 0, numCoarse: 20, defaultCls: cifar100Classes}
)

// parseCIFAR checks the content of a CIFAR batch file: a whole number of
// records with labels in range. It returns the number of records.
func parseCIFAR(b []byte, l cifarLayout) (int, error) {
	if len(b) == 0 {
		return 0, errors.New("empty batch file")
	}
	if len(b)%l.record != 0 {
		return 0, fmt.Errorf("truncated or padded: %d bytes are not a whole number of %d-byte records (%d records and %d bytes over)",
			len(b), l.record, len(b)/l.record, len(b)%l.record)
	}
	n := len(b) / l.record
	for i := range n {
		rec := b[i*l.record:]
		if y := int(rec[l.labelAt]); y >= l.numLabels {
			return 0, fmt.Errorf("record %d: label %d is out of range [0, %d)", i, y, l.numLabels)
		}
		if l.coarseAt >= 0 {
			if y := int(rec[l.coarseAt]); y >= l.numCoarse {
				return 0, fmt.Errorf("record %d: coarse label %d is out of range [0, %d)", i, y, l.numCoarse)
			}
		}
	}
	return n, nil
}

// cifarSource is a CIFAR-10 or CIFAR-100 data directory.
type cifarSource struct {
	dir     string
	layout  cifarLayout
	train   []string // batch files of the train split, in order
	test    string   // the test batch file, or empty
	classes []string
}

// newCIFAR10Source finds the batches of a CIFAR-10 directory: the train
// batches data_batch_1.bin onwards, without gaps, and test_batch.bin.
func newCIFAR10Source(dir string) (*cifarSource, error) {
	s := &cifarSource{dir: dir, layout: cifar10Layout}
	gap := 0
	for k := 1; k <= cifar10Batches; k++ {
		p := filepath.Join(dir, fmt.Sprintf(cifar10TrainPattern, k))
		if !isFile(p) {
			if gap == 0 {
				gap = k
			}
			continue
		}
		if gap != 0 {
			return nil, fmt.Errorf("opening %s: %s is there but "+cifar10TrainPattern+" is missing", dir, filepath.Base(p), gap)
		}
		s.train = append(s.train, p)
	}
	if p := filepath.Join(dir, cifar10Test); isFile(p) {
		s.test = p
	}
	if len(s.train) == 0 && s.test == "" {
		return nil, fmt.Errorf("opening %s: neither data_batch_1.bin nor %s is there", dir, cifar10Test)
	}
	var err error
	s.classes, err = cifarClasses(filepath.Join(dir, cifar10Meta), cifar10Layout)
	return s, err
}

// newCIFAR100Source finds the batches of a CIFAR-100 directory.
func newCIFAR100Source(dir string) (*cifarSource, error) {
	s := &cifarSource{dir: dir, layout: cifar100Layout}
	if p := filepath.Join(dir, cifar100Train); isFile(p) {
		s.train = []string{p}
	}
	if p := filepath.Join(dir, cifar100Test); isFile(p) {
		s.test = p
	}
	if len(s.train) == 0 && s.test == "" {
		return nil, fmt.Errorf("opening %s: neither %s nor %s is there", dir, cifar100Train, cifar100Test)
	}
	var err error
	s.classes, err = cifarClasses(filepath.Join(dir, cifar100Meta), cifar100Layout)
	return s, err
}

// cifarClasses returns the class names listed in the file at path, which must
// name every class, or the data set's usual names when there is no such
// file.
func cifarClasses(path string, l cifarLayout) ([]string, error) {
	names, err := readNames(path)
	switch {
	case errNotExist(err):
		return append([]string(nil), l.defaultCls...), nil
	case err != nil:
		return nil, err
	case len(names) != l.numLabels:
		return nil, fmt.Errorf("reading %s: %d class names, want %d", path, len(names), l.numLabels)
	}
	return names, nil
}

func (s *cifarSource) hasTrain() bool { return len(s.train) > 0 }
func (s *cifarSource) hasTest() bool  { return s.test != "" }
func (s *cifarSource) trainFiles() string {
	if s.layout.record == cifar10Layout.record {
		return "data_batch_1.bin is missing"
	}
	return cifar100Train + " is missing"
}
func (s *cifarSource) testFiles() string {
	if s.layout.record == cifar10Layout.record {
		return cifar10Test + " is missing"
	}
	return cifar100Test + " is missing"
}

// open reads the batch files of a split.
func (s *cifarSource) open(split Split) (Set, error) {
	files := s.train
	if split == SplitTest {
		files = []string{s.test}
	}
	var parts []Set
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		n, err := parseCIFAR(b, s.layout)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", p, err)
		}
		parts = append(parts, &cifarSet{layout: s.layout, data: b, n: n, classes: s.classes})
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	return newConcat(parts...)
}

// cifarSet is the records of one CIFAR batch file, held as bytes.
type cifarSet struct {
	layout  cifarLayout
	data    []byte
	n       int
	classes []string
}

func (s *cifarSet) Len() int          { return s.n }
func (s *cifarSet) Classes() []string { return s.classes }
func (s *cifarSet) label(i int) int   { return int(s.data[i*s.layout.record+s.layout.labelAt]) }

func (s *cifarSet) Image(i int) (Image, int, error) {
	if i < 0 || i >= s.n {
		return Image{}, 0, indexError(i, s.n)
	}
	rec := s.data[i*s.layout.record : (i+1)*s.layout.record]
	pix := make([]float32, cifarPixels)
	bytesToFloat(pix, rec[s.layout.record-cifarPixels:])
	return Image{C: 3, H: cifarSide, W: cifarSide, Pix: pix}, s.label(i), nil
}

// cifar10Classes are CIFAR-10's class names in label order.
var cifar10Classes = []string{"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}

// cifar100Classes are CIFAR-100's fine class names in label order.
var cifar100Classes = []string{
	"apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
	"bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
	"chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
	"dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
	"lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
	"mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
	"plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
	"rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
	"squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
	"train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
}
