package onnximport

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

func TestFloat16ToFloat32(t *testing.T) {
	// Values from the IEEE 754 binary16 definition.
	cases := []struct {
		bits uint16
		want float64
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xc000, -2},
		{0x3555, 0.333251953125},
		{0x7bff, 65504},
		{0x0400, 6.103515625e-05},       // smallest normal
		{0x0001, 5.960464477539063e-08}, // smallest subnormal
		{0x03ff, 6.097555160522461e-05}, // largest subnormal
		{0x7c00, math.Inf(1)},
		{0xfc00, math.Inf(-1)},
	}
	for _, c := range cases {
		if got := Float16ToFloat32(c.bits); float64(got) != c.want {
			t.Errorf("Float16ToFloat32(%#04x) = %g, want %g", c.bits, got, c.want)
		}
	}
	if got := Float16ToFloat32(0x7e00); !math.IsNaN(float64(got)) {
		t.Errorf("Float16ToFloat32(0x7e00) = %g, want NaN", got)
	}
	if got := Float16ToFloat32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("Float16ToFloat32(0x8000) = %g, want -0", got)
	}
}

func TestTensorDecode(t *testing.T) {
	le := binary.LittleEndian
	raw := func(size int, put func(b []byte, i int), n int) []byte {
		b := make([]byte, size*n)
		for i := 0; i < n; i++ {
			put(b[size*i:], i)
		}
		return b
	}
	f64 := []float64{1.5, -2.25, 1e-3}
	typ := func(dt onnxpb.TensorProto_DataType) *int32 { return proto.Int32(int32(dt)) }
	cases := []struct {
		name      string
		t         *onnxpb.TensorProto
		wantFloat []float32
		wantInt   []int64
	}{
		{"float raw", floatTensor("x", []int64{3}, 1, -2, 0.5), []float32{1, -2, 0.5}, nil},
		{"float typed", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_FLOAT), FloatData: []float32{3, 4}}, []float32{3, 4}, nil},
		{"scalar", floatTensor("x", nil, 7), []float32{7}, nil},
		{"empty", floatTensor("x", []int64{0, 3}), []float32{}, nil},
		{"double raw", &onnxpb.TensorProto{Dims: []int64{3}, DataType: typ(onnxpb.TensorProto_DOUBLE),
			RawData: raw(8, func(b []byte, i int) { le.PutUint64(b, math.Float64bits(f64[i])) }, 3)}, []float32{1.5, -2.25, 1e-3}, nil},
		{"double typed", &onnxpb.TensorProto{Dims: []int64{3}, DataType: typ(onnxpb.TensorProto_DOUBLE), DoubleData: f64}, []float32{1.5, -2.25, 1e-3}, nil},
		{"float16 raw", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_FLOAT16), RawData: []byte{0x00, 0x3c, 0x00, 0xc0}}, []float32{1, -2}, nil},
		{"float16 typed", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_FLOAT16), Int32Data: []int32{0x3c00, 0x7bff}}, []float32{1, 65504}, nil},
		{"bfloat16 raw", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_BFLOAT16), RawData: []byte{0x80, 0x3f, 0x20, 0xc0}}, []float32{1, -2.5}, nil},
		{"int64 raw", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_INT64),
			RawData: raw(8, func(b []byte, i int) { le.PutUint64(b, uint64([]int64{-1, 25088}[i])) }, 2)}, nil, []int64{-1, 25088}},
		{"int64 typed", int64Tensor("s", 0, -1), nil, []int64{0, -1}},
		{"int32 raw", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_INT32), RawData: []byte{0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0}}, nil, []int64{-1, 7}},
		{"int32 typed", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_INT32), Int32Data: []int32{-5, 5}}, nil, []int64{-5, 5}},
		{"int8 raw", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_INT8), RawData: []byte{0xfe, 3}}, nil, []int64{-2, 3}},
		{"uint8 raw", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_UINT8), RawData: []byte{0xfe, 3}}, nil, []int64{254, 3}},
		{"bool typed", &onnxpb.TensorProto{Dims: []int64{2}, DataType: typ(onnxpb.TensorProto_BOOL), Int32Data: []int32{1, 0}}, nil, []int64{1, 0}},
		{"uint64 typed", &onnxpb.TensorProto{Dims: []int64{1}, DataType: typ(onnxpb.TensorProto_UINT64), Uint64Data: []uint64{42}}, nil, []int64{42}},
	}
	m := &Model{Proto: &onnxpb.ModelProto{}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := m.Tensor(c.t)
			if err != nil {
				t.Fatal(err)
			}
			if c.wantFloat != nil && !equalFloats(got.Float, c.wantFloat, 1e-7) {
				t.Errorf("Float = %v, want %v", got.Float, c.wantFloat)
			}
			if c.wantInt != nil && !cmp.Equal(got.Int, c.wantInt) {
				t.Errorf("Int = %v, want %v", got.Int, c.wantInt)
			}
		})
	}
}

func TestTensorFloatAliasing(t *testing.T) {
	m := &Model{Proto: &onnxpb.ModelProto{}}
	tp := floatTensor("x", []int64{2}, 1, 2)
	v, err := m.Tensor(tp)
	if err != nil {
		t.Fatal(err)
	}
	v.Float[0] = 5
	back, _ := m.Tensor(tp)
	if hostLittleEndian && back.Float[0] != 5 {
		t.Error("float32 raw data was copied on a little-endian host, want it aliased")
	}
	// Unaligned raw data is copied, with the same values.
	buf := make([]byte, 9)
	copy(buf[1:], floatTensor("y", []int64{2}, 3, 4).RawData)
	tp.RawData = buf[1:]
	v, err = m.Tensor(tp)
	if err != nil {
		t.Fatal(err)
	}
	if !equalFloats(v.Float, []float32{3, 4}, 0) {
		t.Errorf("unaligned decode = %v, want [3 4]", v.Float)
	}
}

func TestTensorRejectsStrings(t *testing.T) {
	m := &Model{Proto: &onnxpb.ModelProto{}}
	tp := &onnxpb.TensorProto{Name: proto.String("s"), Dims: []int64{1},
		DataType: proto.Int32(int32(onnxpb.TensorProto_STRING)), StringData: [][]byte{[]byte("a")}}
	if _, err := m.Tensor(tp); err == nil {
		t.Error("decoding a string tensor to numbers succeeded")
	}
}
