package peer

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// Op types used by the hand-built models.
const (
	opAdd  = "Add"
	opConv = "Conv"
	opMul  = "Mul"
	opRelu = "Relu"
)

// dim is one dimension of a value's shape: a size, or a symbolic name when
// param is set.
type dim struct {
	value int64
	param string
}

// dims turns sizes into fixed dimensions.
func dims(sizes ...int64) []dim {
	out := make([]dim, len(sizes))
	for i, s := range sizes {
		out[i] = dim{value: s}
	}
	return out
}

// floatValue describes a float tensor graph input or output.
func floatValue(name string, shape []dim) *onnxpb.ValueInfoProto {
	sp := &onnxpb.TensorShapeProto{}
	for _, d := range shape {
		td := &onnxpb.TensorShapeProto_Dimension{}
		if d.param != "" {
			td.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d.param}
		} else {
			td.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d.value}
		}
		sp.Dim = append(sp.Dim, td)
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
			Shape:    sp,
		}}},
	}
}

// floatInit is a float initializer stored in float_data.
func floatInit(name string, shape []int64, data ...float32) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{
		Name:      proto.String(name),
		Dims:      shape,
		DataType:  proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
		FloatData: data,
	}
}

// node builds a node of the default domain; attrs may be nil.
func node(op, name string, inputs, outputs []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{
		OpType:    proto.String(op),
		Name:      proto.String(name),
		Input:     inputs,
		Output:    outputs,
		Attribute: attrs,
	}
}

// intsAttr is an INTS attribute.
func intsAttr(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{
		Name: proto.String(name),
		Type: onnxpb.AttributeProto_INTS.Enum(),
		Ints: v,
	}
}

// graphModel wraps a graph into an IR 8, opset 13 model.
func graphModel(g *onnxpb.GraphProto) *onnxpb.ModelProto {
	if g.Name == nil {
		g.Name = proto.String("test")
	}
	return &onnxpb.ModelProto{
		IrVersion:    proto.Int64(8),
		ProducerName: proto.String("dcconvert-peer-test"),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(13)}},
		Graph:        g,
	}
}

// writeModel serializes m into dir/name and returns the path.
func writeModel(t testing.TB, dir, name string, m *onnxpb.ModelProto) string {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("encoding %s: %v", name, err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// tolerance bounds the difference of a value from its reference:
// |got - want| <= abs + rel*|want|.
type tolerance struct {
	abs, rel float64
}

// compareTensor returns the largest difference between got and want, and an
// error naming the first value outside tol, or a shape mismatch.
func compareTensor(got, want Tensor, tol tolerance) (float64, error) {
	if !slices.Equal(got.Dims, want.Dims) {
		return 0, fmt.Errorf("shape %v, want %v", got.Dims, want.Dims)
	}
	if len(got.Data) != len(want.Data) {
		return 0, fmt.Errorf("%d values, want %d", len(got.Data), len(want.Data))
	}
	var worst float64
	var firstErr error
	for i := range want.Data {
		g, w := float64(got.Data[i]), float64(want.Data[i])
		d := math.Abs(g - w)
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		worst = max(worst, d)
		if !(d <= tol.abs+tol.rel*math.Abs(w)) && firstErr == nil {
			firstErr = fmt.Errorf("value %d: got %g, want %g (difference %.3g, tolerance %g + %g*|want|)",
				i, g, w, d, tol.abs, tol.rel)
		}
	}
	return worst, firstErr
}

// stubTB records what a helper does to a test instead of doing it, so tests
// can check that helpers skip or fail when they should. Skip and fatal calls
// end the goroutine, as they do on a real test; run the helper through
// runStub.
type stubTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (s *stubTB) Helper() {}

func (s *stubTB) Errorf(format string, args ...any) {
	s.failed = true
	s.msg = fmt.Sprintf(format, args...)
}

func (s *stubTB) Error(args ...any) {
	s.failed = true
	s.msg = fmt.Sprint(args...)
}

func (s *stubTB) Fatalf(format string, args ...any) {
	s.Errorf(format, args...)
	runtime.Goexit()
}

func (s *stubTB) Fatal(args ...any) {
	s.Error(args...)
	runtime.Goexit()
}

func (s *stubTB) FailNow() {
	s.failed = true
	runtime.Goexit()
}

func (s *stubTB) Skipf(format string, args ...any) {
	s.skipped = true
	s.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (s *stubTB) Skip(args ...any) {
	s.skipped = true
	s.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

func (s *stubTB) SkipNow() {
	s.skipped = true
	runtime.Goexit()
}

// runStub runs f with a stubTB wrapping t, in its own goroutine, and returns
// what f did to the stub.
func runStub(t *testing.T, f func(tb testing.TB)) *stubTB {
	s := &stubTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(s)
	}()
	<-done
	return s
}
