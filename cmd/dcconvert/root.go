package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// iostreams are the standard streams a command reads and writes. Commands
// write results to Out and messages to ErrOut, never to os.Stdout or
// os.Stderr directly, so that tests can capture both.
type iostreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// rootOptions holds the flags every command takes. Each command's options
// struct embeds a pointer to it; the values are those parsed from the
// command line by the time a run function is called.
type rootOptions struct {
	IO iostreams
	// Verbose asks for more detail on ErrOut (timings, steps).
	Verbose bool
	// Quiet suppresses everything on ErrOut but errors.
	Quiet bool
}

// infof writes a line for people to ErrOut unless Quiet is set.
func (o *rootOptions) infof(format string, args ...any) {
	if !o.Quiet {
		fmt.Fprintf(o.IO.ErrOut, format+"\n", args...)
	}
}

// debugf writes a line to ErrOut when Verbose is set.
func (o *rootOptions) debugf(format string, args ...any) {
	if o.Verbose {
		fmt.Fprintf(o.IO.ErrOut, format+"\n", args...)
	}
}

// validate checks the combination of global flags.
func (o *rootOptions) validate() error {
	if o.Verbose && o.Quiet {
		return usageErrorf("-v/--verbose and -q/--quiet cannot be used together")
	}
	return nil
}

// newRootCmd builds the dcconvert command with all its subcommands, reading
// and writing streams.
func newRootCmd(streams iostreams) *cobra.Command {
	opts := &rootOptions{IO: streams}
	cmd := newBareRootCmd(opts)
	cmd.AddCommand(
		newInspectCmd(opts, nil),
		newModelsCmd(opts, nil),
		newRewriteCmd(opts, nil),
		newEvalCmd(opts, nil),
		newExportCmd(opts, nil),
		newFinetuneCmd(opts, nil),
		newDemoCmd(opts, nil),
	)
	return cmd
}

// newBareRootCmd builds the dcconvert command without subcommands: its
// global flags, version, streams and error handling. Tests attach single
// subcommands to it.
func newBareRootCmd(opts *rootOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dcconvert <command> [flags]",
		Short: "Rewrite pretrained CNNs into decoupled networks",
		Long: strings.TrimSpace(`
dcconvert takes a pretrained plain-convolution ONNX model, rewrites its
convolutions into decoupled convolutions with the same weights, fine-tunes
the result and exports it.

Exit status: 0 on success, 1 on failure, 2 on a usage error.`),
		Version: buildVersion(),
		// main prints errors once, in its own form.
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          unknownCommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name())
				}
			}
			return usageErrorf("missing command: choose one of %s", strings.Join(names, ", "))
		},
		// Commands must not define their own PersistentPreRunE: cobra runs
		// only the closest one.
		PersistentPreRunE:          func(*cobra.Command, []string) error { return opts.validate() },
		CompletionOptions:          cobra.CompletionOptions{DisableDefaultCmd: true},
		SuggestionsMinimumDistance: 2,
	}
	cmd.SetIn(opts.IO.In)
	cmd.SetOut(opts.IO.Out)
	cmd.SetErr(opts.IO.ErrOut)
	cmd.SetFlagErrorFunc(flagError)
	cmd.SetHelpCommand(newHelpCmd())
	cmd.SetVersionTemplate("{{.Name}} {{.Version}}\n")
	pf := cmd.PersistentFlags()
	pf.BoolVarP(&opts.Verbose, "verbose", "v", false, "print more detail (steps, timings) to standard error")
	pf.BoolVarP(&opts.Quiet, "quiet", "q", false, "print nothing to standard error but errors")
	return cmd
}
