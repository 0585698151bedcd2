package export

import (
	"errors"
	"fmt"
	"io/fs"
)

// Format is a form in which Write writes a fine-tuned model.
type Format string

// The formats, as the command line's --format names them.
const (
	// FormatONNX is the ONNX model in function form: each decoupled
	// convolution stays one ai.dcnet node defined by a model-local
	// function.
	FormatONNX Format = "onnx"
	// FormatONNXInline is the ONNX model with the function bodies written
	// in place and the per-channel constants folded (see Inline).
	FormatONNXInline Format = "onnx-inline"
	// FormatSafetensors holds the float initializers as float32 tensors
	// of a safetensors file.
	FormatSafetensors Format = "safetensors"
	// FormatNPZ holds the float initializers as the .npy arrays of a
	// NumPy .npz archive.
	FormatNPZ Format = "npz"
)

// Formats lists the formats in the order help texts show them.
func Formats() []Format {
	return []Format{FormatONNX, FormatONNXInline, FormatSafetensors, FormatNPZ}
}

// Valid reports whether f is one of Formats.
func (f Format) Valid() bool {
	for _, g := range Formats() {
		if f == g {
			return true
		}
	}
	return false
}

// Write writes t to path in format f. Every format is written through a
// temporary file in the same directory and a rename, so a failed write
// leaves no file at path.
func Write(path string, t *Trained, f Format) error {
	switch f {
	case FormatONNX, FormatONNXInline:
		m, err := t.Model()
		if err != nil {
			return err
		}
		return WriteONNX(path, m, f == FormatONNXInline)
	case FormatSafetensors:
		return WriteSafetensors(path, t)
	case FormatNPZ:
		return WriteNPZ(path, t)
	}
	return fmt.Errorf("unknown export format %q (want one of %v)", f, Formats())
}

// writeError names the file a write failed on, without the temporary
// file's name that an *fs.PathError from the atomic write would show.
func writeError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("writing %s: %w", path, err)
}
