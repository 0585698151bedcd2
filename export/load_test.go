package export

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/export/exporttest"
)

// TestLoad loads the checkpoints of a run directory by name and by path,
// and the fallback from best to last.
func TestLoad(t *testing.T) {
	r := makeRun(t, exporttest.Options{Decoupled: ballLearn()})
	if r.BestStep == r.LastStep {
		t.Fatalf("the run saved its best and last checkpoints at the same step %d", r.BestStep)
	}
	copied := filepath.Join(t.TempDir(), "copy.safetensors")
	b, err := os.ReadFile(r.Dir.Path(checkpoint.LastFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copied, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		which string
		path  string
		step  int64
	}{
		{Best, r.Dir.Path(checkpoint.BestFile), r.BestStep},
		{"", r.Dir.Path(checkpoint.BestFile), r.BestStep},
		{Last, r.Dir.Path(checkpoint.LastFile), r.LastStep},
		{copied, copied, r.LastStep},
	} {
		tr := load(t, r, c.which)
		if tr.Checkpoint != c.path || tr.Step != c.step || tr.FellBack || tr.ValTop1 == nil {
			t.Errorf("Load(%q): checkpoint %s, step %d, fell back %v, validation %v; want %s, step %d, no fallback, a validation",
				c.which, tr.Checkpoint, tr.Step, tr.FellBack, tr.ValTop1, c.path, c.step)
		}
	}
	if err := os.Remove(r.Dir.Path(checkpoint.BestFile)); err != nil {
		t.Fatal(err)
	}
	tr := load(t, r, Best)
	if !tr.FellBack || tr.Step != r.LastStep || tr.Checkpoint != r.Dir.Path(checkpoint.LastFile) {
		t.Errorf("without best.safetensors: checkpoint %s, step %d, fell back %v; want the last one, step %d, fell back",
			tr.Checkpoint, tr.Step, tr.FellBack, r.LastStep)
	}
}

// editCheckpoint rewrites a checkpoint file after edit changes it.
func editCheckpoint(t *testing.T, path string, edit func(f *checkpoint.File)) {
	t.Helper()
	f := readCheckpoint(t, path)
	edit(&f)
	if err := checkpoint.WriteFile(path, f); err != nil {
		t.Fatal(err)
	}
}

// TestLoadBadInput checks the errors of Load for what is not a run
// directory, missing and corrupt checkpoints and checkpoints that do not
// fit the model.
func TestLoadBadInput(t *testing.T) {
	ball := makeRun(t, exporttest.Options{Decoupled: ballLearn()})
	plain := makeRun(t, exporttest.Options{})
	tests := []struct {
		name  string
		which string
		setup func(t *testing.T, d checkpoint.Dir) checkpoint.Dir
		want  []string // substrings of the error; DIR stands for the run directory
	}{
		{"missing directory", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir { return d + "/nope" },
			[]string{"DIR/nope is not a run directory: it does not exist"}},
		{"not a run directory", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir { return checkpoint.Dir(t.TempDir()) },
			[]string{"is not a run directory: no run.json and no model.onnx"}},
		{"a file", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			return checkpoint.Dir(d.Path(checkpoint.ModelFile))
		},
			[]string{"DIR/model.onnx is not a run directory: it is not a directory"}},
		{"bad run.json", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			writeFile(t, d.Path(checkpoint.RunFile), "{\"version\": 7}")
			return d
		}, []string{"reading DIR/run.json: version 7"}},
		{"bad model", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			writeFile(t, d.Path(checkpoint.ModelFile), "not a model")
			return d
		}, []string{"reading DIR/model.onnx: "}},
		{"no checkpoint", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			remove(t, d.Path(checkpoint.BestFile), d.Path(checkpoint.LastFile))
			return d
		}, []string{"DIR holds no checkpoint yet: no best.safetensors or last.safetensors"}},
		{"no last checkpoint", Last, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			remove(t, d.Path(checkpoint.LastFile))
			return d
		}, []string{"DIR holds no checkpoint yet: no last.safetensors"}},
		{"missing checkpoint file", "DIR/other.safetensors", nil,
			[]string{"reading DIR/other.safetensors: no such file or directory"}},
		{"corrupt checkpoint", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			b, err := os.ReadFile(d.Path(checkpoint.BestFile))
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)-5] ^= 0x40
			if err := os.WriteFile(d.Path(checkpoint.BestFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
			return d
		}, []string{"reading DIR/best.safetensors: checksum mismatch"}},
		{"truncated checkpoint", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			writeFile(t, d.Path(checkpoint.BestFile), "abc")
			return d
		}, []string{"reading DIR/best.safetensors: the file is 3 bytes"}},
		{"checkpoint of another model", Best, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			b, err := os.ReadFile(plain.Dir.Path(checkpoint.BestFile))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(d.Path(checkpoint.BestFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
			return d
		}, []string{"checkpoint DIR/best.safetensors does not fit DIR/model.onnx:",
			`tensor "/features/features.0/Conv.rho_v" is missing`, `tensor "/features/features.0/Conv.rho_scale" is missing`}},
		{"wrong shape", Last, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			editCheckpoint(t, d.Path(checkpoint.LastFile), func(f *checkpoint.File) {
				f.Tensors["classifier.3.weight"] = checkpoint.Tensor{Shape: []int{5, 64}, F32: make([]float32, 5*64)}
			})
			return d
		}, []string{"checkpoint DIR/last.safetensors does not fit DIR/model.onnx:", `tensor "classifier.3.weight" has shape [5 64], the model's is [4 64]`}},
		{"missing and unknown tensors", Last, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			editCheckpoint(t, d.Path(checkpoint.LastFile), func(f *checkpoint.File) {
				delete(f.Tensors, "features.0.bias")
				f.Tensors["extra"] = checkpoint.Tensor{Shape: []int{1}, F32: []float32{1}}
			})
			return d
		}, []string{`tensor "features.0.bias" is missing`, `tensors the model does not have: "extra"`}},
		{"integer parameter", Last, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			editCheckpoint(t, d.Path(checkpoint.LastFile), func(f *checkpoint.File) {
				f.Tensors["features.0.bias"] = checkpoint.Tensor{Shape: []int{16}, I64: make([]int64, 16)}
			})
			return d
		}, []string{`tensor "features.0.bias" is I64, want F32 or F64`}},
		{"counter not an integer", Last, func(t *testing.T, d checkpoint.Dir) checkpoint.Dir {
			editCheckpoint(t, d.Path(checkpoint.LastFile), func(f *checkpoint.File) {
				f.Tensors["/features/features.0/Conv.rho_scale#t"] = checkpoint.Tensor{Shape: []int{}, F32: []float32{3}}
			})
			return d
		}, []string{`counter "/features/features.0/Conv.rho_scale#t" is F32 of shape [], want an I64 scalar`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := ball.Copy(t)
			d := base
			if tc.setup != nil {
				d = tc.setup(t, base)
			}
			_, err := Load(d, strings.ReplaceAll(tc.which, "DIR", string(base)))
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tc.want {
				if w = strings.ReplaceAll(w, "DIR", string(base)); !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nlacks %q", err, w)
				}
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}
