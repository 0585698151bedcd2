package checkpoint

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/dcconvert/dcconvert/onnximport"
)

// The files of a run directory.
const (
	ModelFile   = "model.onnx"       // the model being trained
	RunFile     = "run.json"         // configuration, preprocessing, class names, fingerprints
	LastFile    = "last.safetensors" // the weights and training state after the latest step saved
	BestFile    = "best.safetensors" // the weights that scored best on validation
	MetricsFile = "metrics.jsonl"    // one Record per line
	CurvesFile  = "curves.png"       // the plot of the metrics (PlotCurves)
)

// Dir is a run directory: the directory in which fine-tuning keeps the
// model, its configuration, checkpoints and metrics.
type Dir string

// Path returns the path of a file of the run directory, such as
// d.Path(LastFile).
func (d Dir) Path(file string) string {
	return filepath.Join(string(d), file)
}

// Check reports whether d is an existing directory holding RunFile and
// ModelFile. Its error says what is missing ("runs/a is not a run
// directory: no run.json") and wraps fs.ErrNotExist when something does
// not exist.
func (d Dir) Check() error {
	info, err := os.Stat(string(d))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &dirError{dir: d, problem: "it does not exist", err: fs.ErrNotExist}
	case err != nil:
		return &dirError{dir: d, problem: unwrapPath(err).Error(), err: err}
	case !info.IsDir():
		return &dirError{dir: d, problem: "it is not a directory"}
	}
	var missing []string
	for _, name := range []string{RunFile, ModelFile} {
		info, err := os.Stat(d.Path(name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		case err != nil:
			return &dirError{dir: d, problem: fmt.Sprintf("%s: %v", name, unwrapPath(err)), err: err}
		case !info.Mode().IsRegular():
			return &dirError{dir: d, problem: name + " is not a regular file"}
		}
	}
	if len(missing) > 0 {
		return &dirError{dir: d, problem: "no " + strings.Join(missing, " and no "), err: fs.ErrNotExist}
	}
	return nil
}

// dirError is the error of Dir.Check.
type dirError struct {
	dir     Dir
	problem string
	err     error // what it wraps, or nil
}

func (e *dirError) Error() string {
	return fmt.Sprintf("%s is not a run directory: %s", e.dir, e.problem)
}

func (e *dirError) Unwrap() error { return e.err }

// writeAtomic writes b to path through a temporary file in the same
// directory and a rename, so that path holds its old content or all of b.
func writeAtomic(path string, b []byte) error {
	if err := onnximport.WriteFileAtomic(path, b); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
