package dcnet

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// FlagError is one problem Validate found, naming the command-line flag
// that sets the offending value.
type FlagError struct {
	// Flag is the flag, with its dashes: "--mag", "--alpha", ...
	Flag string
	// Msg is the whole message; it starts with Flag and says which values
	// the flag accepts.
	Msg string
}

// Error returns Msg.
func (e *FlagError) Error() string { return e.Msg }

// The command-line flags that set each field of a Config.
const (
	FlagMagnitude = "--mag"
	FlagAngular   = "--ang"
	FlagWeighted  = "--weighted"
	FlagAlpha     = "--alpha"
	FlagBeta      = "--beta"
	FlagK         = "--k"
	FlagRho       = "--rho"
	FlagEps       = "--eps"
)

// problem is one thing wrong with a configuration, described so that it
// can be reported against a command-line flag or a node attribute.
type problem struct {
	flag, attr string
	value      string // the offending value as the user would type it
	what       string // "is not a magnitude function"
	verb       string // "choose" or "give"
	accepted   string // "sphere, ball, ... or mix"
	flagExtra  string // appended to accepted in the flag form only
}

// flagError returns the problem as a *FlagError.
func (p problem) flagError() error {
	msg := fmt.Sprintf("%s %s %s: %s %s%s", p.flag, p.value, p.what, p.verb, p.accepted, p.flagExtra)
	return &FlagError{Flag: p.flag, Msg: msg}
}

// attrError returns the problem as the error of a node attribute.
func (p problem) attrError() error {
	return fmt.Errorf("attribute %s: %s %s (want %s)", p.attr, p.value, p.what, p.accepted)
}

// Validate reports every problem of c, joined with errors.Join, each as a
// *FlagError naming the flag (--mag, --ang, --weighted, --alpha, --beta,
// --k, --rho, --eps) and the values it accepts: unknown function names;
// alpha, k or eps not greater than 0; beta below 0; a fixed radius not
// greater than 0 for a magnitude that needs one; a learnable radius for a
// magnitude that has none; NaN or infinity in any value, used or not. It
// returns nil for a valid configuration.
func (c Config) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, p.flagError())
	}
	if c.LearnRho && !c.NeedsRho() && c.Magnitude.Valid() {
		errs = append(errs, &FlagError{Flag: FlagRho, Msg: fmt.Sprintf(
			"%s learn does not apply to magnitude %s: only %s have a radius", FlagRho, c.Magnitude, joinOr(rhoMagnitudes(), "and"))})
	}
	return errors.Join(errs...)
}

// problems lists what is wrong with c's names and values.
func (c Config) problems() []problem {
	var ps []problem
	if !c.Magnitude.Valid() {
		ps = append(ps, problem{flag: FlagMagnitude, attr: AttrMagnitude, value: strconv.Quote(string(c.Magnitude)),
			what: "is not a magnitude function", verb: "choose", accepted: joinOr(Magnitudes(), "or")})
	}
	if !c.Angular.Valid() {
		ps = append(ps, problem{flag: FlagAngular, attr: AttrAngular, value: strconv.Quote(string(c.Angular)),
			what: "is not an angular activation", verb: "choose", accepted: joinOr(Angulars(), "or")})
	}
	if !c.Weighted.Valid() {
		ps = append(ps, problem{flag: FlagWeighted, attr: AttrWeighted, value: strconv.Quote(string(c.Weighted)),
			what: "is not a weighting", verb: "choose", accepted: joinOr(Weightings(), "or")})
	}
	number := func(flag, attr string, v float32, what string, ok bool, accepted, flagExtra string) {
		p := problem{flag: flag, attr: attr, value: shortFloat(v), what: what, verb: "give", accepted: accepted, flagExtra: flagExtra}
		switch {
		case math.IsNaN(float64(v)) || math.IsInf(float64(v), 0):
			p.what = "is not a finite number"
			ps = append(ps, p)
		case !ok:
			ps = append(ps, p)
		}
	}
	const positive, nonNegative = "a number greater than 0", "a number of 0 or more"
	number(FlagAlpha, AttrAlpha, c.Alpha, "is not a valid scale", c.Alpha > 0, positive, "")
	number(FlagBeta, AttrBeta, c.Beta, "is not a valid slope", c.Beta >= 0, nonNegative, "")
	number(FlagK, AttrK, c.K, "is not a valid temperature", c.K > 0, positive, "")
	fixedRho := c.NeedsRho() && !c.LearnRho
	number(FlagRho, AttrRho, c.Rho, "is not a valid radius", c.Rho > 0 || !fixedRho, positive, ", learn or auto")
	number(FlagEps, AttrEps, c.Eps, "is not a valid epsilon", c.Eps > 0, positive, "")
	return ps
}

// rhoMagnitudes lists the magnitudes that need a radius.
func rhoMagnitudes() []Magnitude {
	var out []Magnitude
	for _, m := range Magnitudes() {
		if (Config{Magnitude: m}).NeedsRho() {
			out = append(out, m)
		}
	}
	return out
}

// joinOr joins names as "a, b or c" (or "and" for conj "and").
func joinOr[S ~string](names []S, conj string) string {
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = string(n)
	}
	if len(parts) < 2 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " " + conj + " " + parts[len(parts)-1]
}
