package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestExitCodes runs whole command lines and checks the exit code and that
// errors are printed once, in main's form.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.onnx")
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // regexp the standard output must match
		stderr string // regexp the first line of standard error must match
	}{
		{name: "version", args: []string{"--version"}, code: exitOK, stdout: `^dcconvert \S+\n$`},
		{name: "help", args: []string{"--help"}, code: exitOK, stdout: `(?s)Usage:.*inspect.*models`},
		{name: "command help", args: []string{"models", "--help"}, code: exitOK, stdout: `(?s)--input CxHxW.*default 3x224x224; vgg-mini 1x28x28`},
		{name: "help command", args: []string{"help", "models"}, code: exitOK, stdout: `(?s)^Models builds.*--seed`},
		{name: "help unknown topic", args: []string{"help", "modles"}, code: exitUsage, stderr: `^dcconvert: unknown help topic "modles"$`},
		{name: "no command", args: nil, code: exitUsage, stderr: `^dcconvert: missing command: choose one of .*inspect.*models`},
		{name: "unknown command", args: []string{"inpsect"}, code: exitUsage, stderr: `^dcconvert: unknown command "inpsect" for "dcconvert"; did you mean inspect\?$`},
		{name: "unknown flag", args: []string{"--frobnicate"}, code: exitUsage, stderr: `^dcconvert: unknown flag: --frobnicate$`},
		{name: "unknown command flag", args: []string{"inspect", "--frobnicate", "m.onnx"}, code: exitUsage, stderr: `^dcconvert: unknown flag: --frobnicate$`},
		{name: "verbose and quiet", args: []string{"-v", "-q", "inspect", missing}, code: exitUsage, stderr: `^dcconvert: -v/--verbose and -q/--quiet cannot be used together$`},
		{name: "missing argument", args: []string{"inspect"}, code: exitUsage, stderr: `^dcconvert: inspect: missing argument MODEL$`},
		{name: "extra argument", args: []string{"inspect", "a", "b"}, code: exitUsage, stderr: `^dcconvert: inspect: unexpected argument "b"`},
		{name: "bad flag value", args: []string{"models", "vgg-mini", "-o", "x", "--classes", "ten"}, code: exitUsage, stderr: `^dcconvert: invalid value "ten" for --classes: not a whole number$`},
		{name: "missing flag value", args: []string{"models", "vgg-mini", "-o"}, code: exitUsage, stderr: `^dcconvert: flag needs an argument`},
		{name: "missing required flag", args: []string{"models", "vgg-mini"}, code: exitUsage, stderr: `^dcconvert: models: missing required flag -o/--output$`},
		{name: "unknown model", args: []string{"models", "alexnet", "-o", "x"}, code: exitUsage, stderr: `^dcconvert: unknown model "alexnet": choose one of vgg11, `},
		{name: "missing model file", args: []string{"inspect", missing}, code: exitFailure, stderr: `^dcconvert: reading ` + regexp.QuoteMeta(missing) + `: no such file or directory$`},
		{name: "unwritable output", args: []string{"models", "vgg-mini", "-o", filepath.Join(missing, "out.onnx")}, code: exitFailure, stderr: `^dcconvert: writing .*out.onnx: `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstderr: %s", code, tt.code, stderr)
			}
			if tt.stdout != "" && !regexp.MustCompile(tt.stdout).MatchString(stdout) {
				t.Errorf("stdout %q does not match %q", stdout, tt.stdout)
			}
			if tt.code == exitOK {
				if stderr != "" {
					t.Errorf("stderr = %q, want nothing", stderr)
				}
				return
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if !regexp.MustCompile(tt.stderr).MatchString(lines[0]) {
				t.Errorf("stderr %q does not match %q", lines[0], tt.stderr)
			}
			if n := strings.Count(stderr, "dcconvert: "); n != 1 {
				t.Errorf("stderr holds %d messages, want 1:\n%s", n, stderr)
			}
			wantLines := 1
			if tt.code == exitUsage {
				wantLines = 2
				if !regexp.MustCompile(`^Run 'dcconvert( \w+)? --help' for usage\.$`).MatchString(lines[len(lines)-1]) {
					t.Errorf("last line of stderr %q is not the usage hint", lines[len(lines)-1])
				}
			}
			if len(lines) != wantLines {
				t.Errorf("stderr has %d lines, want %d:\n%s", len(lines), wantLines, stderr)
			}
		})
	}
}

// TestUsageError checks how usage errors are recognised through wrapping.
func TestUsageError(t *testing.T) {
	base := errors.New("bad")
	tests := []struct {
		name  string
		err   error
		usage bool
	}{
		{"plain", base, false},
		{"usage", usageErrorf("bad %d", 1), true},
		{"wrapped usage", fmt.Errorf("context: %w", asUsageError(base)), true},
		{"joined usage", errors.Join(base, asUsageError(base)), true},
		{"flag error", flagError(nil, base), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := isUsageError(tt.err); got != tt.usage {
				t.Errorf("isUsageError(%v) = %v, want %v", tt.err, got, tt.usage)
			}
		})
	}
	if u := asUsageError(base); !errors.Is(u, base) {
		t.Errorf("asUsageError(%v) does not wrap it", base)
	}
}

// TestPrintError checks that a message of several lines is printed as one
// message with its further lines indented.
func TestPrintError(t *testing.T) {
	var b strings.Builder
	printError(&b, errors.Join(errors.New("reading m.onnx: first"), errors.New("second")))
	want := "dcconvert: reading m.onnx: first\n    second\n"
	if b.String() != want {
		t.Errorf("printError wrote %q, want %q", b.String(), want)
	}
}
