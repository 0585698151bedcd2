package data

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Format is the layout of a data directory.
type Format string

// The formats Open reads.
const (
	// FormatIDX is MNIST-style idx files: train-images-idx3-ubyte,
	// train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
	// t10k-labels-idx1-ubyte, each raw or gzipped (a .gz suffix).
	FormatIDX Format = "idx"
	// FormatCIFAR10 is the CIFAR-10 binary version: data_batch_1.bin to
	// data_batch_5.bin and test_batch.bin.
	FormatCIFAR10 Format = "cifar10"
	// FormatCIFAR100 is the CIFAR-100 binary version: train.bin and
	// test.bin.
	FormatCIFAR100 Format = "cifar100"
	// FormatImageFolder is a tree of class directories of PNG and JPEG
	// files, either DIR/CLASS/... or DIR/train/CLASS/... and
	// DIR/test/CLASS/....
	FormatImageFolder Format = "imagefolder"
	// FormatSynthetic is the generated data set; its directory is the word
	// "synthetic".
	FormatSynthetic Format = "synthetic"
)

// Formats returns every format, in the order Detect tries them.
func Formats() []Format {
	return []Format{FormatIDX, FormatCIFAR10, FormatCIFAR100, FormatImageFolder, FormatSynthetic}
}

// valid reports whether f is one of Formats.
func (f Format) valid() bool {
	for _, g := range Formats() {
		if f == g {
			return true
		}
	}
	return false
}

// formatList is Formats as a comma-separated list for error messages.
func formatList() string {
	var names []string
	for _, f := range Formats() {
		names = append(names, string(f))
	}
	return strings.Join(names, ", ")
}

// SyntheticName is the word that stands for the generated data set where a
// directory is expected.
const SyntheticName = "synthetic"

// Sub-directories that the CIFAR archives unpack to; Detect and Open look
// inside them when the directory itself holds no batches.
const (
	cifar10Subdir  = "cifar-10-batches-bin"
	cifar100Subdir = "cifar-100-binary"
)

// Detect returns the format of the data directory dir: FormatSynthetic for
// the word "synthetic", else the first of FormatIDX, FormatCIFAR10,
// FormatCIFAR100 and FormatImageFolder whose files dir holds (see the
// package documentation for what each looks for). The error names what it
// looked for when dir holds none of them.
func Detect(dir string) (Format, error) {
	f, _, err := detect(dir)
	return f, err
}

// detect is Detect that also returns the directory holding the files, which
// is dir or, for CIFAR, the sub-directory the archive unpacks to.
func detect(dir string) (Format, string, error) {
	if dir == SyntheticName {
		return FormatSynthetic, dir, nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return "", "", fmt.Errorf("detecting the format of %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return "", "", fmt.Errorf("detecting the format of %s: not a directory", dir)
	}
	if _, ok := findIDX(dir, idxTrainImages); ok {
		return FormatIDX, dir, nil
	}
	if _, ok := findIDX(dir, idxTestImages); ok {
		return FormatIDX, dir, nil
	}
	for _, d := range []string{dir, filepath.Join(dir, cifar10Subdir)} {
		if isFile(filepath.Join(d, "data_batch_1.bin")) || isFile(filepath.Join(d, cifar10Test)) {
			return FormatCIFAR10, d, nil
		}
	}
	for _, d := range []string{dir, filepath.Join(dir, cifar100Subdir)} {
		if isFile(filepath.Join(d, cifar100Train)) || isFile(filepath.Join(d, cifar100Test)) {
			return FormatCIFAR100, d, nil
		}
	}
	if hasImageTree(dir) {
		return FormatImageFolder, dir, nil
	}
	return "", "", fmt.Errorf("detecting the format of %s: found none of: idx files (%s[.gz] or %s[.gz]); "+
		"CIFAR-10 batches (data_batch_1.bin or %s, also under %s/); CIFAR-100 batches (%s or %s, also under %s/); "+
		"an image folder (class sub-directories holding .png, .jpg or .jpeg files, optionally under train/ and test/)",
		dir, idxTrainImages, idxTestImages, cifar10Test, cifar10Subdir, cifar100Train, cifar100Test, cifar100Subdir)
}

// isFile reports whether path names a regular file (following links).
func isFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// isDir reports whether path names a directory (following links).
func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// Split names a part of a data set.
type Split string

// The splits Open returns.
const (
	SplitTrain Split = "train" // the training samples
	SplitTest  Split = "test"  // the test samples, or those held out of the train split
	SplitAll   Split = "all"   // train then test
)

// OpenOptions says what Open reads.
type OpenOptions struct {
	// Format is the data directory's format; empty means Detect it.
	Format Format
	// Split is the part to return; empty means SplitTrain.
	Split Split
	// ValSplit, when positive (and below 1), holds out that fraction of
	// the train data, class by class (rounded, and never the last sample
	// of a class), chosen from Seed: SplitTest returns
	// the held-out samples and SplitTrain the rest. For data without a
	// test split this is the only way to get one. For data with a test
	// split, the held-out part replaces it (the data set's own test split
	// is then read with ValSplit 0). SplitAll takes no ValSplit.
	ValSplit float64
	// Seed chooses the held-out samples.
	Seed uint64
	// Synthetic configures FormatSynthetic.
	Synthetic SyntheticOptions
}

// Open opens the data directory dir (or the word "synthetic") and returns
// the requested split. Files are checked when opened: a missing, truncated
// or malformed file is an error naming it. Image files of FormatImageFolder
// are only listed; each is decoded by Set.Image.
func Open(dir string, opts OpenOptions) (Set, error) {
	format, root := opts.Format, dir
	if format == "" {
		var err error
		if format, root, err = detect(dir); err != nil {
			return nil, err
		}
	} else if !format.valid() {
		return nil, fmt.Errorf("opening %s: unknown format %q; known formats: %s", dir, format, formatList())
	} else if format == FormatCIFAR10 || format == FormatCIFAR100 {
		root = cifarRoot(dir, format)
	}
	split := opts.Split
	if split == "" {
		split = SplitTrain
	}
	if split != SplitTrain && split != SplitTest && split != SplitAll {
		return nil, fmt.Errorf("opening %s: unknown split %q; known splits: train, test, all", dir, split)
	}
	if opts.ValSplit < 0 || opts.ValSplit >= 1 {
		return nil, fmt.Errorf("opening %s: validation fraction %g is outside [0, 1)", dir, opts.ValSplit)
	}
	if opts.ValSplit > 0 && split == SplitAll {
		return nil, fmt.Errorf("opening %s: the split all takes no validation fraction (got %g)", dir, opts.ValSplit)
	}
	src, err := openSource(root, format, opts.Synthetic)
	if err != nil {
		return nil, err
	}
	if opts.ValSplit > 0 {
		if !src.hasTrain() {
			return nil, fmt.Errorf("opening %s: no train split to hold a validation fraction out of", dir)
		}
		train, err := src.open(SplitTrain)
		if err != nil {
			return nil, err
		}
		kept, held, err := holdOut(train, opts.ValSplit, opts.Seed)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", dir, err)
		}
		if split == SplitTest {
			return &subset{base: train, indices: held}, nil
		}
		return &subset{base: train, indices: kept}, nil
	}
	switch split {
	case SplitTrain:
		if !src.hasTrain() {
			return nil, fmt.Errorf("opening %s: no train split (%s)", dir, src.trainFiles())
		}
	case SplitTest:
		if !src.hasTest() {
			return nil, fmt.Errorf("opening %s: no test split (%s); a validation fraction holds one out of the train split", dir, src.testFiles())
		}
	case SplitAll:
		var parts []Set
		for _, sp := range []Split{SplitTrain, SplitTest} {
			if (sp == SplitTrain && !src.hasTrain()) || (sp == SplitTest && !src.hasTest()) {
				continue
			}
			s, err := src.open(sp)
			if err != nil {
				return nil, err
			}
			parts = append(parts, s)
		}
		c, err := newConcat(parts...)
		if err != nil {
			return nil, fmt.Errorf("opening %s: %w", dir, err)
		}
		return c, nil
	}
	return src.open(split)
}

