package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// foreignTol is the tolerance between ONNX Runtime and PyTorch on the
// fixtures: both compute in float32 but sum in different orders (and ORT
// fuses some ops), so values of order 1 differ in the last few bits.
var foreignTol = tolerance{abs: 1e-5, rel: 1e-4}

// TestForeignFixtures runs every model under testdata/foreign in ONNX Runtime
// and compares with the outputs PyTorch computed when it exported the model
// (scripts/make_foreign_fixtures.py).
func TestForeignFixtures(t *testing.T) {
	rt := ORT(t)
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	models, err := filepath.Glob(filepath.Join(root, "testdata", "foreign", "*", "model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if len(models) == 0 {
		t.Fatalf("no fixtures under %s", filepath.Join(root, "testdata", "foreign"))
	}
	checked := 0
	for _, model := range models {
		dir := filepath.Dir(model)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			CheckModel(t, model)
			inputNames, outputNames, err := graphIO(model)
			if err != nil {
				t.Fatal(err)
			}
			sets, err := filepath.Glob(filepath.Join(dir, "test_data_set_*"))
			if err != nil {
				t.Fatal(err)
			}
			if len(sets) == 0 {
				t.Fatalf("%s: no test_data_set_* directory", dir)
			}
			for _, set := range sets {
				inputs, err := readDataSet(set, "input", inputNames)
				if err != nil {
					t.Fatal(err)
				}
				want, err := readDataSet(set, "output", outputNames)
				if err != nil {
					t.Fatal(err)
				}
				got, err := rt.Run(model, inputs)
				if err != nil {
					t.Fatal(err)
				}
				for _, name := range outputNames {
					worst, err := compareTensor(got[name], want[name], foreignTol)
					if err != nil {
						t.Errorf("%s: output %q: %v", filepath.Base(set), name, err)
					}
					t.Logf("%s: output %q %v: largest difference from PyTorch %.3g",
						filepath.Base(set), name, want[name].Dims, worst)
				}
				checked++
			}
		})
	}
	t.Logf("checked %d fixture data sets against ONNX Runtime", checked)
}

// graphIO returns the names of a model's graph inputs that are not
// initializers, and of its graph outputs, in graph order.
func graphIO(path string) (inputs, outputs []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(b, &m); err != nil {
		return nil, nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	inits := map[string]bool{}
	for _, init := range m.GetGraph().GetInitializer() {
		inits[init.GetName()] = true
	}
	for _, in := range m.GetGraph().GetInput() {
		if !inits[in.GetName()] {
			inputs = append(inputs, in.GetName())
		}
	}
	for _, out := range m.GetGraph().GetOutput() {
		outputs = append(outputs, out.GetName())
	}
	return inputs, outputs, nil
}

// readDataSet reads kind_0.pb, kind_1.pb, ... from an ONNX backend test data
// set and keys them by the graph's names in order, as ONNX's backend tests do.
func readDataSet(dir, kind string, names []string) (map[string]Tensor, error) {
	files, err := filepath.Glob(filepath.Join(dir, kind+"_*.pb"))
	if err != nil {
		return nil, err
	}
	if len(files) != len(names) {
		return nil, fmt.Errorf("%s: %d %s files, the graph has %d %ss", dir, len(files), kind, len(names), kind)
	}
	out := make(map[string]Tensor, len(names))
	for i, name := range names {
		t, err := readTensorProto(filepath.Join(dir, fmt.Sprintf("%s_%d.pb", kind, i)))
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

// readTensorProto decodes a serialized float TensorProto held in float_data
// or in raw_data (little-endian).
func readTensorProto(path string) (Tensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Tensor{}, err
	}
	var tp onnxpb.TensorProto
	if err := proto.Unmarshal(b, &tp); err != nil {
		return Tensor{}, fmt.Errorf("decoding %s: %w", path, err)
	}
	if dt := onnxpb.TensorProto_DataType(tp.GetDataType()); dt != onnxpb.TensorProto_FLOAT {
		return Tensor{}, fmt.Errorf("%s: data type %v, want FLOAT", path, dt)
	}
	if tp.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
		return Tensor{}, errors.New(path + ": external data is not supported here")
	}
	n, err := numElements(tp.GetDims())
	if err != nil {
		return Tensor{}, fmt.Errorf("%s: %w", path, err)
	}
	t := Tensor{Dims: tp.GetDims()}
	switch raw := tp.GetRawData(); {
	case len(raw) > 0:
		if len(raw) != 4*n {
			return Tensor{}, fmt.Errorf("%s: raw_data has %d bytes, shape %v needs %d", path, len(raw), t.Dims, 4*n)
		}
		t.Data = make([]float32, n)
		for i := range t.Data {
			t.Data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	default:
		if len(tp.GetFloatData()) != n {
			return Tensor{}, fmt.Errorf("%s: float_data has %d values, shape %v needs %d", path, len(tp.GetFloatData()), t.Dims, n)
		}
		t.Data = tp.GetFloatData()
	}
	return t, nil
}
