package dcnet

import (
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzAttributeRoundTrip checks that every configuration reads back from
// its node as the node records it (Config -> node -> Config), and that
// FromNode of a node that records an invalid configuration fails without
// panicking.
func FuzzAttributeRoundTrip(f *testing.F) {
	f.Add("ball", "sigmoid", "log", float32(1), float32(0.5), float32(0.3), float32(2), float32(1e-4), uint8(0))
	f.Add("seg", "cos", "none", float32(2), float32(0), float32(1), float32(0.5), float32(1e-3), uint8(7))
	f.Add("bal", "x", "", float32(-1), float32(float32(math.NaN())), float32(0), float32(0), float32(0), uint8(4))
	f.Fuzz(func(t *testing.T, mag, ang, weighted string, alpha, beta, k, rho, eps float32, flags uint8) {
		c := Config{
			Magnitude: Magnitude(mag), Angular: Angular(ang), Weighted: Weighting(weighted),
			Alpha: alpha, Beta: beta, K: k, Rho: rho, Eps: eps,
			Bias: flags&1 != 0, ChannelScale: flags&2 != 0, LearnRho: flags&4 != 0,
		}
		// What the node records: rho only where it is used, RhoV and
		// RhoScale only for a magnitude with a radius.
		want := normalized(c)
		want.LearnRho = c.usesRhoInputs()
		got, err := FromNode(nodeOf(c, "conv"))
		if want.Validate() != nil {
			if err == nil {
				t.Fatalf("FromNode accepted the invalid %+v", want)
			}
			return
		}
		if err != nil {
			t.Fatalf("FromNode of the valid %+v: %v", want, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
		if got.Key() != c.Key() {
			t.Fatalf("key %q, want %q", got.Key(), c.Key())
		}
	})
}
