package onnximport

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// Tensor is a decoded ONNX tensor. Floating-point tensors (float, double,
// float16, bfloat16) are decoded to Float, integer and boolean tensors to
// Int; the other field is nil.
type Tensor struct {
	Name  string
	Dims  []int64
	Type  onnxpb.TensorProto_DataType
	Float []float32
	Int   []int64
}

// NumElements returns the number of elements the dimensions describe.
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// elemSize returns the size in bytes of one element of a data type in
// raw_data, or 0 for types dcconvert does not decode.
func elemSize(dt onnxpb.TensorProto_DataType) int64 {
	switch dt {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_INT32, onnxpb.TensorProto_UINT32:
		return 4
	case onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_INT64, onnxpb.TensorProto_UINT64:
		return 8
	case onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16, onnxpb.TensorProto_INT16, onnxpb.TensorProto_UINT16:
		return 2
	case onnxpb.TensorProto_INT8, onnxpb.TensorProto_UINT8, onnxpb.TensorProto_BOOL:
		return 1
	}
	return 0
}

// IsFloatType reports whether a data type is a floating-point type, which
// Model.Tensor decodes to float32.
func IsFloatType(dt onnxpb.TensorProto_DataType) bool {
	switch dt {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16:
		return true
	}
	return false
}

// numElements checks a dimension list and returns its element count. It
// refuses negative dimensions and counts that overflow int64.
func numElements(dims []int64) (int64, error) {
	n := int64(1)
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("dimension %d is negative in %v", d, dims)
		}
		if d != 0 && n > math.MaxInt64/d {
			return 0, fmt.Errorf("dimensions %v describe too many elements", dims)
		}
		n *= d
	}
	return n, nil
}

// typedLen returns how many values the typed field for the tensor's data
// type holds.
func typedLen(t *onnxpb.TensorProto) int64 {
	switch dataType(t) {
	case onnxpb.TensorProto_FLOAT:
		return int64(len(t.GetFloatData()))
	case onnxpb.TensorProto_DOUBLE:
		return int64(len(t.GetDoubleData()))
	case onnxpb.TensorProto_INT64:
		return int64(len(t.GetInt64Data()))
	case onnxpb.TensorProto_UINT32, onnxpb.TensorProto_UINT64:
		return int64(len(t.GetUint64Data()))
	case onnxpb.TensorProto_STRING:
		return int64(len(t.GetStringData()))
	default:
		return int64(len(t.GetInt32Data()))
	}
}

// checkTensor verifies that a tensor's stored data matches its dimensions
// and data type without decoding it. External data must have been loaded.
func (m *Model) checkTensor(t *onnxpb.TensorProto) error {
	n, err := numElements(t.GetDims())
	if err != nil {
		return err
	}
	dt := dataType(t)
	if dt == onnxpb.TensorProto_UNDEFINED {
		return fmt.Errorf("data type is undefined")
	}
	if _, ok := onnxpb.TensorProto_DataType_name[int32(dt)]; !ok {
		return fmt.Errorf("data type %d is not an ONNX data type", dt)
	}
	raw, hasRaw, err := m.rawData(t)
	if err != nil {
		return err
	}
	size := elemSize(dt)
	if !hasRaw || size == 0 {
		// Strings, complex numbers and the like are kept as they are;
		// their typed fields are checked only where the count is known.
		if !hasRaw && dt != onnxpb.TensorProto_COMPLEX64 && dt != onnxpb.TensorProto_COMPLEX128 {
			if got := typedLen(t); got != n {
				return fmt.Errorf("holds %d values for dimensions %v (%d elements)", got, t.GetDims(), n)
			}
		}
		return nil
	}
	if want := n * size; n > math.MaxInt64/size || int64(len(raw)) != want {
		return fmt.Errorf("holds %d bytes of %s data for dimensions %v (%d elements)", len(raw), dt, t.GetDims(), n)
	}
	return nil
}

// rawData returns a tensor's raw bytes (from raw_data or external data) and
// whether it has any; typed-field tensors have none.
func (m *Model) rawData(t *onnxpb.TensorProto) ([]byte, bool, error) {
	if isExternal(t) {
		ref, err := parseExternal(t)
		if err != nil {
			return nil, false, err
		}
		b, err := m.externalBytes(ref)
		return b, true, err
	}
	if t.RawData != nil {
		return t.RawData, true, nil
	}
	return nil, false, nil
}

