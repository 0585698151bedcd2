package peer

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// debianPython is Debian's interpreter, the one that sees python3-onnx and
// python3-torch; it is tried before any interpreter on PATH.
const debianPython = "/usr/bin/python3"

// debianPackages names the Debian package that provides a Python module, for
// the message of a skipped test.
var debianPackages = map[string]string{
	"onnx":        "python3-onnx",
	"torch":       "python3-torch",
	"torchvision": "python3-torchvision",
	"numpy":       "python3-numpy",
}

// pythonCache remembers, per sorted module list, the interpreter found (or
// "" when none can import them), so each test binary probes once.
var pythonCache = struct {
	sync.Mutex
	found map[string]string
}{found: map[string]string{}}

// Python returns the path of an interpreter (Debian's /usr/bin/python3 first)
// that can import all modules; if none, the test is skipped with a message
// naming what to install, or fails when Require().
func Python(t testing.TB, modules ...string) string {
	t.Helper()
	path, err := findPython(modules)
	if err != nil {
		missing(t, "%v", err)
		return ""
	}
	return path
}

// findPython returns the first interpreter that imports every module.
func findPython(modules []string) (string, error) {
	for _, m := range modules {
		if m == "" || strings.ContainsAny(m, " ,;\n\"'") {
			return "", fmt.Errorf("finding python: module name %q is not valid", m)
		}
	}
	key := strings.Join(modules, ",")
	pythonCache.Lock()
	defer pythonCache.Unlock()
	path, ok := pythonCache.found[key]
	if !ok {
		path = probePython(modules)
		pythonCache.found[key] = path
	}
	if path == "" {
		return "", fmt.Errorf("no python3 can import %s; install %s",
			strings.Join(modules, ", "), installHint(modules))
	}
	return path, nil
}

// probePython tries the candidate interpreters in order.
func probePython(modules []string) string {
	candidates := []string{debianPython}
	for _, name := range []string{"python3", "python"} {
		if p, err := exec.LookPath(name); err == nil {
			candidates = append(candidates, p)
		}
	}
	code := "pass"
	if len(modules) > 0 {
		code = "import " + strings.Join(modules, ", ")
	}
	for _, c := range candidates {
		if err := exec.Command(c, "-c", code).Run(); err == nil {
			return c
		}
	}
	return ""
}

// installHint names the Debian packages that provide the modules.
func installHint(modules []string) string {
	pkgs := []string{"python3"}
	for _, m := range modules {
		p, ok := debianPackages[m]
		if !ok {
			p = "python3-" + m
		}
		pkgs = append(pkgs, p)
	}
	return "Debian packages (apt-get install -y " + strings.Join(pkgs, " ") + ")"
}

// checkScript runs the full ONNX checker on a model file. onnx 1.12's
// check_model(path, full_check=True) writes the shape-inferred model over the
// file it checks; this script performs the same checks (the checker on the
// path, then strict shape inference with type checks) but writes the inferred
// model to a temporary directory, so the file is left as it was.
const checkScript = `
import os, sys, tempfile
import onnx
import onnx.checker
import onnx.shape_inference
path = sys.argv[1]
try:
    onnx.checker.check_model(path)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.shape_inference.infer_shapes_path(
            path, os.path.join(tmp, "inferred.onnx"), check_type=True, strict_mode=True)
except Exception as e:
    sys.stderr.write("%s: %s\n" % (type(e).__name__, str(e).strip()))
    sys.exit(1)
`

// CheckModel runs onnx.checker.check_model(path, full_check=True) (load from
// path so large models work) and fails the test with the checker's message if
// it rejects the model.
func CheckModel(t testing.TB, path string) {
	t.Helper()
	py := Python(t, "onnx")
	if err := checkModel(py, path); err != nil {
		t.Fatal(err)
	}
}

// checkModel runs checkScript with the interpreter py.
func checkModel(py, path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("onnx checker: %s: %w", path, err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(py, "-c", checkScript, abs)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("onnx checker rejects %s: %s", path, msg)
	}
	return nil
}
