package rewrite

import (
	"strings"
	"testing"
)

func TestGlobRegexp(t *testing.T) {
	cases := []struct {
		glob, name string
		want       bool
	}{
		{"features.*", "features.0", true},
		{"features.*", "/features/features.0/Conv", false},
		{"*features.0*", "/features/features.0/Conv", true},
		{"conv?", "conv1", true},
		{"conv?", "conv12", false},
		{"layer[12].0", "layer2.0", true},
		{"layer[!12].0", "layer2.0", false},
		{"a+b", "a+b", true},
		{"a+b", "aab", false},
	}
	for _, c := range cases {
		re, err := globRegexp(c.glob)
		if err != nil {
			t.Fatalf("%q: %v", c.glob, err)
		}
		if got := re.MatchString(c.name); got != c.want {
			t.Errorf("%q matches %q = %v, want %v", c.glob, c.name, got, c.want)
		}
	}
}

// FuzzParseSelection: no selection expression makes the parser or the
// matchers panic.
func FuzzParseSelection(f *testing.F) {
	for _, s := range []string{"", "conv1", "features.*,!features.0", "0-3", "-1", "!*", "a[", "[]", "--1", "3--1", "!,"} {
		f.Add(s)
	}
	layers := []convLayer{{index: 0, names: []string{"conv1", "conv1.weight", "conv1"}}, {index: 1, names: []string{"/a/b/Conv"}}}
	f.Fuzz(func(t *testing.T, expr string) {
		items, err := parseSelection(expr)
		if err != nil {
			if !strings.Contains(err.Error(), "--layers") {
				t.Errorf("error %q does not name the flag", err)
			}
			return
		}
		for _, it := range items {
			for _, l := range layers {
				it.match(l, len(layers))
			}
		}
	})
}
