package dcnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// LayerInfo is the configuration of one layer as recorded in the model's
// metadata under MetaLayers, a JSON object mapping node names to
// LayerInfo values. Like Key, it holds only what the configuration uses:
//
//	{"magnitude":"ball","angular":"sigmoid","weighted":"none","alpha":1,"k":0.3,"rho":"learn","eps":0.0001}
//	{"magnitude":"seg","angular":"cos","weighted":"log","alpha":1,"beta":0.5,"rho":2.5,"eps":0.0001}
//
// beta is present only for seg and mix, k only for sigmoid, rho only for
// ball, tanh and seg (a number, or the string "learn"). Numbers are
// written with the fewest digits that read back as the same float32.
type LayerInfo struct {
	Magnitude Magnitude `json:"magnitude"`
	Angular   Angular   `json:"angular"`
	Weighted  Weighting `json:"weighted"`
	Alpha     float32   `json:"alpha"`
	Beta      *float32  `json:"beta,omitempty"`
	K         *float32  `json:"k,omitempty"`
	Rho       *Radius   `json:"rho,omitempty"`
	Eps       float32   `json:"eps"`
}

// Radius is the rho of a LayerInfo: a fixed value, or learnable. In JSON
// it is a number or the string "learn".
type Radius struct {
	Value float32 // the fixed radius, when Learn is false
	Learn bool
}

// radiusLearn is the JSON form of a learnable radius.
const radiusLearn = "learn"

// MarshalJSON writes the radius as a number or "learn".
func (r Radius) MarshalJSON() ([]byte, error) {
	if r.Learn {
		return json.Marshal(radiusLearn)
	}
	if math.IsNaN(float64(r.Value)) || math.IsInf(float64(r.Value), 0) {
		return nil, fmt.Errorf("radius %v is not a finite number", r.Value)
	}
	return json.Marshal(r.Value)
}

// UnmarshalJSON reads a number or "learn".
func (r *Radius) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if s != radiusLearn {
			return fmt.Errorf("radius %q is neither a number nor %q", s, radiusLearn)
		}
		*r = Radius{Learn: true}
		return nil
	}
	var v float32
	if err := json.Unmarshal(b, &v); err != nil {
		return errors.New("radius is neither a number nor \"learn\"")
	}
	*r = Radius{Value: v}
	return nil
}

// LayerInfoOf returns the metadata record of a configuration.
func LayerInfoOf(c Config) LayerInfo {
	li := LayerInfo{
		Magnitude: c.Magnitude,
		Angular:   c.Angular,
		Weighted:  c.Weighted,
		Alpha:     c.Alpha,
		Eps:       c.Eps,
	}
	if c.UsesBeta() {
		li.Beta = &c.Beta
	}
	if c.UsesK() {
		li.K = &c.K
	}
	if c.NeedsRho() {
		li.Rho = &Radius{Value: c.Rho, Learn: c.LearnRho}
		if c.LearnRho {
			li.Rho.Value = 0
		}
	}
	return li
}