// HasTestSplit reports whether the data directory dir (in the given format;
// empty means Detect it) has a test split of its own. Data without one needs
// OpenOptions.ValSplit to get a test split.
func HasTestSplit(dir string, format Format) (bool, error) {
	root := dir
	if format == "" {
		var err error
		if format, root, err = detect(dir); err != nil {
			return false, err
		}
	} else if !format.valid() {
		return false, fmt.Errorf("opening %s: unknown format %q; known formats: %s", dir, format, formatList())
	} else if format == FormatCIFAR10 || format == FormatCIFAR100 {
		root = cifarRoot(dir, format)
	}
	src, err := openSource(root, format, SyntheticOptions{})
	if err != nil {
		return false, err
	}
	return src.hasTest(), nil
}

// source is a data directory of one format, its files found but not yet
// read.
type source interface {
	hasTrain() bool
	hasTest() bool
	trainFiles() string // what the train split is read from, for messages
	testFiles() string
	open(split Split) (Set, error) // SplitTrain or SplitTest
}

// openSource finds the files of a data directory.
func openSource(dir string, format Format, syn SyntheticOptions) (source, error) {
	switch format {
	case FormatIDX:
		return newIDXSource(dir)
	case FormatCIFAR10:
		return newCIFAR10Source(dir)
	case FormatCIFAR100:
		return newCIFAR100Source(dir)
	case FormatImageFolder:
		return newFolderSource(dir)
	case FormatSynthetic:
		if _, err := syn.withDefaults(); err != nil {
			return nil, err
		}
		return syntheticSource{syn}, nil
	}
	return nil, fmt.Errorf("opening %s: unknown format %q; known formats: %s", dir, format, formatList())
}

// syntheticSource is the source of FormatSynthetic.
type syntheticSource struct{ opts SyntheticOptions }

func (s syntheticSource) hasTrain() bool     { return true }
func (s syntheticSource) hasTest() bool      { return true }
func (s syntheticSource) trainFiles() string { return "generated" }
func (s syntheticSource) testFiles() string  { return "generated" }
func (s syntheticSource) open(split Split) (Set, error) {
	return newSynthetic(s.opts, split)
}

// cifarRoot returns dir, or the sub-directory a CIFAR archive unpacks to
// when dir holds no batches but that sub-directory exists.
func cifarRoot(dir string, format Format) string {
	sub, probe := cifar10Subdir, "data_batch_1.bin"
	if format == FormatCIFAR100 {
		sub, probe = cifar100Subdir, cifar100Train
	}
	if !isFile(filepath.Join(dir, probe)) && isDir(filepath.Join(dir, sub)) {
		return filepath.Join(dir, sub)
	}
	return dir
}

// errNotExist reports whether err says a file does not exist.
func errNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
