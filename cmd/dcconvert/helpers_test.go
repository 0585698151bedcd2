package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/cobra"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata")

// testIO returns streams reading an empty input and writing to buffers.
func testIO() (iostreams, *bytes.Buffer, *bytes.Buffer) {
	var out, errOut bytes.Buffer
	return iostreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, &out, &errOut
}

// parseArgs runs args through a root command that holds the one
// subcommand newCmd builds (with a run function that records the options
// instead of working) and returns the root options and the error.
func parseArgs(args []string, newCmd func(*rootOptions) *cobra.Command) (*rootOptions, error) {
	streams, _, _ := testIO()
	root := &rootOptions{IO: streams}
	cmd := newBareRootCmd(root)
	cmd.AddCommand(newCmd(root))
	cmd.SetArgs(args)
	_, err := cmd.ExecuteC()
	return root, err
}

// runCLI runs dcconvert with args and returns the exit code and what it
// wrote to standard output and standard error.
func runCLI(args ...string) (code int, stdout, stderr string) {
	streams, out, errOut := testIO()
	code = execute(args, streams)
	return code, out.String(), errOut.String()
}

// compareGolden compares got with the golden file testdata/name, or
// rewrites the file under -update.
func compareGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cmd/dcconvert -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got; go test ./cmd/dcconvert -update rewrites it):\n%s", path, diff)
	}
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// checkParse fails the test unless err is what a flag-parsing case wants:
// a usage error containing wantErr when that is not empty, else no error.
// It reports whether the case expected an error, so the caller stops.
func checkParse(t *testing.T, err error, wantErr string) (stop bool) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !isUsageError(err) || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error = %v, want a usage error containing %q", err, wantErr)
		}
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}
