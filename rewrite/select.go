package rewrite

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// SelectionError is a layer selection that is malformed or names layers
// the model does not have. Its message names the selection item.
type SelectionError struct{ Msg string }

func (e *SelectionError) Error() string { return e.Msg }

// convLayer is a convolution layer of the graph: a Conv or a decoupled
// node.
type convLayer struct {
	index int // among the convolution layers
	node  int // in the graph
	names []string
}

// convLayers lists the convolution layers of the main graph with the
// names a selection can match: the node name, the weight name and the
// weight name without ".weight".
func convLayers(g *onnxpb.GraphProto) []convLayer {
	var out []convLayer
	for i, n := range g.GetNode() {
		isConv := onnximport.IsDefaultDomain(n.GetDomain()) && n.GetOpType() == onnximport.OpConv
		if !isConv && !onnximport.IsDecoupledConv(n) {
			continue
		}
		l := convLayer{index: len(out), node: i, names: []string{n.GetName()}}
		if in := n.GetInput(); len(in) > 1 && in[1] != "" {
			l.names = append(l.names, in[1])
			if mod, ok := strings.CutSuffix(in[1], ".weight"); ok {
				l.names = append(l.names, mod)
			}
		}
		out = append(out, l)
	}
	return out
}

// selectItem is one parsed item of a selection.
type selectItem struct {
	text     string
	exclude  bool
	explicit bool // a name or a single index
	match    func(l convLayer, count int) bool
}

var rangeRE = regexp.MustCompile(`^(-?[0-9]+)-(-?[0-9]+)$`)

// parseSelection parses a selection expression.
func parseSelection(expr string) ([]selectItem, error) {
	var items []selectItem
	for _, raw := range strings.Split(expr, ",") {
		text := strings.TrimSpace(raw)
		it := selectItem{text: text}
		if rest, ok := strings.CutPrefix(text, "!"); ok {
			it.exclude, text = true, strings.TrimSpace(rest)
		}
		if text == "" {
			return nil, &SelectionError{fmt.Sprintf("--layers %q: empty item", expr)}
		}
		if i, err := strconv.Atoi(text); err == nil {
			it.explicit = true
			it.match = func(l convLayer, count int) bool { return l.index == resolveIndex(i, count) }
		} else if m := rangeRE.FindStringSubmatch(text); m != nil {
			a, _ := strconv.Atoi(m[1])
			b, _ := strconv.Atoi(m[2])
			it.match = func(l convLayer, count int) bool {
				lo, hi := resolveIndex(a, count), resolveIndex(b, count)
				return lo <= l.index && l.index <= hi
			}
		} else if strings.ContainsAny(text, "*?[") {
			re, err := globRegexp(text)
			if err != nil {
				return nil, &SelectionError{fmt.Sprintf("--layers item %q: %v", text, err)}
			}
			it.match = func(l convLayer, _ int) bool { return matchAny(re, l.names) }
		} else {
			it.explicit = true
			name := text
			it.match = func(l convLayer, _ int) bool { return contains(l.names, name) }
		}
		items = append(items, it)
	}
	return items, nil
}

// resolveIndex maps a negative index to one counted from the end.
func resolveIndex(i, count int) int {
	if i < 0 {
		return count + i
	}
	return i
}

// globRegexp compiles a glob pattern in which * and ? match any
// characters, "/" and "." included, and [...] is a character class.
func globRegexp(glob string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(glob); i++ {
		switch c := glob[i]; c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := strings.IndexByte(glob[i:], ']')
			if j < 0 {
				return nil, errors.New("unclosed [")
			}
			class := glob[i+1 : i+j]
			if strings.HasPrefix(class, "!") {
				class = "^" + class[1:]
			}
			b.WriteString("[" + strings.ReplaceAll(class, `\`, `\\`) + "]")
			i += j
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

func matchAny(re *regexp.Regexp, names []string) bool {
	for _, n := range names {
		if re.MatchString(n) {
			return true
		}
	}
	return false
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// selectLayers resolves the selection into State.Selected: explicit
// items that cannot be rewritten are errors, implicit ones are recorded as
// skipped.
func selectLayers(st *State) error {
	g := st.Model.Graph()
	layers := convLayers(g)
	if len(layers) == 0 {
		return errors.New("the model has no Conv to rewrite")
	}
	st.Report.Total = len(layers)
	chosen := make([]bool, len(layers))
	explicit := make([]bool, len(layers))
	expr := strings.TrimSpace(st.Options.Layers)
	if expr == "" {
		for i := range chosen {
			chosen[i] = true
		}
	} else {
		items, err := parseSelection(expr)
		if err != nil {
			return err
		}
		if items[0].exclude {
			for i := range chosen {
				chosen[i] = true
			}
		}
		var errs []error
		for _, it := range items {
			hit := false
			for i, l := range layers {
				if !it.match(l, len(layers)) {
					continue
				}
				hit = true
				chosen[i] = !it.exclude
				explicit[i] = !it.exclude && it.explicit
			}
			if !hit {
				errs = append(errs, &SelectionError{fmt.Sprintf("--layers item %q matches no convolution layer (the model has %d: %s)",
					it.text, len(layers), layerList(g, layers))})
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	var errs []error
	for i, l := range layers {
		if !chosen[i] {
			continue
		}
		n := g.GetNode()[l.node]
		if problems := Problems(st.Model, n); len(problems) > 0 {
			reason := strings.Join(problems, "; ")
			if explicit[i] {
				errs = append(errs, fmt.Errorf("layer %q cannot be rewritten: %s", n.GetName(), reason))
			} else {
				st.Report.Skipped = append(st.Report.Skipped, Skipped{Name: n.GetName(), Reason: reason})
			}
			continue
		}
		st.Selected = append(st.Selected, l.node)
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(st.Selected) == 0 {
		var why []string
		for _, s := range st.Report.Skipped {
			why = append(why, fmt.Sprintf("%q: %s", s.Name, s.Reason))
		}
		return fmt.Errorf("no selected layer can be rewritten (%s)", strings.Join(why, "; "))
	}
	return nil
}

// layerList names the layers for messages, eliding the middle of long
// lists.
func layerList(g *onnxpb.GraphProto, layers []convLayer) string {
	var names []string
	for _, l := range layers {
		names = append(names, fmt.Sprintf("%d %s", l.index, g.GetNode()[l.node].GetName()))
	}
	if len(names) > 8 {
		names = append(append(names[:4:4], "..."), names[len(names)-3:]...)
	}
	return strings.Join(names, ", ")
}