// Tensor decodes a tensor of the model to float32 or int64 values (see
// Tensor). Float32 data stored in raw_data is returned without copying
// where the platform is little-endian and the bytes are aligned: writing
// to Float then changes the model.
func (m *Model) Tensor(t *onnxpb.TensorProto) (*Tensor, error) {
	if err := m.checkTensor(t); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.GetName(), err)
	}
	dt := dataType(t)
	out := &Tensor{Name: t.GetName(), Dims: append([]int64(nil), t.GetDims()...), Type: dt}
	n, _ := numElements(t.GetDims())
	raw, hasRaw, _ := m.rawData(t)
	switch {
	case dt == onnxpb.TensorProto_FLOAT && hasRaw:
		out.Float = float32View(raw, n)
	case dt == onnxpb.TensorProto_FLOAT:
		out.Float = t.GetFloatData()
	case IsFloatType(dt):
		out.Float = make([]float32, n)
		for i := range out.Float {
			out.Float[i] = decodeFloat(t, raw, hasRaw, i)
		}
	case elemSize(dt) > 0:
		out.Int = make([]int64, n)
		for i := range out.Int {
			out.Int[i] = decodeInt(t, raw, hasRaw, i)
		}
	default:
		return nil, fmt.Errorf("tensor %q: data type %s cannot be decoded to numbers", t.GetName(), dt)
	}
	return out, nil
}

// hostLittleEndian reports whether float32 values can alias little-endian
// bytes on this machine.
var hostLittleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// float32View returns the n little-endian float32 values in raw, sharing
// its memory when possible and copying otherwise.
func float32View(raw []byte, n int64) []float32 {
	if n == 0 {
		return []float32{}
	}
	p := unsafe.Pointer(unsafe.SliceData(raw))
	if hostLittleEndian && uintptr(p)%unsafe.Alignof(float32(0)) == 0 {
		return unsafe.Slice((*float32)(p), n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// decodeFloat returns element i of a double, float16 or bfloat16 tensor.
func decodeFloat(t *onnxpb.TensorProto, raw []byte, hasRaw bool, i int) float32 {
	switch dataType(t) {
	case onnxpb.TensorProto_DOUBLE:
		if hasRaw {
			return float32(math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:])))
		}
		return float32(t.GetDoubleData()[i])
	case onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16:
		var bits uint16
		if hasRaw {
			bits = binary.LittleEndian.Uint16(raw[2*i:])
		} else {
			bits = uint16(t.GetInt32Data()[i])
		}
		if dataType(t) == onnxpb.TensorProto_BFLOAT16 {
			return math.Float32frombits(uint32(bits) << 16)
		}
		return Float16ToFloat32(bits)
	}
	return 0
}

// decodeInt returns element i of an integer or boolean tensor.
func decodeInt(t *onnxpb.TensorProto, raw []byte, hasRaw bool, i int) int64 {
	dt := dataType(t)
	if !hasRaw {
		switch dt {
		case onnxpb.TensorProto_INT64:
			return t.GetInt64Data()[i]
		case onnxpb.TensorProto_UINT32, onnxpb.TensorProto_UINT64:
			return int64(t.GetUint64Data()[i])
		case onnxpb.TensorProto_UINT16:
			return int64(uint16(t.GetInt32Data()[i]))
		case onnxpb.TensorProto_UINT8, onnxpb.TensorProto_BOOL:
			return int64(uint8(t.GetInt32Data()[i]))
		default:
			return int64(t.GetInt32Data()[i])
		}
	}
	le := binary.LittleEndian
	switch dt {
	case onnxpb.TensorProto_INT64:
		return int64(le.Uint64(raw[8*i:]))
	case onnxpb.TensorProto_UINT64:
		return int64(le.Uint64(raw[8*i:]))
	case onnxpb.TensorProto_INT32:
		return int64(int32(le.Uint32(raw[4*i:])))
	case onnxpb.TensorProto_UINT32:
		return int64(le.Uint32(raw[4*i:]))
	case onnxpb.TensorProto_INT16:
		return int64(int16(le.Uint16(raw[2*i:])))
	case onnxpb.TensorProto_UINT16:
		return int64(le.Uint16(raw[2*i:]))
	case onnxpb.TensorProto_INT8:
		return int64(int8(raw[i]))
	default: // UINT8, BOOL
		return int64(raw[i])
	}
}

// Float16ToFloat32 converts IEEE 754 half-precision bits to float32.
func Float16ToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: renormalise
		e := uint32(127 - 15 + 1)
		for frac&0x400 == 0 {
			frac <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (frac&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// dataType returns a tensor's element type.
func dataType(t *onnxpb.TensorProto) onnxpb.TensorProto_DataType {
	return onnxpb.TensorProto_DataType(t.GetDataType())
}

// FloatTensor returns a FLOAT initializer named name holding data as
// little-endian raw_data, the layout Model.Tensor aliases.
func FloatTensor(name string, dims []int64, data []float32) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(data))
	for i, f := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	return &onnxpb.TensorProto{Name: proto.String(name), Dims: dims,
		DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), RawData: raw}
}
