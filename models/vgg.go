package models

import "fmt"

// pool marks a 2x2 max pool in a VGG layer list; other entries are the output
// channels of a 3x3 convolution.
const pool = 0

// torchvision's VGG configurations A, B, D and E.
var (
	vggA = []int64{64, pool, 128, pool, 256, 256, pool, 512, 512, pool, 512, 512, pool}
	vggB = []int64{64, 64, pool, 128, 128, pool, 256, 256, pool, 512, 512, pool, 512, 512, pool}
	vggD = []int64{64, 64, pool, 128, 128, pool, 256, 256, 256, pool, 512, 512, 512, pool, 512, 512, 512, pool}
	vggE = []int64{64, 64, pool, 128, 128, pool, 256, 256, 256, 256, pool, 512, 512, 512, 512, pool, 512, 512, 512, 512, pool}

	// vggMini is conv16-16-pool-32-32-pool.
	vggMini = []int64{16, 16, pool, 32, 32, pool}
)

// VGG classifier widths: torchvision's, the small-input (CIFAR) one, vgg-mini's.
const (
	vggHidden      = 4096
	vggSmallHidden = 512
	vggMiniHidden  = 64
)

// vggPoolSize is the side of torchvision's AdaptiveAvgPool2d output.
const vggPoolSize = 7

// vggFeatures lays out torchvision's VGG "features" Sequential: each
// convolution (3x3, pad 1, with bias) is followed by BatchNormalization when
// bn is set, then ReLU; each pool entry is a 2x2 stride-2 max pool. Modules
// are numbered as in torchvision, so vgg11's first convolution is features.0
// and, with bn, its ReLU is features.2.
func vggFeatures(g *graph, x fmap, layers []int64, bn bool) fmap {
	i := 0
	next := func() string {
		p := fmt.Sprintf("features.%d", i)
		i++
		return p
	}
	for _, c := range layers {
		if c == pool {
			x = g.maxPool(next(), x, 2, 2, 0)
			continue
		}
		x = g.conv(next(), x, c, 3, 1, 1, true)
		if bn {
			x = g.batchNorm(next(), x)
		}
		x = g.relu(next(), x)
	}
	return x
}

// vggClassifier lays out the "classifier" Sequential: Linear, ReLU, Dropout,
// Linear, ReLU, Dropout, Linear (classifier.0 to classifier.6).
func vggClassifier(g *graph, x string, in, hidden, classes int64) string {
	x = g.linear("classifier.0", x, in, hidden)
	x = g.relu("classifier.1", fmap{name: x}).name
	x = g.dropout("classifier.2", x)
	x = g.linear("classifier.3", x, hidden, hidden)
	x = g.relu("classifier.4", fmap{name: x}).name
	x = g.dropout("classifier.5", x)
	return g.linear("classifier.6", x, hidden, classes)
}

// buildVGG returns the builder of a VGG with the given feature layers.
//
// When the last feature map is at least 7x7 the head is torchvision's:
// AdaptiveAvgPool2d((7, 7)), exported as an AveragePool with kernel = stride
// = map/7 (1x1 at 224x224, as torch writes it), Flatten, and the 4096-wide
// classifier. A map that is 7x7 or more but not a multiple of 7x7 is an error.
// When the map is smaller than 7x7 in either direction (the CIFAR
// convention, e.g. 1x1 at 32x32) there is no pool and the classifier is
// 512-wide: 512*h*w -> 512 -> 512 -> classes.
func buildVGG(layers []int64) func(*graph, fmap, Config) (string, error) {
	return func(g *graph, x fmap, cfg Config) (string, error) {
		in := x
		x = vggFeatures(g, x, layers, cfg.BN)
		if g.shrunk != "" {
			return "", tooSmall(in, g.shrunk)
		}
		hidden := int64(vggHidden)
		if x.h >= vggPoolSize && x.w >= vggPoolSize {
			if x.h%vggPoolSize != 0 || x.w%vggPoolSize != 0 {
				return "", &ConfigError{
					Field: "input",
					Msg: fmt.Sprintf("input %dx%dx%d does not fit: the last feature map is %dx%d, "+
						"and the 7x7 average pool needs a multiple of 7x7 (a side of 224k..224k+31) "+
						"or a map under 7x7 (a side under 224) for the small-input classifier",
						in.c, in.h, in.w, x.h, x.w),
				}
			}
			x = g.avgPool("avgpool", x, x.h/vggPoolSize, x.w/vggPoolSize)
		} else {
			hidden = vggSmallHidden
		}
		flat, n := g.flatten("", x)
		return vggClassifier(g, flat, n, hidden, int64(cfg.Classes)), nil
	}
}

// buildVGGMini builds vgg-mini: conv16-16-pool-32-32-pool (3x3 pad 1
// convolutions with ReLU, optional BatchNormalization, 2x2 max pools), then
// Flatten, Linear 32*h*w -> 64, ReLU, Dropout, Linear 64 -> classes
// (classifier.0 to classifier.3).
func buildVGGMini(g *graph, x fmap, cfg Config) (string, error) {
	in := x
	x = vggFeatures(g, x, vggMini, cfg.BN)
	if g.shrunk != "" {
		return "", tooSmall(in, g.shrunk)
	}
	flat, n := g.flatten("", x)
	h := g.linear("classifier.0", flat, n, vggMiniHidden)
	h = g.relu("classifier.1", fmap{name: h}).name
	h = g.dropout("classifier.2", h)
	return g.linear("classifier.3", h, vggMiniHidden, int64(cfg.Classes)), nil
}

// tooSmall reports an input whose feature map shrank to nothing.
func tooSmall(in fmap, where string) error {
	return &ConfigError{
		Field: "input",
		Msg:   fmt.Sprintf("input %dx%dx%d is too small: %s", in.c, in.h, in.w, where),
	}
}
