package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// newHelpCmd builds "dcconvert help [command]". It replaces cobra's own
// help command, which shows the general help for a topic it does not know
// and exits the process itself when writing fails.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  "Help prints the help of the named command, or of dcconvert.",
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil || target == nil || len(rest) > 0 {
				return usageErrorf("unknown help topic %q", strings.Join(args, " "))
			}
			return target.Help()
		},
	}
}
