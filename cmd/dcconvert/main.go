package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes of dcconvert.
const (
	exitOK      = 0 // the command succeeded
	exitFailure = 1 // the command failed
	exitUsage   = 2 // the command was invoked wrongly
)

func main() {
	os.Exit(execute(os.Args[1:], iostreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}))
}

// execute runs dcconvert with the given arguments and streams and returns
// its exit code. It is the one place where errors become exit codes and
// where they are printed.
func execute(args []string, streams iostreams) int {
	root := newRootCmd(streams)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	printError(streams.ErrOut, err)
	if !isUsageError(err) {
		return exitFailure
	}
	if cmd == nil {
		cmd = root
	}
	fmt.Fprintf(streams.ErrOut, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return exitUsage
}

// printError writes err as "dcconvert: message"; the further lines of a
// message that holds several problems are indented under the first.
func printError(w io.Writer, err error) {
	lines := strings.Split(strings.TrimRight(err.Error(), "\n"), "\n")
	fmt.Fprintf(w, "dcconvert: %s\n", lines[0])
	for _, l := range lines[1:] {
		fmt.Fprintf(w, "    %s\n", l)
	}
}

// isUsageError reports whether err says the command was invoked wrongly.
func isUsageError(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}
