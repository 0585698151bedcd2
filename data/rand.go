package data

import "math"

// Randomness in this package comes from a small counter-based scheme written
// out here rather than from math/rand, whose derived methods (Shuffle, IntN,
// NormFloat64) are not promised to give the same values in every Go release.
// A value drawn for a sample depends only on the seed and the sample's
// coordinates (stream, epoch, index), never on which goroutine draws it.

// Streams keep the random values of different uses apart even when they are
// keyed by the same seed, epoch and index.
const (
	streamShuffle   uint64 = 0x5348554646 // "SHUFF"
	streamAugment   uint64 = 0x4155474d   // "AUGM"
	streamHoldOut   uint64 = 0x484f4c44   // "HOLD"
	streamSynthetic uint64 = 0x53594e54   // "SYNT"
)

// splitmix64 advances x by the golden-ratio increment and returns the
// finalised value (Steele, Lea and Flood's SplitMix64).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// mix hashes a seed and a list of keys into one well-spread value; the order
// of the keys matters.
func mix(seed uint64, keys ...uint64) uint64 {
	h := splitmix64(seed)
	for _, k := range keys {
		h = splitmix64(h ^ k)
	}
	return h
}

// rng is a SplitMix64 generator. Its zero value is usable.
type rng struct{ state uint64 }

// newRNG returns a generator keyed by seed and keys (see mix).
func newRNG(seed uint64, keys ...uint64) *rng {
	return &rng{state: mix(seed, keys...)}
}

// uint64 returns the next 64 random bits.
func (r *rng) uint64() uint64 {
	r.state += 0x9e3779b97f4a7c15
	x := r.state
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// float64 returns a uniform value in [0, 1).
func (r *rng) float64() float64 {
	return float64(r.uint64()>>11) / (1 << 53)
}

// uniform returns a uniform value in [lo, hi).
func (r *rng) uniform(lo, hi float64) float64 {
	return lo + (hi-lo)*r.float64()
}

// intn returns a uniform value in [0, n); n must be positive. It rejects the
// few values that would bias the result.
func (r *rng) intn(n int) int {
	un := uint64(n)
	limit := math.MaxUint64 - math.MaxUint64%un
	for {
		if v := r.uint64(); v < limit {
			return int(v % un)
		}
	}
}

// norm returns a standard normal value (Box-Muller, one value per call).
func (r *rng) norm() float64 {
	u := 1 - r.float64() // (0, 1]
	v := r.float64()
	return math.Sqrt(-2*math.Log(u)) * math.Cos(2*math.Pi*v)
}

// shuffle permutes xs uniformly (Fisher-Yates).
func (r *rng) shuffle(xs []int) {
	for i := len(xs) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		xs[i], xs[j] = xs[j], xs[i]
	}
}
