package data

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// SyntheticOptions configures the generated data set of FormatSynthetic.
// Zero fields take the defaults shown.
type SyntheticOptions struct {
	Classes int    // number of classes (10); at least 2
	Train   int    // samples in the train split (6000)
	Test    int    // samples in the test split (1000)
	Shape   [3]int // C, H, W of every image (1, 28, 28); C is 1 or 3, H and W at least 8
	Seed    uint64 // selects the images; independent of OpenOptions.Seed
}

// Default values of SyntheticOptions.
const (
	DefaultSyntheticClasses = 10   // classes
	DefaultSyntheticTrain   = 6000 // train samples
	DefaultSyntheticTest    = 1000 // test samples
)

// withDefaults returns o with zero fields set to their defaults, or an error
// naming the first bad field.
func (o SyntheticOptions) withDefaults() (SyntheticOptions, error) {
	if o.Classes == 0 {
		o.Classes = DefaultSyntheticClasses
	}
	if o.Train == 0 {
		o.Train = DefaultSyntheticTrain
	}
	if o.Test == 0 {
		o.Test = DefaultSyntheticTest
	}
	if o.Shape == [3]int{} {
		o.Shape = [3]int{1, 28, 28}
	}
	var errs []error
	if o.Classes < 2 || o.Classes > 1000 {
		errs = append(errs, fmt.Errorf("synthetic data: %d classes; 2 to 1000 are supported", o.Classes))
	}
	if o.Train < 0 || o.Test < 0 {
		errs = append(errs, fmt.Errorf("synthetic data: negative split size (train %d, test %d)", o.Train, o.Test))
	}
	if c := o.Shape[0]; c != 1 && c != 3 {
		errs = append(errs, fmt.Errorf("synthetic data: %d channels; 1 or 3 are supported", c))
	}
	if h, w := o.Shape[1], o.Shape[2]; h < 8 || w < 8 || h > 4096 || w > 4096 {
		errs = append(errs, fmt.Errorf("synthetic data: size %dx%d; height and width must be 8 to 4096", h, w))
	}
	return o, errors.Join(errs...)
}

// synthetic is one split of the generated data set. Every sample is made
// when asked for, from (seed, split, index) alone.
type synthetic struct {
	opts    SyntheticOptions
	split   uint64 // 0 train, 1 test
	n       int
	classes []string
}

// newSynthetic returns the given split ("train" or "test") of the generated
// data set.
func newSynthetic(o SyntheticOptions, split Split) (*synthetic, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &synthetic{opts: o, n: o.Train}
	if split == SplitTest {
		s.split, s.n = 1, o.Test
	}
	for k := range o.Classes {
		s.classes = append(s.classes, "pattern"+strconv.Itoa(k))
	}
	return s, nil
}

func (s *synthetic) Len() int          { return s.n }
func (s *synthetic) Classes() []string { return s.classes }

// label spreads the classes evenly: sample i has label i mod Classes.
func (s *synthetic) label(i int) int { return i % s.opts.Classes }

// Image draws sample i. Class k of K is a bright bar on a dark background
// (two parallel bars for odd k) through a point near the centre, at
// orientation pi*k/K (jittered by a tenth of the spacing), of random length,
// width, brightness and position; over it lie a short fainter bar of random
// orientation and position, and pixel noise. For three channels the
// pattern is tinted by a random colour and the noise is drawn per channel.
// Values are clamped to [0, 1].
func (s *synthetic) Image(i int) (Image, int, error) {
	if i < 0 || i >= s.n {
		return Image{}, 0, indexError(i, s.n)
	}
	y := s.label(i)
	c, h, w := s.opts.Shape[0], s.opts.Shape[1], s.opts.Shape[2]
	r := newRNG(s.opts.Seed, streamSynthetic, s.split, uint64(i))
	k := float64(y)
	nk := float64(s.opts.Classes)
	size := float64(min(h, w))

	theta := math.Pi*k/nk + r.uniform(-0.1, 0.1)*math.Pi/nk
	bars := 1 + y%2
	gap := size * r.uniform(0.28, 0.34) // between the centres of two bars
	width := size * r.uniform(0.05, 0.07)
	half := size * r.uniform(0.32, 0.42) // half the length of a bar
	cx := float64(w-1)/2 + r.uniform(-synthShift, synthShift)*size
	cy := float64(h-1)/2 + r.uniform(-synthShift, synthShift)*size
	contrast := r.uniform(0.6, 1.0)
	bg := r.uniform(0, 0.15)
	// The distractor: a short, fainter bar of any orientation anywhere.
	bx, by := r.uniform(0, float64(w)), r.uniform(0, float64(h))
	bTheta := r.uniform(0, math.Pi)
	bcos, bsin := math.Cos(bTheta), math.Sin(bTheta)
	bhalf := size * r.uniform(0.08, 0.16)
	ba := contrast * r.uniform(0, synthDistractor)

	tint := [3]float64{1, 1, 1}
	if c == 3 {
		for ch := range tint {
			tint[ch] = r.uniform(0.6, 1.0)
		}
	}
	cos, sin := math.Cos(theta), math.Sin(theta)
	pix := make([]float32, c*h*w)
	plane := h * w
	for py := range h {
		for px := range w {
			dx, dy := float64(px)-cx, float64(py)-cy
			along := dx*cos + dy*sin
			across := -dx*sin + dy*cos
			if bars == 2 {
				across = math.Abs(across) - gap/2
			}
			ends := math.Max(math.Abs(along)-half, 0)
			d2 := across*across + ends*ends
			v := contrast * math.Exp(-d2/(2*width*width))
			ex, ey := float64(px)-bx, float64(py)-by
			balong := math.Max(math.Abs(ex*bcos+ey*bsin)-bhalf, 0)
			bacross := -ex*bsin + ey*bcos
			v += ba * math.Exp(-(balong*balong+bacross*bacross)/(2*width*width))
			for ch := range c {
				x := bg + tint[ch]*v + synthNoise*r.norm()
				pix[ch*plane+py*w+px] = float32(min(max(x, 0), 1))
			}
		}
	}
	return Image{C: c, H: h, W: w, Pix: pix}, y, nil
}

// The tuning of the generated task, measured with the default options: a
// nearest-centroid classifier on raw pixels gets about 89% of the test split
// right and a logistic regression about 99%, while vgg-mini reaches 98-99%
// after one epoch (94 steps of 64, SGD with momentum 0.9 at learning rate
// 0.05 or Adam at 0.001, cosine schedule). Larger shifts defeat the linear
// models more but slow the CNN down as much.
const (
	synthShift      = 0.12 // jitter of the pattern's centre, as a fraction of the image size
	synthNoise      = 0.12 // standard deviation of the pixel noise
	synthDistractor = 0.5  // largest brightness of the distractor relative to the pattern's
)
