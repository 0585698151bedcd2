package onnximport

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ReadFile reads, checks and returns the model at path, loading the
// external data files its tensors refer to from the model's directory.
// Errors name the file.
func ReadFile(path string) (*Model, error) {
	b, unmap, err := mapFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	m, err := Decode(b)
	unmap() // the decoded message holds its own copy of every field
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	m.Path = path
	m.dir = filepath.Dir(path)
	if err := m.loadExternal(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if err := m.Check(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return m, nil
}

// ReadBytes decodes and checks a model held in memory. A model whose
// tensors are stored in external data files must be read with ReadFile.
func ReadBytes(b []byte) (*Model, error) {
	m, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if err := m.loadExternal(); err != nil {
		return nil, err
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	return m, nil
}

// WriteFile encodes the model and writes it to path atomically: the bytes
// go to a temporary file in the same directory, which is renamed over path
// only once it is complete. Tensors in external data are written as
// references; their data files are not copied.
func (m *Model) WriteFile(path string) error {
	b, err := m.Encode()
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := WriteFileAtomic(path, b); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// WriteFileAtomic writes b to path through a temporary file in the same
// directory and a rename, so that path holds either its old contents or
// all of b, never a part.
func WriteFileAtomic(path string, b []byte) error {
	return WriteStreamAtomic(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// WriteStreamAtomic is WriteFileAtomic for content that write produces
// piece by piece, so that it need not be held in memory: the temporary
// file is synced, made readable (0644) and renamed to path only when write
// succeeds, and removed otherwise.
func WriteStreamAtomic(path string, write func(io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = write(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
