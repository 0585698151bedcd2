package checkpoint

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestDirPath(t *testing.T) {
	if got, want := Dir("runs/a").Path(LastFile), filepath.Join("runs", "a", "last.safetensors"); got != want {
		t.Errorf("Path = %q, want %q", got, want)
	}
}

func TestDirCheck(t *testing.T) {
	root := t.TempDir()
	touch := func(path string) {
		t.Helper()
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mkdir := func(path string) {
		t.Helper()
		if err := os.MkdirAll(path, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		setup    func(dir string)
		want     string // the error after "DIR is not a run directory: ", or "" for none
		notExist bool   // whether the error wraps fs.ErrNotExist
	}{
		{"complete", func(dir string) { mkdir(dir); touch(filepath.Join(dir, RunFile)); touch(filepath.Join(dir, ModelFile)) }, "", false},
		{"complete with checkpoints", func(dir string) {
			mkdir(dir)
			for _, f := range []string{RunFile, ModelFile, LastFile, BestFile, MetricsFile, CurvesFile} {
				touch(filepath.Join(dir, f))
			}
		}, "", false},
		{"missing", func(string) {}, "it does not exist", true},
		{"a file", touch, "it is not a directory", false},
		{"empty", mkdir, "no run.json and no model.onnx", true},
		{"no run.json", func(dir string) { mkdir(dir); touch(filepath.Join(dir, ModelFile)) }, "no run.json", true},
		{"no model", func(dir string) { mkdir(dir); touch(filepath.Join(dir, RunFile)) }, "no model.onnx", true},
		{"run.json a directory", func(dir string) { mkdir(filepath.Join(dir, RunFile)); touch(filepath.Join(dir, ModelFile)) }, "run.json is not a regular file", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(root, string(rune('a'+i)))
			tt.setup(dir)
			err := Dir(dir).Check()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := dir + " is not a run directory: " + tt.want; err == nil || err.Error() != want {
				t.Fatalf("error %v, want %q", err, want)
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tt.notExist {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v, want %v", got, tt.notExist)
			}
		})
	}
}
