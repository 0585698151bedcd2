package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
)

// Record is one line of metrics.jsonl: what training measured since the
// previous record.
//
// JSON has no NaN or infinity, and a diverging run produces them, so a
// non-finite value is written as null and null is read back as NaN. A
// non-finite validation value is written as null too; only a nil ValAcc or
// ValLoss leaves the key out, so a NaN validation loss reads back as a
// pointer to NaN, not as absent.
type Record struct {
	Step         int64    `json:"step"`
	Epoch        float64  `json:"epoch"`     // fractional epochs: 1.5 is half-way through the second epoch
	Loss         float64  `json:"loss"`      // mean training loss since the previous record
	LR           float64  `json:"lr"`        // learning rate at Step
	TrainAcc     float64  `json:"train_acc"` // top-1 fraction on the training batches since the previous record
	ValAcc       *float64 `json:"val_acc,omitempty"`
	ValLoss      *float64 `json:"val_loss,omitempty"`
	ImagesPerSec float64  `json:"images_per_sec"`
	WallSeconds  float64  `json:"wall_s"` // seconds since training started
}

// MarshalJSON encodes r as one compact JSON object, keys in the order of
// the fields, non-finite values as null.
func (r Record) MarshalJSON() ([]byte, error) {
	return r.appendJSON(nil), nil
}

// appendJSON appends the JSON object of r to b.
func (r Record) appendJSON(b []byte) []byte {
	b = append(b, `{"step":`...)
	b = strconv.AppendInt(b, r.Step, 10)
	b = appendField(b, "epoch", r.Epoch)
	b = appendField(b, "loss", r.Loss)
	b = appendField(b, "lr", r.LR)
	b = appendField(b, "train_acc", r.TrainAcc)
	if r.ValAcc != nil {
		b = appendField(b, "val_acc", *r.ValAcc)
	}
	if r.ValLoss != nil {
		b = appendField(b, "val_loss", *r.ValLoss)
	}
	b = appendField(b, "images_per_sec", r.ImagesPerSec)
	b = appendField(b, "wall_s", r.WallSeconds)
	return append(b, '}')
}

// appendField appends ,"key":v to b, with null for a non-finite v.
func appendField(b []byte, key string, v float64) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// UnmarshalJSON decodes a JSON object into r: null reads as NaN, and a key
// that is absent leaves ValAcc or ValLoss nil and other fields zero. Keys
// it does not know are ignored.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w struct {
		Step         int64     `json:"step"`
		Epoch        nullFloat `json:"epoch"`
		Loss         nullFloat `json:"loss"`
		LR           nullFloat `json:"lr"`
		TrainAcc     nullFloat `json:"train_acc"`
		ValAcc       optFloat  `json:"val_acc"`
		ValLoss      optFloat  `json:"val_loss"`
		ImagesPerSec nullFloat `json:"images_per_sec"`
		WallSeconds  nullFloat `json:"wall_s"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Record{
		Step:         w.Step,
		Epoch:        float64(w.Epoch),
		Loss:         float64(w.Loss),
		LR:           float64(w.LR),
		TrainAcc:     float64(w.TrainAcc),
		ValAcc:       w.ValAcc.ptr(),
		ValLoss:      w.ValLoss.ptr(),
		ImagesPerSec: float64(w.ImagesPerSec),
		WallSeconds:  float64(w.WallSeconds),
	}
	return nil
}

// nullFloat is a float64 that reads JSON null as NaN.
type nullFloat float64

// UnmarshalJSON reads a number, or null as NaN.
func (f *nullFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = nullFloat(math.NaN())
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = nullFloat(v)
	return nil
}

// optFloat is an optional float64: set once its key was present, null
// reading as NaN.
type optFloat struct {
	set bool
	v   nullFloat
}

// UnmarshalJSON reads a number, or null as NaN, and marks f set. JSON
// calls it for null too, as the type is not a pointer.
func (f *optFloat) UnmarshalJSON(b []byte) error {
	if err := f.v.UnmarshalJSON(b); err != nil {
		return err
	}
	f.set = true
	return nil
}

// ptr returns a pointer to the value, or nil when it was absent.
func (f optFloat) ptr() *float64 {
	if !f.set {
		return nil
	}
	v := float64(f.v)
	return &v
}

// EncodeMetrics returns the metrics.jsonl form of recs: one compact JSON
// object per record, each followed by a newline.
func EncodeMetrics(recs []Record) []byte {
	var b []byte
	for _, r := range recs {
		b = r.appendJSON(b)
		b = append(b, '\n')
	}
	return b
}

// decodeMetrics parses the metrics.jsonl form, skipping blank lines. An
// error names the line (counted from 1) that does not hold a record.
func decodeMetrics(b []byte) ([]Record, error) {
	var recs []Record
	for i, line := range bytes.Split(b, []byte{'\n'}) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if line[0] != '{' {
			return nil, fmt.Errorf("line %d: not a JSON object", i+1)
		}
		var r Record
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// ReadMetrics reads the records of the metrics log at path. A missing file
// gives an error that wraps fs.ErrNotExist; a line that is not a record
// gives one naming the line.
func ReadMetrics(path string) ([]Record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, unwrapPath(err))
	}
	recs, err := decodeMetrics(b)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return recs, nil
}

// WriteMetrics writes recs as the metrics log at path, replacing the whole
// file atomically: a reader sees the old log or the new one, never a part.
func WriteMetrics(path string, recs []Record) error {
	return writeAtomic(path, EncodeMetrics(recs))
}
