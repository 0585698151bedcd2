package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// writeInspectText writes r for people: a header of key facts, then
// aligned tables of inputs, outputs, operators and convolutions, then the
// warnings.
func writeInspectText(w io.Writer, r *InspectReport) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }

	producer := strings.TrimSpace(r.ProducerName + " " + r.ProducerVersion)
	if producer == "" {
		producer = "-"
	}
	opsets := make([]string, len(r.Opsets))
	for i, o := range r.Opsets {
		opsets[i] = fmt.Sprintf("%s %d", o.Domain, o.Version)
	}
	p("file:\t%s", r.File)
	p("producer:\t%s", producer)
	p("IR version:\t%d", r.IRVersion)
	p("opsets:\t%s", strings.Join(opsets, ", "))
	p("graph:\t%s", orDash(r.Graph))
	p("nodes:\t%d", r.Nodes)
	p("convolutions:\t%d, %d rewritable, %d decoupled", len(r.Convs), r.Rewritable, r.Decoupled)
	p("parameters:\t%s (elements of floating-point initializers)", groupDigits(r.Parameters))
	if err := tw.Flush(); err != nil {
		return err
	}

	// Input shapes are always the declared ones; output shapes are
	// marked when they are not inferred.
	values := func(title string, vs []InspectValue) {
		p("\n%s:", title)
		p("  NAME\tTYPE\tSHAPE")
		for _, v := range vs {
			shape := v.Shape.String()
			if title == "outputs" && v.ShapeFrom == shapeDeclared {
				shape += " (declared, not inferred)"
			}
			p("  %s\t%s\t%s", v.Name, orDash(v.Type), shape)
		}
	}
	values("inputs", r.Inputs)
	values("outputs", r.Outputs)

	p("\noperators:")
	p("  OP\tCOUNT")
	for _, o := range r.Operators {
		p("  %s\t%d", o.Op, o.Count)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	if len(r.Convs) > 0 {
		p("\nconvolutions:")
		p("  NAME\tIN\tOUT\tKERNEL\tSTRIDES\tPADS\tDILATIONS\tGROUP\tPARAMS\tOUTPUT\tREWRITABLE")
		for _, c := range r.Convs {
			rw := "yes"
			switch {
			case c.Decoupled != nil && c.Decoupled.Error != "":
				rw = "decoupled: " + c.Decoupled.Error
			case c.Decoupled != nil:
				rw = "decoupled: " + c.Decoupled.Operator
				if !c.Decoupled.Calibrated {
					rw += ", uncalibrated"
				}
			case !c.Rewritable:
				rw = "no: " + c.Reason
			}
			p("  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s", c.Name,
				count(c.InChannels), count(c.OutChannels), sizes(c.Kernel), sizes(c.Strides),
				pads(c.Pads, c.AutoPad), sizes(c.Dilations), c.Group, groupDigits(c.Parameters),
				c.OutputShape, rw)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}

	if len(r.Warnings) > 0 {
		p("\nwarnings:")
		for _, w := range r.Warnings {
			p("  %s", w)
		}
	}
	return tw.Flush()
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// count formats a size that is 0 when unknown.
func count(n int64) string {
	if n == 0 {
		return "?"
	}
	return strconv.FormatInt(n, 10)
}

// sizes formats per-axis sizes as "3x3", or "?" when unknown.
func sizes(v []int64) string {
	if v == nil {
		return "?"
	}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatInt(x, 10)
	}
	return strings.Join(parts, "x")
}

// pads formats ONNX pads: per axis ("1x1") when begin and end pads agree,
// else the ONNX list of begin pads then end pads ("[0,0,1,1]"). Unknown
// pads show the auto_pad setting that decides them.
func pads(v []int64, autoPad string) string {
	if v == nil {
		if autoPad != "" && autoPad != "NOTSET" {
			return autoPad
		}
		return "?"
	}
	k := len(v) / 2
	if len(v)%2 == 0 && slices.Equal(v[:k], v[k:]) {
		return sizes(v[:k])
	}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatInt(x, 10)
	}
	return "[" + strings.Join(parts, ",") + "]"
}
