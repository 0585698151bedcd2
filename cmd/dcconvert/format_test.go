package main

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
)

func TestGroupDigits(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"}, {7, "7"}, {999, "999"}, {1000, "1,000"}, {117434, "117,434"},
		{138357544, "138,357,544"}, {-1234567, "-1,234,567"}, {math.MaxInt64, "9,223,372,036,854,775,807"},
	}
	for _, tt := range tests {
		if got := groupDigits(tt.n); got != tt.want {
			t.Errorf("groupDigits(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestByteSize(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {999, "999 B"}, {1000, "1.0 kB"}, {472705, "472.7 kB"},
		{553438281, "553.4 MB"}, {2_147_483_648, "2.1 GB"}, {5e15, "5000.0 TB"},
	}
	for _, tt := range tests {
		if got := byteSize(tt.n); got != tt.want {
			t.Errorf("byteSize(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestPadsAndSizes(t *testing.T) {
	tests := []struct {
		name    string
		pads    []int64
		autoPad string
		want    string
	}{
		{"symmetric", []int64{1, 2, 1, 2}, "NOTSET", "1x2"},
		{"asymmetric", []int64{0, 0, 1, 1}, "SAME_UPPER", "[0,0,1,1]"},
		{"3-D", []int64{1, 1, 1, 1, 1, 1}, "NOTSET", "1x1x1"},
		{"unknown same", nil, "SAME_LOWER", "SAME_LOWER"},
		{"unknown", nil, "NOTSET", "?"},
	}
	for _, tt := range tests {
		if got := pads(tt.pads, tt.autoPad); got != tt.want {
			t.Errorf("%s: pads(%v, %s) = %q, want %q", tt.name, tt.pads, tt.autoPad, got, tt.want)
		}
	}
	if got := sizes(nil); got != "?" {
		t.Errorf("sizes(nil) = %q, want ?", got)
	}
}

func TestShapeValue(t *testing.T) {
	tests := []struct {
		in      string
		want    [3]int64
		wantErr bool
	}{
		{"3x224x224", [3]int64{3, 224, 224}, false},
		{"1X28X28", [3]int64{1, 28, 28}, false},
		{"3x32", [3]int64{}, true},
		{"3x32x32x1", [3]int64{}, true},
		{"3x-1x32", [3]int64{}, true},
		{"3x0x32", [3]int64{}, true},
		{"3 x32x32", [3]int64{}, true},
		{"", [3]int64{}, true},
	}
	for _, tt := range tests {
		var got [3]int64
		err := (&shapeValue{&got}).Set(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Set(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	if s := (&shapeValue{&[3]int64{}}).String(); s != "" {
		t.Errorf("String of an unset shape = %q, want empty (no default shown)", s)
	}
}

func TestShapeJSON(t *testing.T) {
	tests := []struct {
		shape Shape
		json  string
	}{
		{nil, `null`},
		{Shape{}, `[]`},
		{Shape(onnximport.ShapeOf(3, 224, 224)), `[3,224,224]`},
		{Shape{{Sym: "batch_size"}, {Size: 10}}, `["batch_size",10]`},
		{Shape{onnximport.Unknown, {Sym: "N*3"}}, `["?","N*3"]`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(tt.shape)
		if err != nil || string(b) != tt.json {
			t.Errorf("Marshal(%v) = %s, %v; want %s", tt.shape, b, err, tt.json)
		}
		var back Shape
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.shape, back); diff != "" {
			t.Errorf("round trip of %s differs (-want +got):\n%s", tt.json, diff)
		}
	}
	for _, bad := range []string{`[1.5]`, `[-1]`, `[true]`, `{}`} {
		var s Shape
		if err := json.Unmarshal([]byte(bad), &s); err == nil {
			t.Errorf("Unmarshal(%s) succeeded, want an error", bad)
		}
	}
}

func TestPerModelDefault(t *testing.T) {
	got := perModelDefault(func(c models.Config) string { return shapeString(c.Input) })
	if want := "3x224x224; vgg-mini 1x28x28"; got != want {
		t.Errorf("input default = %q, want %q", got, want)
	}
	got = perModelDefault(func(c models.Config) string { return "13" })
	if got != "13" {
		t.Errorf("shared default = %q, want 13", got)
	}
}
