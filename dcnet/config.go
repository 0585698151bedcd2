package dcnet

import (
	"slices"
	"strconv"
	"strings"

	"github.com/dcconvert/dcconvert/onnximport"
)

// Domain is the operator domain of decoupled convolution nodes and of the
// model-local functions that define them.
const Domain = onnximport.DecoupledDomain

// DomainVersion is the version at which a model imports Domain.
const DomainVersion = 1

// OpPrefix starts the op type of every decoupled convolution node; the rest
// of the op type identifies the configuration (see Config.OpType).
const OpPrefix = onnximport.DecoupledOpPrefix

// Keys of the model's metadata_props written by a rewrite.
const (
	// MetaLayers holds a JSON object mapping each decoupled node's name to
	// its LayerInfo.
	MetaLayers = "ai.dcnet.layers"
	// MetaUncalibrated holds the comma-separated names of the nodes whose
	// RhoScale has not been measured yet; it is absent when none is left.
	MetaUncalibrated = "ai.dcnet.uncalibrated"
)

// Magnitude names a magnitude function h(N) of the patch norm N.
type Magnitude string

// The magnitude functions (DCNET.md section 1).
const (
	MagSphere Magnitude = "sphere" // alpha
	MagBall   Magnitude = "ball"   // alpha * min(N, rho) / rho
	MagTanh   Magnitude = "tanh"   // alpha * tanh(N / rho)
	MagLinear Magnitude = "linear" // alpha * N
	MagSeg    Magnitude = "seg"    // alpha * min(N, rho) + beta * max(N - rho, 0)
	MagLog    Magnitude = "log"    // alpha * log(1 + N)
	MagMix    Magnitude = "mix"    // alpha * N + beta * log(1 + N)
)

// Angular names an angular activation g of the angle theta between filter
// and patch.
type Angular string

// The angular activations (DCNET.md section 1).
const (
	AngCos     Angular = "cos"     // cos(theta)
	AngLinear  Angular = "linear"  // 1 - 2 theta / pi
	AngSigmoid Angular = "sigmoid" // K tanh((pi/2 - theta) / (2k))
	AngSqcos   Angular = "sqcos"   // sign(cos) cos^2
)

// Weighting names the factor m(|w|) applied for the filter norm.
type Weighting string

// The weightings (DCNET.md section 1).
const (
	WeightNone   Weighting = "none"   // 1
	WeightLinear Weighting = "linear" // |w|
	WeightLog    Weighting = "log"    // log(1 + |w|)
)

// Magnitudes returns every magnitude function in the order the
// documentation lists them.
func Magnitudes() []Magnitude {
	return []Magnitude{MagSphere, MagBall, MagTanh, MagLinear, MagSeg, MagLog, MagMix}
}

// Angulars returns every angular activation in the order the documentation
// lists them.
func Angulars() []Angular {
	return []Angular{AngCos, AngLinear, AngSigmoid, AngSqcos}
}

// Weightings returns every weighting in the order the documentation lists
// them.
func Weightings() []Weighting {
	return []Weighting{WeightNone, WeightLinear, WeightLog}
}

// Valid reports whether m is one of Magnitudes.
func (m Magnitude) Valid() bool { return slices.Contains(Magnitudes(), m) }

// Valid reports whether a is one of Angulars.
func (a Angular) Valid() bool { return slices.Contains(Angulars(), a) }

// Valid reports whether w is one of Weightings.
func (w Weighting) Valid() bool { return slices.Contains(Weightings(), w) }

// RhoFloor is the constant added to RhoV_c^2 in the learnable radius
// rho_c = (RhoV_c^2 + RhoFloor) * RhoScale; it is a literal of the
// operator, not eps.
const RhoFloor = 1e-4

