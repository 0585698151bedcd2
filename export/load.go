package export

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// The checkpoints of a run directory that Load takes by name; anything
// else it is given is the path of a checkpoint file.
const (
	Best = "best" // best.safetensors, or last.safetensors when there is none
	Last = "last" // last.safetensors
)

// Trained is a fine-tuned model as a run directory holds it: the model
// the run started from, what run.json records, and one checkpoint of the
// weights and running statistics it reached, checked against the model.
type Trained struct {
	// Dir is the run directory and Run the content of its run.json.
	Dir checkpoint.Dir
	Run checkpoint.Run
	// Checkpoint is the path of the checkpoint file read.
	Checkpoint string
	// FellBack is set when Load was asked for the best checkpoint and the
	// run directory has none (no validation has run yet), so the last
	// one was read instead.
	FellBack bool
	// Step is the number of optimisation steps the checkpoint was saved
	// after, or -1 when its metadata does not say.
	Step int64
	// ValTop1 is the validation top-1 accuracy in percent the checkpoint
	// was saved with, or nil when it was not validated.
	ValTop1 *float64

	source *onnximport.Model
	file   checkpoint.File
	// params and stats hold the shapes of the engine's parameters and
	// running statistics by engine name: the initializer's name, or
	// "<initializer>@<node>" for a later use of a shared one.
	params, stats map[string][]int
}

// Load reads the run directory dir: its model, its run.json and the
// checkpoint which names, Best, Last or the path of a safetensors file.
// Best falls back to the last checkpoint when the directory has no best
// one, and says so in Trained.FellBack.
//
// The checkpoint must fit the model: it must hold every parameter and
// running statistic of the model (as the engine sees them, see
// finetune.Trainer.Snapshot) as a float tensor of the model's shape,
// and nothing else but optimiser state and step counters, which are
// left out of an export. Every problem is reported together, naming the
// checkpoint file and the tensor.
func Load(dir checkpoint.Dir, which string) (*Trained, error) {
	if err := dir.Check(); err != nil {
		return nil, err
	}
	run, err := checkpoint.ReadRun(dir.Path(checkpoint.RunFile))
	if err != nil {
		return nil, err
	}
	t := &Trained{Dir: dir, Run: run, Step: -1}
	named := true // a checkpoint of the run directory, not a path
	switch which {
	case Best, "":
		t.Checkpoint = dir.Path(checkpoint.BestFile)
		if _, err := os.Stat(t.Checkpoint); errors.Is(err, fs.ErrNotExist) {
			t.Checkpoint, t.FellBack = dir.Path(checkpoint.LastFile), true
		}
	case Last:
		t.Checkpoint = dir.Path(checkpoint.LastFile)
	default:
		t.Checkpoint, named = which, false
	}
	if _, err := os.Stat(t.Checkpoint); errors.Is(err, fs.ErrNotExist) && named {
		missing := checkpoint.LastFile
		if t.FellBack {
			missing = checkpoint.BestFile + " or " + checkpoint.LastFile
		}
		return nil, fmt.Errorf("%s holds no checkpoint yet: no %s (fine-tuning saves one at each validation and at the end)",
			dir, missing)
	}
	if t.file, err = checkpoint.ReadFile(t.Checkpoint); err != nil {
		return nil, err
	}
	if t.source, err = onnximport.ReadFile(dir.Path(checkpoint.ModelFile)); err != nil {
		return nil, err
	}
	if err := internalize(t.source); err != nil {
		return nil, fmt.Errorf("reading %s: %w", t.source.Path, err)
	}
	if err := t.engineShapes(); err != nil {
		return nil, err
	}
	if err := t.checkFit(); err != nil {
		return nil, err
	}
	if s, ok := t.file.Metadata[finetune.MetaStep]; ok {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
			t.Step = n
		}
	}
	if s, ok := t.file.Metadata[checkpoint.MetaValTop1]; ok {
		if v, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(v) {
			t.ValTop1 = &v
		}
	}
	return t, nil
}

// engineShapes builds an inference engine of the model for one sample to
// learn the names and shapes of its parameters and running statistics,
// the tensors a checkpoint holds.
func (t *Trained) engineShapes() error {
	e, err := engine.Build(t.source, engine.Options{Mode: engine.Inference, Batch: 1})
	if err != nil {
		return fmt.Errorf("%s: %w", t.source.Path, err)
	}
	defer e.Close()
	t.params, t.stats = map[string][]int{}, map[string][]int{}
	for _, name := range e.Params() {
		v, err := e.Param(name)
		if err != nil {
			return fmt.Errorf("%s: %w", t.source.Path, err)
		}
		t.params[name] = v.Shape
	}
	for name, s := range e.Stats() {
		if name != engine.StepKey && !strings.HasSuffix(name, engine.CounterSuffix) {
			t.stats[name] = s.Shape
		}
	}
	return nil
}

