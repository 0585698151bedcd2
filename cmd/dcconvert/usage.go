package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// usageError is an error in how dcconvert was invoked: an unknown command
// or flag, a bad flag value, a missing flag or argument. main exits with
// code 2 for it.
type usageError struct {
	err error
}

// Error returns the message of the wrapped error.
func (e *usageError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error.
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf formats a usage error; %w wraps as in fmt.Errorf.
func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// asUsageError marks err as a usage error.
func asUsageError(err error) error {
	if err == nil || isUsageError(err) {
		return err
	}
	return &usageError{err: err}
}

// flagError turns the errors of flag parsing into usage errors. It is the
// FlagErrorFunc of every command, inherited from the root.
func flagError(_ *cobra.Command, err error) error {
	var inv *pflag.InvalidValueError
	var num *strconv.NumError
	if errors.As(err, &inv) && errors.As(err, &num) {
		what := "not a whole number"
		switch {
		case num.Func == "ParseBool":
			what = "want true or false"
		case num.Func == "ParseFloat":
			what = "not a number"
		case errors.Is(num.Err, strconv.ErrRange):
			what = "out of range"
		}
		return usageErrorf("invalid value %q for --%s: %s", inv.GetValue(), inv.GetFlag().Name, what)
	}
	return asUsageError(err)
}

// exactArgs returns an argument validator that wants exactly the named
// arguments, for example exactArgs("MODEL").
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) < len(names):
			missing := names[len(args):]
			return usageErrorf("%s: missing argument %s", cmd.Name(), strings.Join(missing, " "))
		case len(args) > len(names):
			return usageErrorf("%s: unexpected argument %q (want %s)", cmd.Name(), args[len(names)], strings.Join(names, " "))
		}
		return nil
	}
}

// unknownCommand is the argument validator of a command that only groups
// subcommands: any argument is a command name that does not exist.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += fmt.Sprintf("; did you mean %s?", strings.Join(s, " or "))
	}
	return usageErrorf("%s", msg)
}
