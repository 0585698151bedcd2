package dcconvert_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// module is the path of this module.
const module = "github.com/dcconvert/dcconvert"

// layers lists the module's packages from top to bottom as DESIGN.md's
// package table does; each may import only packages listed below it. A
// package below one of these paths (engine/ops, say) belongs to its layer.
// The measuring tools under bench/ and scripts/ sit above the command line:
// they may use every package and none may use them.
var layers = []string{
	"bench",
	"scripts",
	"cmd/dcconvert",
	"export",
	"finetune",
	"checkpoint",
	"data",
	"engine",
	"rewrite",
	"models",
	"dcnet",
	"onnximport",
	"internal/onnxpb",
}

// testOnly lists packages only tests may depend on.
var testOnly = []string{"internal/peer"}

// exclusive names, for import paths outside the module, the only layer
// that may import them directly ("gorgonia.org" covers every package of
// that host).
var exclusive = map[string]string{
	"github.com/spf13/cobra": "cmd/dcconvert",
	"gorgonia.org":           "engine",
}

// goPackage is what the check needs of `go list -json` for one package.
type goPackage struct {
	ImportPath string
	GoFiles    []string // non-test Go files; none for a directory of tests alone
	Imports    []string // direct imports of the non-test files
	Deps       []string // every package the non-test files depend on
}

// importRules are the rules checkImports enforces.
type importRules struct {
	Module    string
	Layers    []string          // module-relative paths, top to bottom
	TestOnly  []string          // module-relative paths
	Exclusive map[string]string // import path prefix -> the layer allowed to import it
}

// under reports whether path is prefix or a package below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

// rel returns path relative to the module, and whether it is in it.
func (r importRules) rel(path string) (string, bool) {
	if path == r.Module {
		return ".", true
	}
	return strings.CutPrefix(path, r.Module+"/")
}

// layer returns the index of the layer a module-relative path belongs to,
// the longest matching entry winning, or -1.
func (r importRules) layer(rel string) int {
	best := -1
	for i, l := range r.Layers {
		if under(rel, l) && (best < 0 || len(l) > len(r.Layers[best])) {
			best = i
		}
	}
	return best
}

// isTestOnly reports whether a module-relative path is a test-only package.
func (r importRules) isTestOnly(rel string) bool {
	return slices.ContainsFunc(r.TestOnly, func(p string) bool { return under(rel, p) })
}

// checkImports returns every violation of the rules in pkgs, the
// non-test import graph of the module:
//   - every package of the module belongs to a layer or is test-only;
//   - a package imports only module packages of layers below its own (or
//     packages of its own layer below its path, such as engine/ops from
//     engine);
//   - no non-test package depends, even indirectly, on a test-only one;
//   - an exclusive import path is imported only by its layer.
func checkImports(r importRules, pkgs []goPackage) []error {
	var errs []error
	for _, p := range pkgs {
		rel, ok := r.rel(p.ImportPath)
		if !ok || len(p.GoFiles) == 0 || r.isTestOnly(rel) {
			continue // outside the module, tests alone, or test helpers
		}
		li := r.layer(rel)
		layer := ""
		if li < 0 {
			errs = append(errs, fmt.Errorf("package %s is not in the layering table (DESIGN.md and layering_test.go list every package)", rel))
		} else {
			layer = r.Layers[li]
		}
		for _, dep := range p.Deps {
			if drel, ok := r.rel(dep); ok && r.isTestOnly(drel) {
				errs = append(errs, fmt.Errorf("package %s depends on %s, which only tests may use", rel, drel))
			}
		}
		for _, imp := range p.Imports {
			if prefix, ok := exclusivePrefix(r.Exclusive, imp); ok {
				if owner := r.Exclusive[prefix]; layer != owner {
					errs = append(errs, fmt.Errorf("package %s imports %s: only %s may", rel, imp, owner))
				}
				continue
			}
			irel, ok := r.rel(imp)
			if !ok || r.isTestOnly(irel) {
				continue // outside the module, or reported above
			}
			il := r.layer(irel)
			switch {
			case il < 0 || li < 0:
				// Reported as a package missing from the table.
			case il < li:
				errs = append(errs, fmt.Errorf("package %s imports %s, which is listed above it", rel, irel))
			case il == li && !under(irel, rel) && irel != rel:
				errs = append(errs, fmt.Errorf("package %s imports %s of the same layer %s", rel, irel, r.Layers[li]))
			}
		}
	}
	return errs
}

// exclusivePrefix returns the entry of exclusive that covers path.
func exclusivePrefix(exclusive map[string]string, path string) (string, bool) {
	for prefix := range exclusive {
		if under(path, prefix) {
			return prefix, true
		}
	}
	return "", false
}

