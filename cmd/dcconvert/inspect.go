package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dcconvert/dcconvert/onnximport"
)

// inspectOptions are the options of "dcconvert inspect".
type inspectOptions struct {
	*rootOptions
	// Model is the model file to describe.
	Model string
	// JSON writes the report as JSON (InspectReport) instead of text.
	JSON bool
}

// newInspectCmd builds the inspect command. runF replaces runInspect when
// not nil, so that tests can see the parsed options.
func newInspectCmd(root *rootOptions, runF func(*inspectOptions) error) *cobra.Command {
	opts := &inspectOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "inspect MODEL",
		Short: "Describe a model: inputs, outputs, operators, convolutions, parameters",
		Long: strings.TrimSpace(`
Inspect reads an ONNX model, checks it, infers the shapes of its values and
describes it: producer, IR version and operator sets; graph inputs and
outputs with their shapes; how many nodes of each operator; one row per Conv
node with its channels, kernel, strides, pads, dilations, group, parameter
count and output shape, and whether the decoupled-convolution rewrite applies
to it (a default-domain Conv with group 1 and a 4-D weight stored as an
initializer) or why not.

PADS shows one value per axis when the begin and end pads agree, otherwise
ONNX's list of begin pads then end pads; pads of auto_pad SAME_UPPER and
SAME_LOWER are resolved from the input shape. Parameters count the elements
of every floating-point initializer, BatchNormalization running statistics
included. A "?" is a size that could not be inferred.

Shapes that cannot be inferred (an operator shape inference does not
support, say) are listed as warnings; the rest of the report is still
given. With --json the report is one JSON object whose fields are documented
with the InspectReport type of this command's source.`),
		Example: "  dcconvert inspect vgg-mini.onnx\n" +
			"  dcconvert inspect vgg11_cifar.onnx --json",
		Args: exactArgs("MODEL"),
		RunE: func(_ *cobra.Command, args []string) error {
			opts.Model = args[0]
			if runF != nil {
				return runF(opts)
			}
			return runInspect(opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "write the report as one JSON object")
	return cmd
}

// runInspect reads opts.Model and writes its report to opts.IO.Out.
func runInspect(opts *inspectOptions) error {
	start := time.Now()
	m, err := onnximport.ReadFile(opts.Model)
	if err != nil {
		return err
	}
	read := time.Now()
	r := newInspectReport(opts.Model, m)
	opts.debugf("read and checked %s in %v, described it in %v", opts.Model,
		read.Sub(start).Round(time.Millisecond), time.Since(read).Round(time.Millisecond))
	if opts.JSON {
		enc := json.NewEncoder(opts.IO.Out)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	} else {
		err = writeInspectText(opts.IO.Out, r)
	}
	if err != nil {
		return fmt.Errorf("writing the report of %s: %w", opts.Model, err)
	}
	return nil
}
