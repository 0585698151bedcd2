// Command strategy measures the Decoupled Networks pretraining strategy on
// Fashion-MNIST with dcconvert's own commands, and writes the table that the
// README shows.
//
// It pretrains a plain vgg-mini (1x28x28) for 2 epochs, then, for each
// rewrite (ball and tanh with a learnable radius, linear; all with cos),
// measures the test accuracy right after rewriting (--alpha 1 and --alpha
// auto, both calibrated on the training data), after fine-tuning the
// --alpha auto rewrite for 1 epoch, and of the same decoupled net trained
// from scratch for as many steps as pretraining and fine-tuning together
// (3 epochs). The fair baseline is the plain net trained 1 more epoch.
//
// Every finished cell is saved as JSON under the results directory, and a
// cell whose file exists is not run again, so an interrupted measurement
// resumes where it stopped. Usage, from the repository root:
//
//	go run ./scripts/strategy -data /usr/share/datasets/fashion-mnist
//	go run ./scripts/strategy -table           # the markdown table
//	go run ./scripts/strategy -readme README.md # replace the README's table
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// cell is one measured result.
type cell struct {
	Name     string   `json:"name"`
	Commands []string `json:"commands"`
	Top1     float64  `json:"top1"`  // test top-1 accuracy, percent
	Steps    int      `json:"steps"` // optimisation steps of its training, 0 if none
	WallS    float64  `json:"wall_s"`
}

// runner runs dcconvert commands for the cells.
type runner struct {
	bin, data, dir, results string
	seed                    string
}

func main() {
	var r runner
	var table bool
	var readme string
	flag.StringVar(&r.data, "data", "/usr/share/datasets/fashion-mnist", "data directory")
	flag.StringVar(&r.results, "results", "scripts/strategy/results", "directory of the cells' JSON files (and, under files/, the models)")
	flag.StringVar(&r.seed, "seed", "1", "seed of every command")
	flag.BoolVar(&table, "table", false, "print the markdown table of the cells found, run nothing")
	flag.StringVar(&readme, "readme", "", "replace the table between the strategy markers of this file, run nothing")
	flag.Parse()
	if err := os.MkdirAll(r.results, 0o755); err != nil {
		fatal(err)
	}
	switch {
	case table:
		t, err := r.table()
		if err != nil {
			fatal(err)
		}
		fmt.Print(t)
		return
	case readme != "":
		if err := r.updateReadme(readme); err != nil {
			fatal(err)
		}
		return
	}
	r.dir = filepath.Join(r.results, "files")
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		fatal(err)
	}
	r.bin = filepath.Join(r.dir, "dcconvert")
	build := exec.Command("go", "build", "-o", r.bin, "./cmd/dcconvert")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fatal(fmt.Errorf("building dcconvert: %w", err))
	}
	if err := r.all(); err != nil {
		fatal(err)
	}
	t, err := r.table()
	if err != nil {
		fatal(err)
	}
	fmt.Print(t)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "strategy:", err)
	os.Exit(1)
}

// file names a file of the runs.
func (r *runner) file(name string) string { return filepath.Join(r.dir, name) }

