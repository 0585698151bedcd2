package export

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Limits of the ONNX file form. Variables, so that tests can exercise
// external data with small models.
var (
	// maxModelSize is the largest model written as one file: protobuf
	// cannot encode messages of 2 GiB or more.
	maxModelSize = 1<<31 - 1
	// minExternalSize is the size from which an initializer's raw data
	// goes to the external data file of a model over maxModelSize.
	minExternalSize = 1024
)

// externalAlign aligns each tensor in an external data file, so that a
// runtime can map it from the file.
const externalAlign = 4096

// WriteONNX writes m to path atomically, in function form, or in inline
// form (see Inline) when inline is set. A model over 2 GiB, which one
// protobuf message cannot hold, is written with external data as ONNX
// specifies: the raw data of every initializer of 1 KiB or more goes to
// "<path>.data" next to it, each at an offset aligned to 4 KiB, and the
// initializer records location, offset and length. The data file is
// written first, also atomically. m is not changed.
func WriteONNX(path string, m *onnximport.Model, inline bool) error {
	if inline {
		var err error
		if m, err = Inline(m); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if proto.Size(m.Proto) <= maxModelSize {
		b, err := m.Encode()
		if err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		if err := onnximport.WriteFileAtomic(path, b); err != nil {
			return writeError(path, err)
		}
		return nil
	}
	return writeExternal(path, m)
}

// writeExternal writes m to path with its large initializers in an
// external data file.
func writeExternal(path string, m *onnximport.Model) error {
	location := filepath.Base(path) + ".data"
	dataPath := filepath.Join(filepath.Dir(path), location)
	type moved struct {
		t        *onnxpb.TensorProto
		raw      []byte
		location *onnxpb.TensorProto_DataLocation
	}
	var out []moved
	offset := 0
	for _, t := range m.Graph().GetInitializer() {
		raw := t.GetRawData()
		if len(raw) < minExternalSize || t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
			continue
		}
		offset = (offset + externalAlign - 1) / externalAlign * externalAlign
		out = append(out, moved{t: t, raw: raw, location: t.DataLocation})
		t.RawData = nil
		t.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
		t.ExternalData = []*onnxpb.StringStringEntryProto{
			{Key: proto.String("location"), Value: proto.String(location)},
			{Key: proto.String("offset"), Value: proto.String(strconv.Itoa(offset))},
			{Key: proto.String("length"), Value: proto.String(strconv.Itoa(len(raw)))},
		}
		offset += len(raw)
	}
	// Put m back as it was, whatever happens.
	defer func() {
		for _, mv := range out {
			mv.t.RawData, mv.t.DataLocation, mv.t.ExternalData = mv.raw, mv.location, nil
		}
	}()
	b, err := m.Encode()
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if len(b) > maxModelSize {
		return fmt.Errorf("writing %s: without its initializers of %d bytes or more the model still has %d bytes, over the %d one protobuf message can hold",
			path, minExternalSize, len(b), maxModelSize)
	}
	err = onnximport.WriteStreamAtomic(dataPath, func(w io.Writer) error {
		at := 0
		for _, mv := range out {
			if next := (at + externalAlign - 1) / externalAlign * externalAlign; next > at {
				if _, err := w.Write(make([]byte, next-at)); err != nil {
					return err
				}
				at = next
			}
			if _, err := w.Write(mv.raw); err != nil {
				return err
			}
			at += len(mv.raw)
		}
		return nil
	})
	if err != nil {
		return writeError(dataPath, err)
	}
	if err := onnximport.WriteFileAtomic(path, b); err != nil {
		os.Remove(dataPath)
		return writeError(path, err)
	}
	return nil
}