// Config is the configuration of one decoupled convolution: the choice of
// functions, their scalar parameters, and which optional inputs the node
// has. The zero value is not valid; start from DefaultConfig.
type Config struct {
	Magnitude Magnitude
	Angular   Angular
	Weighted  Weighting
	// Alpha scales h (> 0); Beta is the second slope of seg and the log
	// coefficient of mix (>= 0); K is the sigmoid's temperature k (> 0);
	// Eps is added under both square roots (> 0).
	Alpha, Beta, K, Eps float32
	// Rho is the fixed radius of ball, tanh and seg (> 0). It is ignored
	// when LearnRho is set or the magnitude needs no radius.
	Rho float32
	// LearnRho selects the learnable radius rho_c = (RhoV_c^2 + 1e-4) *
	// RhoScale, read from the inputs RhoV ([C_out]) and RhoScale (rank 0).
	// Only magnitudes that need a radius accept it.
	LearnRho bool
	// Bias reports whether input B (the source Conv's bias, [C_out]) is
	// present.
	Bias bool
	// ChannelScale reports whether input Alpha (the per-channel output scale
	// A_c, [C_out]) is present.
	ChannelScale bool
}

// DefaultConfig returns the defaults of the rewrite command: linear
// magnitude, cos activation, no weighting, alpha 1, beta 0.5, k 0.3, eps
// 1e-4, no radius and no optional inputs.
func DefaultConfig() Config {
	return Config{
		Magnitude: MagLinear,
		Angular:   AngCos,
		Weighted:  WeightNone,
		Alpha:     1,
		Beta:      0.5,
		K:         0.3,
		Eps:       1e-4,
	}
}

// NeedsRho reports whether the magnitude function uses the radius rho
// (ball, tanh and seg).
func (c Config) NeedsRho() bool {
	switch c.Magnitude {
	case MagBall, MagTanh, MagSeg:
		return true
	}
	return false
}

// UsesBeta reports whether the magnitude function uses beta (seg and mix).
func (c Config) UsesBeta() bool {
	return c.Magnitude == MagSeg || c.Magnitude == MagMix
}

// UsesK reports whether the angular activation uses k (sigmoid).
func (c Config) UsesK() bool { return c.Angular == AngSigmoid }

// usesRhoInputs reports whether the node carries RhoV and RhoScale.
func (c Config) usesRhoInputs() bool { return c.LearnRho && c.NeedsRho() }

// Summary returns a short human-readable form for tables, such as
// "ball(rho=learn) x cos" or "seg(rho=2.5,beta=0.5) x sigmoid(k=0.3),
// weighted=log". Alpha and eps appear only when they differ from their
// defaults; optional inputs other than the learnable radius are not shown
// except the per-channel scale (", scaled").
func (c Config) Summary() string {
	var mp []string
	if c.Alpha != 1 {
		mp = append(mp, "alpha="+shortFloat(c.Alpha))
	}
	if c.NeedsRho() {
		if c.LearnRho {
			mp = append(mp, "rho=learn")
		} else {
			mp = append(mp, "rho="+shortFloat(c.Rho))
		}
	}
	if c.UsesBeta() {
		mp = append(mp, "beta="+shortFloat(c.Beta))
	}
	var b strings.Builder
	b.WriteString(string(c.Magnitude))
	if len(mp) > 0 {
		b.WriteString("(" + strings.Join(mp, ",") + ")")
	}
	b.WriteString(" x " + string(c.Angular))
	if c.UsesK() {
		b.WriteString("(k=" + shortFloat(c.K) + ")")
	}
	if c.Weighted != WeightNone {
		b.WriteString(", weighted=" + string(c.Weighted))
	}
	if c.Eps != DefaultConfig().Eps {
		b.WriteString(", eps=" + shortFloat(c.Eps))
	}
	if c.ChannelScale {
		b.WriteString(", scaled")
	}
	return b.String()
}

// shortFloat formats v with the fewest digits that read back as the same
// float32.
func shortFloat(v float32) string {
	return strconv.FormatFloat(float64(v), 'g', -1, 32)
}
