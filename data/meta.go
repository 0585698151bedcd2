package data

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// MetaPreprocess is the key of the model metadata entry (ONNX
// metadata_props) that records how a model's inputs are made: its value is
// a Preprocessing as JSON.
const MetaPreprocess = "dcconvert.preprocess"

// Preprocessing is what a model expects of its input images, as recorded
// in its metadata under MetaPreprocess, for example
//
//	{"input":[1,28,28],"mean":[0.286],"std":[0.353],"classes":["T-shirt/top",...]}
//
// Every field may be left out: a reader uses what is there and takes the
// rest from elsewhere (the model's graph input, flags, defaults).
type Preprocessing struct {
	// Input is the input shape C, H, W without the batch dimension; empty
	// when not recorded.
	Input []int `json:"input,omitempty"`
	// Mean and Std are the normalisation (x - Mean[c]) / Std[c] applied
	// to pixel values scaled to [0, 1]: one value for every channel or
	// one per channel; empty when not recorded.
	Mean []float32 `json:"mean,omitempty"`
	Std  []float32 `json:"std,omitempty"`
	// Classes names the classes in the order of the model's outputs;
	// empty when not recorded.
	Classes []string `json:"classes,omitempty"`
}

// Check reports what is wrong with p, all problems together: an input
// shape that is not three positive sizes, a mean or std with a number of
// values other than 1 or the channel count (3 without an input shape), a
// std of 0 or a value that is not finite, an empty class name.
func (p Preprocessing) Check() error {
	var errs []error
	channels := 0
	if p.Input != nil {
		if len(p.Input) != 3 {
			errs = append(errs, fmt.Errorf("input %v: want three sizes C, H, W", p.Input))
		} else if p.Input[0] < 1 || p.Input[1] < 1 || p.Input[2] < 1 {
			errs = append(errs, fmt.Errorf("input %v: sizes must be positive", p.Input))
		} else {
			channels = p.Input[0]
		}
	}
	for _, f := range []struct {
		name string
		v    []float32
	}{{"mean", p.Mean}, {"std", p.Std}} {
		n := len(f.v)
		switch {
		case n == 0 || n == 1:
		case channels > 0 && n != channels:
			errs = append(errs, fmt.Errorf("%s: %d values for %d channels; want 1 or %d", f.name, n, channels, channels))
		case channels == 0 && n != 3:
			errs = append(errs, fmt.Errorf("%s: %d values; want 1 or one per channel", f.name, n))
		}
		for i, x := range f.v {
			if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
				errs = append(errs, fmt.Errorf("%s value %d is %g; it must be finite", f.name, i, x))
			} else if f.name == "std" && x == 0 {
				errs = append(errs, fmt.Errorf("std value %d is 0", i))
			}
		}
	}
	for i, c := range p.Classes {
		if c == "" {
			errs = append(errs, fmt.Errorf("class %d has an empty name", i))
		}
	}
	return errors.Join(errs...)
}

// ReadPreprocessing returns the Preprocessing recorded in m's metadata under
// MetaPreprocess, and whether there is one. A value that is not a JSON
// object of the documented fields, or that fails Check, is an error naming
// the key.
func ReadPreprocessing(m *onnxpb.ModelProto) (Preprocessing, bool, error) {
	var found *onnxpb.StringStringEntryProto
	for _, e := range m.GetMetadataProps() {
		if e.GetKey() != MetaPreprocess {
			continue
		}
		if found != nil {
			return Preprocessing{}, true, fmt.Errorf("metadata %s: the key appears more than once", MetaPreprocess)
		}
		found = e
	}
	if found == nil {
		return Preprocessing{}, false, nil
	}
	var p Preprocessing
	dec := json.NewDecoder(bytes.NewReader([]byte(found.GetValue())))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Preprocessing{}, true, fmt.Errorf("metadata %s: %w", MetaPreprocess, err)
	}
	if dec.More() {
		return Preprocessing{}, true, fmt.Errorf("metadata %s: data after the JSON object", MetaPreprocess)
	}
	if err := p.Check(); err != nil {
		return Preprocessing{}, true, fmt.Errorf("metadata %s: %w", MetaPreprocess, err)
	}
	return p, true, nil
}

// WritePreprocessing records p in m's metadata under MetaPreprocess,
// replacing an entry already there, after checking p.
func WritePreprocessing(m *onnxpb.ModelProto, p Preprocessing) error {
	if err := p.Check(); err != nil {
		return fmt.Errorf("metadata %s: %w", MetaPreprocess, err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("metadata %s: %w", MetaPreprocess, err)
	}
	key, value := MetaPreprocess, string(b)
	var kept []*onnxpb.StringStringEntryProto
	for _, e := range m.GetMetadataProps() {
		if e.GetKey() != MetaPreprocess {
			kept = append(kept, e)
		}
	}
	m.MetadataProps = append(kept, &onnxpb.StringStringEntryProto{Key: &key, Value: &value})
	return nil
}
