package export

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/finetune"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// array is one float initializer of a fine-tuned model.
type array struct {
	name string
	dims []int64
	f    []float32
}

// arrays returns the fine-tuned model and its float initializers in
// graph order, as float32: every weight and running statistic, under its
// initializer name. Errors name path, the file being written.
func (t *Trained) arrays(path string) (*onnximport.Model, []array, error) {
	m, err := t.Model()
	if err != nil {
		return nil, nil, err
	}
	var out []array
	for _, init := range m.Graph().GetInitializer() {
		if !onnximport.IsFloatType(onnxpb.TensorProto_DataType(init.GetDataType())) {
			continue
		}
		d, err := m.Tensor(init)
		if err != nil {
			return nil, nil, fmt.Errorf("writing %s: initializer %q: %w", path, init.GetName(), err)
		}
		out = append(out, array{name: init.GetName(), dims: d.Dims, f: d.Float})
	}
	return m, out, nil
}

// WriteSafetensors writes the float initializers of t's fine-tuned model
// (Trained.Model) to path as a safetensors file: one F32 tensor per
// initializer, named as the initializer. The metadata holds the model's
// ai.dcnet.layers (each decoupled layer's configuration),
// ai.dcnet.uncalibrated and dcconvert.preprocess entries where it has
// them, and the checkpoint's step, epoch and validation accuracy where
// it records them. The file is written atomically and carries the
// checksum package checkpoint adds.
func WriteSafetensors(path string, t *Trained) error {
	m, arr, err := t.arrays(path)
	if err != nil {
		return err
	}
	f := checkpoint.File{Tensors: map[string]checkpoint.Tensor{}, Metadata: map[string]string{}}
	for _, a := range arr {
		shape := make([]int, len(a.dims))
		for k, d := range a.dims {
			shape[k] = int(d)
		}
		f.Tensors[a.name] = checkpoint.Tensor{Shape: shape, F32: a.f}
	}
	for _, key := range []string{dcnet.MetaLayers, dcnet.MetaUncalibrated, data.MetaPreprocess} {
		if v, ok := rewrite.Metadata(m.Proto, key); ok {
			f.Metadata[key] = v
		}
	}
	for _, key := range []string{finetune.MetaStep, checkpoint.MetaEpoch, checkpoint.MetaValTop1} {
		if v, ok := t.file.Metadata[key]; ok {
			f.Metadata[key] = v
		}
	}
	if err := checkpoint.WriteFile(path, f); err != nil {
		return err
	}
	return nil
}

// WriteNPZ writes the float initializers of t's fine-tuned model
// (Trained.Model) to path as a NumPy .npz archive, atomically: a zip of
// one "<initializer>.npy" file per initializer (NPY format 1.0, '<f4', C
// order), stored uncompressed, in graph order, with a fixed time stamp,
// so that numpy.load(path)[name] gives each initializer and the same
// model always gives the same bytes.
func WriteNPZ(path string, t *Trained) error {
	_, arr, err := t.arrays(path)
	if err != nil {
		return err
	}
	b, err := encodeNPZ(arr)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := onnximport.WriteFileAtomic(path, b); err != nil {
		return writeError(path, err)
	}
	return nil
}

// npzTime is the modification time of every member of an archive: the
// earliest a zip file can record.
var npzTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// encodeNPZ returns the .npz archive of arr.
func encodeNPZ(arr []array) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	seen := map[string]bool{}
	for _, a := range arr {
		name := a.name + ".npy"
		if seen[name] {
			return nil, fmt.Errorf("two arrays named %q", a.name)
		}
		seen[name] = true
		b := encodeNPY(a.dims, a.f)
		h := &zip.FileHeader{
			Name:               name,
			Method:             zip.Store,
			Modified:           npzTime,
			CRC32:              crc32.ChecksumIEEE(b),
			CompressedSize64:   uint64(len(b)),
			UncompressedSize64: uint64(len(b)),
		}
		w, err := zw.CreateRaw(h)
		if err != nil {
			return nil, fmt.Errorf("array %q: %w", a.name, err)
		}
		if _, err := w.Write(b); err != nil {
			return nil, fmt.Errorf("array %q: %w", a.name, err)
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// encodeNPY returns the NPY format 1.0 file of a float32 array: the magic
// string, the version, the header length and a header dictionary padded
// with spaces and a newline to a multiple of 64 bytes, then the values,
// little-endian, in C order.
func encodeNPY(dims []int64, f []float32) []byte {
	shape := make([]string, len(dims))
	for k, d := range dims {
		shape[k] = strconv.FormatInt(d, 10)
	}
	tuple := "(" + strings.Join(shape, ", ") + ")"
	if len(dims) == 1 {
		tuple = "(" + shape[0] + ",)"
	}
	header := "{'descr': '<f4', 'fortran_order': False, 'shape': " + tuple + ", }"
	const prefix = 10 // magic (6), version (2), header length (2)
	pad := (64 - (prefix+len(header)+1)%64) % 64
	header += strings.Repeat(" ", pad) + "\n"
	b := make([]byte, 0, prefix+len(header)+4*len(f))
	b = append(b, "\x93NUMPY\x01\x00"...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(header)))
	b = append(b, header...)
	for _, x := range f {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}