// mostProblems is how many problems a fit error lists before it counts
// the rest.
const mostProblems = 12

// checkFit reports every way the checkpoint does not fit the model.
func (t *Trained) checkFit() error {
	var errs []error
	check := func(name string, shape []int) {
		v, ok := t.file.Tensors[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("tensor %q is missing", name))
		case v.DType() != checkpoint.F32 && v.DType() != checkpoint.F64:
			errs = append(errs, fmt.Errorf("tensor %q is %s, want F32 or F64", name, v.DType()))
		case !slices.Equal(v.Shape, shape):
			errs = append(errs, fmt.Errorf("tensor %q has shape %v, the model's is %v", name, v.Shape, shape))
		}
	}
	for _, name := range sortedKeys(t.params) {
		check(name, t.params[name])
	}
	for _, name := range sortedKeys(t.stats) {
		check(name, t.stats[name])
	}
	var unknown []string
	for _, name := range sortedKeys(t.file.Tensors) {
		v := t.file.Tensors[name]
		_, param := t.params[name]
		_, stat := t.stats[name]
		switch {
		case param, stat, finetune.IsOptimizerState(name):
		case name == engine.StepKey || isCounterOf(name, t.stats):
			if v.DType() != checkpoint.I64 || len(v.Shape) != 0 {
				errs = append(errs, fmt.Errorf("counter %q is %s of shape %v, want an I64 scalar", name, v.DType(), v.Shape))
			}
		default:
			unknown = append(unknown, strconv.Quote(name))
		}
	}
	if len(unknown) > 0 {
		more := ""
		if len(unknown) > 5 {
			more = fmt.Sprintf(" and %d more", len(unknown)-5)
			unknown = unknown[:5]
		}
		errs = append(errs, fmt.Errorf("tensors the model does not have: %s%s", strings.Join(unknown, ", "), more))
	}
	if len(errs) == 0 {
		return nil
	}
	if len(errs) > mostProblems {
		errs = append(errs[:mostProblems:mostProblems], fmt.Errorf("and %d more problems", len(errs)-mostProblems))
	}
	return fmt.Errorf("checkpoint %s does not fit %s: %w", t.Checkpoint, t.source.Path, errors.Join(errs...))
}

// isCounterOf reports whether name is the step count of a running
// statistic, "<statistic>#t".
func isCounterOf(name string, stats map[string][]int) bool {
	s, ok := strings.CutSuffix(name, engine.CounterSuffix)
	if !ok {
		return false
	}
	_, ok = stats[s]
	return ok
}

// sortedKeys returns the keys of a map in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// internalize moves the data of every initializer kept in an external
// data file into the model itself, so that the model can be changed and
// written anywhere. ReadFile has checked the files and ranges.
func internalize(m *onnximport.Model) error {
	files := map[string][]byte{}
	for _, t := range m.Graph().GetInitializer() {
		if t.GetDataLocation() != onnxpb.TensorProto_EXTERNAL {
			continue
		}
		var loc string
		offset, length := int64(0), int64(-1)
		for _, kv := range t.GetExternalData() {
			switch kv.GetKey() {
			case "location":
				loc = kv.GetValue()
			case "offset":
				offset, _ = strconv.ParseInt(kv.GetValue(), 10, 64)
			case "length":
				length, _ = strconv.ParseInt(kv.GetValue(), 10, 64)
			}
		}
		b, ok := files[loc]
		if !ok {
			var err error
			if b, err = os.ReadFile(filepath.Join(filepath.Dir(m.Path), filepath.FromSlash(loc))); err != nil {
				return fmt.Errorf("initializer %q: %w", t.GetName(), err)
			}
			files[loc] = b
		}
		if offset > int64(len(b)) || length > int64(len(b))-offset {
			return fmt.Errorf("initializer %q: external data range %d+%d is outside %s", t.GetName(), offset, length, loc)
		}
		if length < 0 {
			length = int64(len(b)) - offset
		}
		t.RawData = b[offset : offset+length]
		t.ExternalData, t.DataLocation = nil, nil
	}
	return nil
}