// listPackages runs `go list -deps` over the module and returns its
// packages.
func listPackages(t *testing.T) []goPackage {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	cmd := exec.Command(goTool, "list", "-e", "-deps", "-json=ImportPath,GoFiles,Imports,Deps", "./...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var pkgs []goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestImportLayering enforces DESIGN.md's import direction on the module
// as it is.
func TestImportLayering(t *testing.T) {
	rules := importRules{Module: module, Layers: layers, TestOnly: testOnly, Exclusive: exclusive}
	pkgs := listPackages(t)
	var checked []string
	for _, p := range pkgs {
		if rel, ok := rules.rel(p.ImportPath); ok && len(p.GoFiles) > 0 {
			checked = append(checked, rel)
		}
	}
	for _, must := range []string{"onnximport", "internal/onnxpb", "cmd/dcconvert"} {
		if !slices.Contains(checked, must) {
			t.Fatalf("go list did not report package %s; it reported %v", must, checked)
		}
	}
	for _, err := range checkImports(rules, pkgs) {
		t.Error(err)
	}
	t.Logf("found %d packages in the module: %s", len(checked), strings.Join(checked, " "))
}

// TestCheckImports runs the checker on made-up import graphs.
func TestCheckImports(t *testing.T) {
	rules := importRules{Module: "example.com/m", Layers: []string{"cmd/tool", "engine", "lib", "internal/pb"},
		TestOnly: []string{"internal/peer"}, Exclusive: map[string]string{"github.com/spf13/cobra": "cmd/tool", "gorgonia.org": "engine"}}
	pkg := func(path string, imports []string, deps ...string) goPackage {
		full := func(ps []string) []string {
			out := make([]string, len(ps))
			for i, p := range ps {
				if strings.Contains(p, ".") {
					out[i] = p
				} else {
					out[i] = "example.com/m/" + p
				}
			}
			return out
		}
		return goPackage{ImportPath: "example.com/m/" + path, GoFiles: []string{"x.go"}, Imports: full(imports), Deps: full(append(deps, imports...))}
	}
	good := []goPackage{
		pkg("cmd/tool", []string{"engine", "lib", "github.com/spf13/cobra", "fmt"}),
		pkg("engine", []string{"engine/ops", "lib", "gorgonia.org/gorgonia"}, "internal/pb"),
		pkg("engine/ops", []string{"lib", "gorgonia.org/tensor"}),
		pkg("lib", []string{"internal/pb", "google.golang.org/protobuf/proto"}),
		pkg("internal/pb", nil),
		pkg("internal/peer", []string{"cmd/tool", "lib"}),
		{ImportPath: "fmt", GoFiles: []string{"print.go"}},
		{ImportPath: "example.com/m/tests", Imports: []string{"example.com/m/cmd/tool"}}, // tests alone
	}
	if errs := checkImports(rules, good); len(errs) != 0 {
		t.Errorf("a graph that keeps the rules got violations: %v", errs)
	}

	tests := []struct {
		name string
		pkgs []goPackage
		want string
	}{
		{"upward import", []goPackage{pkg("lib", []string{"engine"})}, "package lib imports engine, which is listed above it"},
		{"bottom imports top", []goPackage{pkg("internal/pb", []string{"cmd/tool"})}, "package internal/pb imports cmd/tool, which is listed above it"},
		{"sibling of a sub-package", []goPackage{pkg("engine/ops", []string{"engine"})}, "package engine/ops imports engine of the same layer engine"},
		{"cobra outside the command", []goPackage{pkg("lib", []string{"github.com/spf13/cobra"})}, "package lib imports github.com/spf13/cobra: only cmd/tool may"},
		{"gorgonia outside the engine", []goPackage{pkg("cmd/tool", []string{"gorgonia.org/tensor"})}, "package cmd/tool imports gorgonia.org/tensor: only engine may"},
		{"test-only package imported", []goPackage{pkg("engine", []string{"internal/peer"})}, "package engine depends on internal/peer, which only tests may use"},
		{"test-only package reached indirectly", []goPackage{pkg("cmd/tool", []string{"lib"}, "internal/peer")}, "package cmd/tool depends on internal/peer"},
		{"package missing from the table", []goPackage{pkg("util", nil)}, "package util is not in the layering table"},
		{"package missing from the table imports cobra", []goPackage{pkg("util", []string{"github.com/spf13/cobra"})}, "package util imports github.com/spf13/cobra: only cmd/tool may"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := checkImports(rules, append(slices.Clone(good), tt.pkgs...))
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			if !slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, tt.want) }) {
				t.Errorf("violations %q lack %q", msgs, tt.want)
			}
		})
	}
}
