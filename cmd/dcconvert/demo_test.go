package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// demoLimit is the longest the demo may take with its defaults: it is
// meant to take under 3 minutes on a 2-core machine.
const demoLimit = 5 * time.Minute

// TestDemo runs the demo with its defaults and checks that it succeeds
// in time, prints every stage with an accuracy and leaves every file.
func TestDemo(t *testing.T) {
	out := filepath.Join(t.TempDir(), "demo")
	start := time.Now()
	code, stdout, stderr := runCLI("demo", "--out", out)
	took := time.Since(start)
	t.Logf("demo took %v:\n%s", took.Round(time.Millisecond), stdout)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	if took > demoLimit {
		t.Errorf("the demo took %v, more than %v", took, demoLimit)
	}
	for _, want := range []string{"plain: pretrain 1 epoch", "decoupled: rewrite + calibrate", "decoupled: fine-tune 1 epoch",
		"decoupled: export ONNX", "every file is in " + out} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the table lacks %q", want)
		}
	}
	for _, want := range []string{"$ dcconvert finetune", "$ dcconvert rewrite", "--calib synthetic --alpha auto", "$ dcconvert export"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("the printed commands lack %q:\n%s", want, stderr)
		}
	}
	files := dirEntries(t, out)
	for _, want := range []string{"init.onnx", "plain.onnx", "plain.dc.onnx", "plain.dc.ft.onnx", "pretrain", "finetune"} {
		if !strings.Contains(strings.Join(files, " "), want) {
			t.Errorf("%s lacks %s: %v", out, want, files)
		}
	}
	if code, _, stderr := runCLI("demo", "--out", out); code != 1 || !strings.Contains(stderr, "it is not empty") {
		t.Errorf("a second demo into the same directory: exit %d, %s", code, stderr)
	}
}

// TestDemoVerdict checks the demo's failure conditions.
func TestDemoVerdict(t *testing.T) {
	cases := []struct {
		plain, ft, exported float64
		want                string
	}{
		{98, 97, 97, ""},
		{90, 97, 97.1, ""},
		{89.9, 97, 97, "below 90%"},
		{98, 97, 96.8, "0.20 points apart"},
		{98, 97, 97.2, "0.20 points apart"},
	}
	for _, c := range cases {
		err := demoVerdict(c.plain, c.ft, c.exported)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("demoVerdict(%v, %v, %v) = %v, want %q", c.plain, c.ft, c.exported, err, c.want)
		}
	}
}
