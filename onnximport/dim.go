package onnximport

import (
	"sort"
	"strconv"
	"strings"
)

// Dim is one dimension of a shape: a known size, or a symbol such as the
// batch dimension "N". Products of symbols are written "N*3"; "?" is a
// dimension nothing is known about.
type Dim struct {
	Size int64  // the size, when Sym is empty
	Sym  string // the symbol, or empty for a known size
}

// Unknown is the dimension nothing is known about.
var Unknown = Dim{Sym: "?"}

// Known reports whether the dimension has a fixed size.
func (d Dim) Known() bool { return d.Sym == "" }

// String returns the size or the symbol.
func (d Dim) String() string {
	if d.Sym != "" {
		return d.Sym
	}
	return strconv.FormatInt(d.Size, 10)
}

// Shape is the shape of a tensor, outermost dimension first.
type Shape []Dim

// String formats the shape as "[N,3,224,224]".
func (s Shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = d.String()
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// Static returns the sizes of a shape whose dimensions are all known.
func (s Shape) Static() ([]int64, bool) {
	out := make([]int64, len(s))
	for i, d := range s {
		if !d.Known() {
			return nil, false
		}
		out[i] = d.Size
	}
	return out, true
}

// ShapeOf turns fixed sizes into a Shape.
func ShapeOf(dims ...int64) Shape {
	s := make(Shape, len(dims))
	for i, d := range dims {
		s[i] = Dim{Size: d}
	}
	return s
}

// factors splits a dimension into a numeric coefficient and its sorted
// symbols; ok is false for the unknown dimension.
func factors(d Dim) (coef int64, syms []string, ok bool) {
	if d.Known() {
		return d.Size, nil, true
	}
	coef = 1
	for _, f := range strings.Split(d.Sym, "*") {
		if f == "?" || f == "" {
			return 0, nil, false
		}
		if n, err := strconv.ParseInt(f, 10, 64); err == nil {
			coef *= n
			continue
		}
		syms = append(syms, f)
	}
	sort.Strings(syms)
	return coef, syms, true
}

// fromFactors builds a dimension from a coefficient and symbols.
func fromFactors(coef int64, syms []string) Dim {
	if len(syms) == 0 {
		return Dim{Size: coef}
	}
	sort.Strings(syms)
	if coef == 1 {
		return Dim{Sym: strings.Join(syms, "*")}
	}
	return Dim{Sym: strconv.FormatInt(coef, 10) + "*" + strings.Join(syms, "*")}
}

// product returns the product of dimensions, symbolic where they are.
func product(ds []Dim) Dim {
	coef := int64(1)
	var syms []string
	for _, d := range ds {
		c, s, ok := factors(d)
		if !ok {
			return Unknown
		}
		if c != 0 && coef > (1<<62)/abs64(c) {
			return Unknown
		}
		coef *= c
		syms = append(syms, s...)
	}
	if coef == 0 {
		return Dim{Size: 0}
	}
	return fromFactors(coef, syms)
}

// quotient returns total / product(ds) when it divides exactly.
func quotient(total Dim, ds []Dim) (Dim, bool) {
	tc, ts, ok := factors(total)
	if !ok {
		return Unknown, true
	}
	p := product(ds)
	pc, ps, ok := factors(p)
	if !ok {
		return Unknown, true
	}
	if pc == 0 || tc%pc != 0 {
		return Dim{}, false
	}
	rest := append([]string(nil), ts...)
	for _, s := range ps {
		i := indexOf(rest, s)
		if i < 0 {
			return Unknown, true
		}
		rest = append(rest[:i], rest[i+1:]...)
	}
	return fromFactors(tc/pc, rest), true
}

func indexOf(ss []string, s string) int {
	for i, x := range ss {
		if x == s {
			return i
		}
	}
	return -1
}

func abs64(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
