package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dcconvert/dcconvert/internal/peer"
)

// exampleOrder lists the commands in the order their help examples build
// on each other: models writes the files inspect, rewrite and finetune
// read, finetune the run that export reads, export the model eval reads.
var exampleOrder = []string{"models", "inspect", "rewrite", "finetune", "export", "eval", "demo"}

// fashionMNIST is where Debian's dataset-fashion-mnist puts the data set
// the examples use.
const fashionMNIST = "/usr/share/datasets/fashion-mnist"

// TestHelpExamples runs every example of every command's help, in order,
// in one directory, as a user would copy them.
func TestHelpExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every help example (about a minute); run without -short")
	}
	if _, err := os.Stat(fashionMNIST); err != nil {
		if peer.Require() {
			t.Fatalf("the examples use %s: apt-get install -y dataset-fashion-mnist", fashionMNIST)
		}
		t.Skipf("the examples use %s: apt-get install -y dataset-fashion-mnist", fashionMNIST)
	}
	t.Chdir(t.TempDir())
	root := newRootCmd(iostreams{})
	ran := 0
	for _, name := range exampleOrder {
		cmd, _, err := root.Find([]string{name})
		if err != nil || cmd.Name() != name {
			t.Fatalf("no command %s", name)
		}
		if strings.TrimSpace(cmd.Example) == "" {
			t.Errorf("%s has no example", name)
		}
		for _, line := range strings.Split(cmd.Example, "\n") {
			args, err := shellWords(strings.TrimSpace(line))
			if err != nil || len(args) < 2 || args[0] != "dcconvert" {
				t.Errorf("%s: example %q is not a dcconvert command line (%v)", name, line, err)
				continue
			}
			start := time.Now()
			code, _, stderr := runCLI(args[1:]...)
			t.Logf("%v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(line))
			if code != 0 {
				t.Errorf("%s: exit %d:\n%s", line, code, stderr)
			}
			ran++
		}
	}
	t.Logf("ran %d help examples", ran)
}

// shellWords splits a command line as a POSIX shell would for the
// quoting the examples use: words separated by spaces, single-quoted
// parts taken literally.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range s {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, in = true, true
		case r == ' ':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quoted {
		return nil, os.ErrInvalid
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}
