package data

import (
	"errors"
	"fmt"
	"slices"
)

// Image is one decoded image: C channels of H rows of W float32 values in
// [0, 1], channel-major (CHW) in Pix.
type Image struct {
	C, H, W int
	Pix     []float32
}

// check reports whether img is a well-formed image of 1 or 3 channels.
func (img Image) check() error {
	if img.C != 1 && img.C != 3 {
		return fmt.Errorf("image has %d channels; 1 or 3 are supported", img.C)
	}
	if img.H <= 0 || img.W <= 0 {
		return fmt.Errorf("image is %dx%d; height and width must be positive", img.H, img.W)
	}
	if len(img.Pix) != img.C*img.H*img.W {
		return fmt.Errorf("image of shape %dx%dx%d holds %d values, want %d", img.C, img.H, img.W, len(img.Pix), img.C*img.H*img.W)
	}
	return nil
}

// Set is a labelled image data set. Samples are decoded when asked for
// where the format allows (idx and CIFAR files are read into memory as bytes
// and converted to float32 per sample; image files are read and decoded per
// sample). Every Set of this package is safe for concurrent use.
type Set interface {
	// Len returns the number of samples.
	Len() int
	// Classes returns the class names in label order; labels are indices
	// into it. The caller must not modify the slice.
	Classes() []string
	// Image returns sample i, 0 <= i < Len(), decoded at its native size
	// (1 or 3 channels, values in [0, 1]), and its label.
	Image(i int) (Image, int, error)
}

// labeler is implemented by the sets of this package: it returns the label
// of sample i without decoding the image.
type labeler interface {
	label(i int) int
}

// labelOf returns the label of sample i of s, decoding the image only when s
// cannot say otherwise.
func labelOf(s Set, i int) (int, error) {
	if l, ok := s.(labeler); ok {
		return l.label(i), nil
	}
	_, y, err := s.Image(i)
	return y, err
}

// indexError is the error of a sample index out of range.
func indexError(i, n int) error {
	return fmt.Errorf("sample %d is out of range [0, %d)", i, n)
}

// subset is the samples of base at the given indices, in that order.
type subset struct {
	base    Set
	indices []int
}

func (s *subset) Len() int          { return len(s.indices) }
func (s *subset) Classes() []string { return s.base.Classes() }

func (s *subset) Image(i int) (Image, int, error) {
	if i < 0 || i >= len(s.indices) {
		return Image{}, 0, indexError(i, len(s.indices))
	}
	return s.base.Image(s.indices[i])
}

func (s *subset) label(i int) int {
	y, err := labelOf(s.base, s.indices[i])
	if err != nil {
		return -1
	}
	return y
}

// concat is the samples of its parts one after the other. The parts share
// their class names.
type concat struct {
	parts  []Set
	starts []int // starts[k] is the index of the first sample of parts[k]; one more entry holds the total
}

// newConcat joins parts, which must have the same class names.
func newConcat(parts ...Set) (*concat, error) {
	c := &concat{parts: parts, starts: []int{0}}
	for k, p := range parts {
		if k > 0 && !slices.Equal(p.Classes(), parts[0].Classes()) {
			return nil, errors.New("the splits have different class names")
		}
		c.starts = append(c.starts, c.starts[k]+p.Len())
	}
	return c, nil
}

func (c *concat) Len() int { return c.starts[len(c.parts)] }

func (c *concat) Classes() []string {
	if len(c.parts) == 0 {
		return nil
	}
	return c.parts[0].Classes()
}

// locate returns the part holding sample i and the index within it.
func (c *concat) locate(i int) (Set, int) {
	k, found := slices.BinarySearch(c.starts, i)
	if !found {
		k--
	}
	for c.starts[k+1] == c.starts[k] { // skip empty parts
		k++
	}
	return c.parts[k], i - c.starts[k]
}

func (c *concat) Image(i int) (Image, int, error) {
	if i < 0 || i >= c.Len() {
		return Image{}, 0, indexError(i, c.Len())
	}
	p, j := c.locate(i)
	return p.Image(j)
}

func (c *concat) label(i int) int {
	p, j := c.locate(i)
	y, err := labelOf(p, j)
	if err != nil {
		return -1
	}
	return y
}

// holdOut splits the samples of s into a kept part and a held-out part of
// frac of every class (rounded to the nearest sample, but never a class's
// last sample), chosen at random from seed: stratified, so each class keeps
// its share in both parts. Both parts list indices into s in
// increasing order.
func holdOut(s Set, frac float64, seed uint64) (kept, held []int, err error) {
	byClass := map[int][]int{}
	var labels []int
	for i := range s.Len() {
		y, err := labelOf(s, i)
		if err != nil {
			return nil, nil, err
		}
		if _, ok := byClass[y]; !ok {
			labels = append(labels, y)
		}
		byClass[y] = append(byClass[y], i)
	}
	slices.Sort(labels)
	isHeld := make([]bool, s.Len())
	for _, y := range labels {
		idx := byClass[y]
		r := newRNG(seed, streamHoldOut, uint64(y))
		r.shuffle(idx)
		n := min(int(frac*float64(len(idx))+0.5), len(idx)-1) // keep one for training
		for _, i := range idx[:n] {
			isHeld[i] = true
		}
	}
	for i, h := range isHeld {
		if h {
			held = append(held, i)
		} else {
			kept = append(kept, i)
		}
	}
	return kept, held, nil
}
