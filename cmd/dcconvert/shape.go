package main

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/dcconvert/dcconvert/onnximport"
)

// Shape is a tensor shape as the JSON reports write it: a list with one
// element per dimension, outermost first, holding the size (a number) of a
// known dimension or the symbol (a string, such as "batch_size", or "?" for a
// dimension nothing is known about) of the others. A nil Shape, a shape that
// is not known at all, is written as null.
type Shape onnximport.Shape

// MarshalJSON writes the shape as described at Shape.
func (s Shape) MarshalJSON() ([]byte, error) {
	if s == nil {
		return []byte("null"), nil
	}
	out := make([]any, len(s))
	for i, d := range s {
		if d.Known() {
			out[i] = d.Size
		} else {
			out[i] = d.Sym
		}
	}
	return json.Marshal(out)
}

// String formats the shape as "[N,3,224,224]", or "?" when it is unknown.
func (s Shape) String() string {
	if s == nil {
		return "?"
	}
	return onnximport.Shape(s).String()
}

// elements returns the number of elements of a shape whose dimensions are
// all known, and whether they are.
func (s Shape) elements() (int64, bool) {
	if s == nil {
		return 0, false
	}
	n := int64(1)
	for _, d := range s {
		if !d.Known() || d.Size < 0 {
			return 0, false
		}
		n = mulSat(n, d.Size)
	}
	return n, true
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (s *Shape) UnmarshalJSON(b []byte) error {
	var dims []any
	if err := json.Unmarshal(b, &dims); err != nil {
		return err
	}
	if dims == nil {
		*s = nil
		return nil
	}
	out := make(Shape, len(dims))
	for i, d := range dims {
		switch d := d.(type) {
		case float64:
			if d != math.Trunc(d) || d < 0 || d > 1<<53 {
				return fmt.Errorf("dimension %d: %v is not a size", i, d)
			}
			out[i] = onnximport.Dim{Size: int64(d)}
		case string:
			out[i] = onnximport.Dim{Sym: d}
		default:
			return fmt.Errorf("dimension %d: %v is neither a size nor a symbol", i, d)
		}
	}
	*s = out
	return nil
}