// dcconvert runs one command and returns its standard output.
func (r *runner) dcconvert(args ...string) (string, error) {
	fmt.Fprintf(os.Stderr, "$ dcconvert %s\n", strings.Join(args, " "))
	var out bytes.Buffer
	cmd := exec.Command(r.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("dcconvert %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// eval returns a model's test top-1 accuracy.
func (r *runner) eval(model string) (float64, error) {
	out, err := r.dcconvert("eval", model, "--data", r.data, "--json")
	if err != nil {
		return 0, err
	}
	var rep struct {
		Top1 float64 `json:"top1"`
	}
	return rep.Top1, json.Unmarshal([]byte(out), &rep)
}

// steps returns the number of steps a run directory trained for.
func (r *runner) steps(run string) (int, error) {
	b, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	var last struct {
		Step int `json:"step"`
	}
	return last.Step, json.Unmarshal([]byte(lines[len(lines)-1]), &last)
}

// do runs a cell unless its JSON file exists: the commands, then an
// evaluation of model; run, when not empty, is the run directory whose
// steps the cell reports.
func (r *runner) do(name, model, run string, commands ...[]string) (cell, error) {
	path := filepath.Join(r.results, name+".json")
	if b, err := os.ReadFile(path); err == nil {
		var c cell
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("%s: %w", path, err)
		}
		fmt.Fprintf(os.Stderr, "cached: %s (%.2f%%)\n", name, c.Top1)
		return c, nil
	}
	c := cell{Name: name}
	start := time.Now()
	for _, args := range commands {
		for _, a := range args {
			if a == "--out" {
				// a run directory left by an interrupted cell is started afresh
				for i := range args {
					if args[i] == "--out" {
						os.RemoveAll(args[i+1])
					}
				}
				break
			}
		}
		if _, err := r.dcconvert(args...); err != nil {
			return c, err
		}
		c.Commands = append(c.Commands, "dcconvert "+strings.Join(args, " "))
	}
	c.WallS = time.Since(start).Seconds()
	var err error
	if c.Top1, err = r.eval(model); err != nil {
		return c, err
	}
	if run != "" {
		if c.Steps, err = r.steps(run); err != nil {
			return c, err
		}
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	return c, os.WriteFile(path, append(b, '\n'), 0o644)
}

// The rewrites measured: name and rewrite flags.
var rewrites = []struct {
	name  string
	flags []string
	// radius says whether the operator has a radius to calibrate; one
	// without is calibrated (--calib) only for --alpha auto.
	radius bool
}{
	{"ball", []string{"--mag", "ball", "--rho", "learn"}, true},
	{"tanh", []string{"--mag", "tanh", "--rho", "learn"}, true},
	{"linear", []string{"--mag", "linear"}, false},
}

// calib returns the calibration flags of a rewrite with the given alpha.
func (r *runner) calib(radius bool, alpha string) []string {
	if !radius && alpha == "1" {
		return nil
	}
	return []string{"--calib", r.data}
}

// train returns the flags of a training run from random weights
// (pretraining, and the decoupled nets from scratch) or of a fine-tuning
// run: Adam without weight decay or augmentation, at 2e-3 from random
// weights and 1e-3 from trained ones, the learning rate annealed to 0 by
// the cosine schedule.
func (r *runner) train(epochs string, fromScratch bool) []string {
	lr := "0.001"
	if fromScratch {
		lr = "0.002"
	}
	return []string{"--optimizer", "adam", "--lr", lr, "--wd", "0", "--augment", "none", "--epochs", epochs, "--seed", r.seed, "-q"}
}

// all runs every cell.
func (r *runner) all() error {
	f := r.file
	if _, err := r.do("plain-pretrained", f("plain.onnx"), f("pretrain"),
		[]string{"models", "vgg-mini", "--seed", r.seed, "-o", f("init.onnx")},
		append([]string{"finetune", f("init.onnx"), "--data", r.data, "--out", f("pretrain")}, r.train("2", true)...),
		[]string{"export", f("pretrain"), "--checkpoint", "last", "-o", f("plain.onnx")}); err != nil {
		return err
	}
	if _, err := r.do("plain-plus-1", f("plain-plus-1.onnx"), f("plain-plus-1"),
		append([]string{"finetune", f("plain.onnx"), "--data", r.data, "--out", f("plain-plus-1")}, r.train("1", false)...),
		[]string{"export", f("plain-plus-1"), "--checkpoint", "last", "-o", f("plain-plus-1.onnx")}); err != nil {
		return err
	}
	for _, rw := range rewrites {
		for _, alpha := range []string{"1", "auto"} {
			out := f(rw.name + "-alpha-" + alpha + ".onnx")
			args := append(append([]string{"rewrite", f("plain.onnx")}, rw.flags...), r.calib(rw.radius, alpha)...)
			args = append(args, "--alpha", alpha, "-o", out, "-q")
			if _, err := r.do(rw.name+"-rewritten-alpha-"+alpha, out, "", args); err != nil {
				return err
			}
		}
		run := f(rw.name + "-finetune")
		if _, err := r.do(rw.name+"-finetuned", f(rw.name+"-finetuned.onnx"), run,
			append([]string{"finetune", f(rw.name + "-alpha-auto.onnx"), "--data", r.data, "--out", run}, r.train("1", false)...),
			[]string{"export", run, "--checkpoint", "last", "-o", f(rw.name + "-finetuned.onnx")}); err != nil {
			return err
		}
		scratch := f(rw.name + "-scratch")
		if _, err := r.do(rw.name+"-scratch", f(rw.name+"-scratch.onnx"), scratch,
			append(append(append([]string{"rewrite", f("init.onnx")}, rw.flags...), r.calib(rw.radius, "1")...), "-o", f(rw.name+"-init.onnx"), "-q"),
			append([]string{"finetune", f(rw.name + "-init.onnx"), "--data", r.data, "--out", scratch}, r.train("3", true)...),
			[]string{"export", scratch, "--checkpoint", "last", "-o", f(rw.name + "-scratch.onnx")}); err != nil {
			return err
		}
	}
	return nil
}

// load reads a cell's file.
func (r *runner) load(name string) (*cell, error) {
	b, err := os.ReadFile(filepath.Join(r.results, name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var c cell
	return &c, json.Unmarshal(b, &c)
}

// table renders the cells found as markdown.
func (r *runner) table() (string, error) {
	var b strings.Builder
	get := func(name string) (string, *cell, error) {
		c, err := r.load(name)
		if err != nil || c == nil {
			return "-", nil, err
		}
		return fmt.Sprintf("%.2f %%", c.Top1), c, nil
	}
	plain, pc, err := get("plain-pretrained")
	if err != nil {
		return "", err
	}
	plus, plusc, err := get("plain-plus-1")
	if err != nil {
		return "", err
	}
	fmt.Fprintf(&b, "| net | after rewrite, alpha 1 | after rewrite, alpha auto | fine-tuned 1 epoch | trained from scratch, 3 epochs |\n")
	fmt.Fprintf(&b, "| --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(&b, "| plain vgg-mini, pretrained 2 epochs: %s | | | plain trained 1 more epoch: %s | |\n", plain, plus)
	var ftSteps, scratchSteps int
	var wall float64
	for _, c := range []*cell{pc, plusc} {
		if c != nil {
			wall += c.WallS
		}
	}
	for _, rw := range rewrites {
		row := []string{rw.name + " (" + strings.Join(rw.flags, " ") + ", cos)"}
		for _, name := range []string{"-rewritten-alpha-1", "-rewritten-alpha-auto", "-finetuned", "-scratch"} {
			s, c, err := get(rw.name + name)
			if err != nil {
				return "", err
			}
			row = append(row, s)
			if c != nil {
				wall += c.WallS
				switch name {
				case "-finetuned":
					ftSteps = c.Steps
				case "-scratch":
					scratchSteps = c.Steps
				}
			}
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(row, " | "))
	}
	pretrainSteps := 0
	if pc != nil {
		pretrainSteps = pc.Steps
	}
	fmt.Fprintf(&b, "\nSteps (batch 64): pretraining %d, fine-tuning %d, from scratch %d. Wall time of all cells: %.0f s.\n",
		pretrainSteps, ftSteps, scratchSteps, wall)
	// The exact commands, in the order they ran, F standing for the
	// files directory.
	names := []string{"plain-pretrained", "plain-plus-1"}
	for _, rw := range rewrites {
		for _, name := range []string{"-rewritten-alpha-1", "-rewritten-alpha-auto", "-finetuned", "-scratch"} {
			names = append(names, rw.name+name)
		}
	}
	var cmds []string
	for _, name := range names {
		c, err := r.load(name)
		if err != nil {
			return "", err
		}
		if c == nil {
			continue
		}
		for _, cmd := range c.Commands {
			cmds = append(cmds, strings.ReplaceAll(cmd, filepath.Join(r.results, "files")+"/", "$F/"))
		}
	}
	if len(cmds) > 0 {
		fmt.Fprintf(&b, "\nThe commands, in order, with F=%s (each model is then evaluated with `dcconvert eval MODEL --data %s`):\n\n",
			filepath.Join(r.results, "files"), r.data)
		for _, c := range cmds {
			fmt.Fprintf(&b, "    %s\n", c)
		}
	}
	return b.String(), nil
}

// Markers around the table in the README.
const (
	beginMarker = "<!-- strategy table: go run ./scripts/strategy -readme README.md -->"
	endMarker   = "<!-- end of strategy table -->"
)

// updateReadme replaces the text between the markers with the table.
func (r *runner) updateReadme(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %q ... %q markers", path, beginMarker, endMarker)
	}
	t, err := r.table()
	if err != nil {
		return err
	}
	s = s[:i+len(beginMarker)] + "\n\n" + t + "\n" + s[j:]
	return os.WriteFile(path, []byte(s), 0o644)
}
