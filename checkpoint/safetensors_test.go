package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// Values survive safetensors unchanged, bit for bit, so the tests compare
// floats exactly: by bits, with every NaN equal to every other (a NaN's
// payload is not something a reader in another language keeps).
var exactFloats = cmp.Options{
	cmp.Comparer(func(a, b float32) bool {
		return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
	}),
	cmp.Comparer(func(a, b float64) bool {
		return math.Float64bits(a) == math.Float64bits(b) || (a != a && b != b)
	}),
	cmpopts.EquateEmpty(),
}

// diffTensors describes the differences between two sets of tensors:
// names, element types (an empty slice is not a nil one), shapes and
// values.
func diffTensors(want, got map[string]Tensor) string {
	var b strings.Builder
	for name, w := range want {
		if g, ok := got[name]; ok && g.DType() != w.DType() {
			b.WriteString("tensor " + name + ": dtype " + string(g.DType()) + ", want " + string(w.DType()) + "\n")
		}
	}
	b.WriteString(cmp.Diff(want, got, exactFloats))
	return b.String()
}

// sampleFile returns a file with every element type, a scalar, empty
// tensors, special values and metadata.
func sampleFile() File {
	return File{
		Tensors: map[string]Tensor{
			"conv1.weight": {Shape: []int{2, 1, 2, 2}, F32: []float32{
				1, -2, 0.5, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Copysign(0, -1)),
				math.SmallestNonzeroFloat32, math.MaxFloat32}},
			"conv1.bias":     {Shape: []int{2}, F64: []float64{math.Pi, -math.E}},
			"step":           {Shape: []int{}, I64: []int64{123456789}},
			"lr":             {F64: []float64{0.001}}, // a scalar with a nil shape
			"bn.counts":      {Shape: []int{3}, I64: []int64{math.MinInt64, math.MaxInt64, 0}},
			"empty.f32":      {Shape: []int{0, 4}, F32: []float32{}},
			"empty.i64":      {Shape: []int{3, 0}, I64: []int64{}},
			"nan":            {Shape: []int{1}, F64: []float64{math.NaN()}},
			"unicode.wéight": {Shape: []int{1, 1}, F32: []float32{7}},
		},
		Metadata: map[string]string{"format": "dcconvert", "epoch": "3", "quote\"<&>": "\u00e9\n"},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	f := sampleFile()
	b, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffTensors(f.Tensors, got.Tensors); diff != "" {
		t.Errorf("tensors after a round trip (-want +got):\n%s", diff)
	}
	sum := sha256.Sum256(b[len(b)-dataLen(f):])
	wantMeta := map[string]string{MetaChecksum: hex.EncodeToString(sum[:])}
	for k, v := range f.Metadata {
		wantMeta[k] = v
	}
	if diff := cmp.Diff(wantMeta, got.Metadata); diff != "" {
		t.Errorf("metadata after a round trip (-want +got):\n%s", diff)
	}
	if _, ok := f.Metadata[MetaChecksum]; ok {
		t.Errorf("Encode added the checksum to the caller's metadata")
	}
	if n := binary.LittleEndian.Uint64(b); (8+n)%8 != 0 {
		t.Errorf("the data section starts at byte %d, not a multiple of 8", 8+n)
	}
	for _, tt := range got.Tensors {
		if tt.Shape == nil {
			t.Errorf("a decoded tensor has a nil shape; scalars have an empty one")
		}
	}
}

// dataLen returns the size of f's data section.
func dataLen(f File) int {
	n := 0
	for _, t := range f.Tensors {
		n += t.Len() * t.DType().size()
	}
	return n
}

func TestEncodeDeterministic(t *testing.T) {
	first, err := Encode(sampleFile())
	if err != nil {
		t.Fatal(err)
	}
	for range 20 { // map iteration order differs from call to call
		b, err := Encode(sampleFile())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, first) {
			t.Fatal("encoding the same file twice gave different bytes")
		}
	}
	// The caller's checksum is replaced, not kept.
	f := sampleFile()
	f.Metadata[MetaChecksum] = "0000"
	b, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, first) {
		t.Error("a checksum set by the caller changed the output")
	}
}

// file builds a safetensors file from a header written out by hand and a
// data section, as the format defines it.
func file(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

// le returns the little-endian bytes of the values, each of which is a
// float32, float64 or int64.
func le(values ...any) []byte {
	var b []byte
	for _, v := range values {
		b, _ = binary.Append(b, binary.LittleEndian, v)
	}
	return b
}

// TestEncodeBytes checks Encode against bytes written out from the
// format's definition.
func TestEncodeBytes(t *testing.T) {
	f := File{
		Tensors: map[string]Tensor{
			"b": {Shape: []int{}, I64: []int64{7}},
			"a": {Shape: []int{2}, F32: []float32{1, -2}},
			"c": {Shape: []int{0}, F64: []float64{}},
		},
		Metadata: map[string]string{"k": "v"},
	}
	// a, b, c in name order: a at [0, 8), b at [8, 16), c empty at 16.
	data := []byte{
		0x00, 0x00, 0x80, 0x3f, // 1.0f
		0x00, 0x00, 0x00, 0xc0, // -2.0f
		0x07, 0, 0, 0, 0, 0, 0, 0, // 7
	}
	sum := sha256.Sum256(data)
	header := `{"__metadata__":{"dcconvert.sha256":"` + hex.EncodeToString(sum[:]) + `","k":"v"},` +
		`"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]},` +
		`"b":{"data_offsets":[8,16],"dtype":"I64","shape":[]},` +
		`"c":{"data_offsets":[16,16],"dtype":"F64","shape":[0]}}`
	for len(header)%8 != 0 {
		header += " "
	}
	want := file(header, data)

	got, err := Encode(f)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("Encode gave\n%q\nwant\n%q", got, want)
	}
	dec, err := Decode(want)
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffTensors(f.Tensors, dec.Tensors); diff != "" {
		t.Errorf("decoded tensors (-want +got):\n%s", diff)
	}
}

// TestDecodeForeign reads files as other writers make them: no checksum,
// any key order, no padding, white space in the header.
func TestDecodeForeign(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want File
	}{
		{
			name: "unpadded, keys in another order",
			b:    file(`{"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`, le(2.5)),
			want: File{Tensors: map[string]Tensor{"x": {Shape: []int{1}, F64: []float64{2.5}}}},
		},
		{
			name: "tensors out of data order, spaces, metadata",
			b: file(` { "w" : {"dtype":"F32","shape":[1,2],"data_offsets":[8,16]}, "__metadata__":{"format":"pt"},`+
				`"n":{"dtype":"I64","shape":[],"data_offsets":[0,8]} }   `, le(int64(-3), float32(0.25), float32(4))),
			want: File{
				Tensors: map[string]Tensor{
					"w": {Shape: []int{1, 2}, F32: []float32{0.25, 4}},
					"n": {Shape: []int{}, I64: []int64{-3}},
				},
				Metadata: map[string]string{"format": "pt"},
			},
		},
		{
			name: "no tensors",
			b:    file(`{}`, nil),
			want: File{Tensors: map[string]Tensor{}},
		},
		{
			name: "null metadata",
			b:    file(`{"__metadata__":null}`, nil),
			want: File{Tensors: map[string]Tensor{}},
		},
		{
			name: "escaped name",
			b:    file(`{"a\u00e9\"":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, le(float32(1))),
			want: File{Tensors: map[string]Tensor{"a\u00e9\"": {Shape: []int{}, F32: []float32{1}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.b)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffTensors(tt.want.Tensors, got.Tensors); diff != "" {
				t.Errorf("tensors (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want.Metadata, got.Metadata, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("metadata (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	f32 := func(name string, offs string) string {
		return `"` + name + `":{"dtype":"F32","shape":[1],"data_offsets":` + offs + `}`
	}
	valid, err := Encode(sampleFile())
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(valid)
	flipped[len(flipped)-1] ^= 0x01
	badSum := file(`{"__metadata__":{"dcconvert.sha256":"00"},`+f32("a", "[0,4]")+`}`, le(float32(1)))

	tests := []struct {
		name string
		b    []byte
		want []string // substrings of the error
	}{
		{"empty", nil, []string{"0 bytes, shorter than the 8-byte header length"}},
		{"seven bytes", []byte{1, 0, 0, 0, 0, 0, 0}, []string{"7 bytes"}},
		{"header longer than the file", append(binary.LittleEndian.AppendUint64(nil, 10), "{}"...), []string{"header length 10 is larger than the 2 bytes"}},
		{"header over 100 MB", binary.LittleEndian.AppendUint64(nil, 100_000_001), []string{"more than the 100000000 bytes allowed"}},
		{"header length near 2^64", binary.LittleEndian.AppendUint64(nil, math.MaxUint64), []string{"more than the 100000000"}},
		{"invalid JSON", file(`{"a":`, nil), []string{"not a JSON object"}},
		{"empty header", file(``, nil), []string{"not a JSON object"}},
		{"array header", file(`[]`, nil), []string{"not a JSON object", `starts with "["`}},
		{"text after the object", file(`{} {}`, nil), []string{"follows the object"}},
		{"invalid UTF-8", file("{\"\xff\":1}", nil), []string{"not valid UTF-8"}},
		{"entry not an object", file(`{"a":5}`, nil), []string{`tensor "a"`, "not an object"}},
		{"unknown dtype", file(`{"w":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}`, []byte{0, 0}), []string{`tensor "w"`, `dtype "BF16" is not supported`}},
		{"missing fields", file(`{"w":{"dtype":"F32"}}`, nil), []string{`tensor "w"`, "no shape, data_offsets"}},
		{"shape and offsets disagree", file(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), []string{`tensor "w"`, "shape [3] of F32 takes 12 bytes but data_offsets [0, 8] span 8 bytes"}},
		{"scalar with two elements", file(`{"w":{"dtype":"F64","shape":[],"data_offsets":[0,16]}}`, make([]byte, 16)), []string{"shape [] of F64 takes 8 bytes"}},
		{"negative shape", file(`{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, make([]byte, 4)), []string{"entry 0 is negative"}},
		{"fractional shape", file(`{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, make([]byte, 4)), []string{`tensor "w"`}},
		{"shape overflowing int64", file(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}`, make([]byte, 4)), []string{"shape [4294967296 4294967296 4294967296] has more elements than a file can hold"}},
		{"offsets past the end", file(`{`+f32("w", "[0,8]")+`}`, make([]byte, 4)), []string{"data_offsets [0, 8] are out of range: the data section has 4 bytes"}},
		{"offsets reversed", file(`{`+f32("w", "[4,0]")+`}`, make([]byte, 4)), []string{"out of range"}},
		{"negative offset", file(`{`+f32("w", "[-4,0]")+`}`, make([]byte, 4)), []string{"out of range"}},
		{"three offsets", file(`{`+f32("w", "[0,4,8]")+`}`, make([]byte, 8)), []string{"data_offsets has 3 entries, not 2"}},
		{"overlap", file(`{`+f32("a", "[0,4]")+`,`+f32("b", "[2,6]")+`}`, make([]byte, 6)), []string{`tensors "a" and "b" overlap in the data section (bytes 2 to 4)`}},
		{"overlap of equal ranges", file(`{`+f32("a", "[0,4]")+`,`+f32("b", "[0,4]")+`}`, make([]byte, 4)), []string{`tensors "a" and "b" overlap`}},
		{"hole", file(`{`+f32("a", "[0,4]")+`,`+f32("b", "[8,12]")+`}`, make([]byte, 12)), []string{"hole: bytes 4 to 8 belong to no tensor"}},
		{"hole at the start", file(`{`+f32("a", "[4,8]")+`}`, make([]byte, 8)), []string{"hole: bytes 0 to 4"}},
		{"trailing bytes", file(`{`+f32("a", "[0,4]")+`}`, make([]byte, 7)), []string{"3 trailing bytes follow the last tensor"}},
		{"data without tensors", file(`{}`, make([]byte, 1)), []string{"1 trailing bytes"}},
		{"tensor named twice", file(`{`+f32("a", "[0,4]")+`,`+f32("a", "[4,8]")+`}`, make([]byte, 8)), []string{`key "a" appears twice`}},
		{"metadata twice", file(`{"__metadata__":{},"__metadata__":{}}`, nil), []string{`key "__metadata__" appears twice`}},
		{"metadata number", file(`{"__metadata__":{"epoch":3}}`, nil), []string{`metadata: "epoch": the value 3 is not a string`}},
		{"metadata object", file(`{"__metadata__":{"a":{"b":"c"}}}`, nil), []string{`metadata: "a": the value {"b":"c"} is not a string`}},
		{"metadata array", file(`{"__metadata__":["a"]}`, nil), []string{"metadata: not a JSON object of strings"}},
		{"empty name", file(`{`+f32("", "[0,4]")+`}`, make([]byte, 4)), []string{"a tensor has an empty name"}},
		{"every tensor problem at once", file(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1,5]}}`, make([]byte, 5)),
			[]string{`tensor "a": dtype "U8"`, `tensor "b": shape [2] of F32 takes 8 bytes`}},
		{"flipped data byte", flipped, []string{"checksum mismatch", "corrupt"}},
		{"wrong checksum", badSum, []string{"checksum mismatch", "the header records 00", "corrupt"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.b)
			if err == nil {
				t.Fatalf("Decode accepted %q", tt.b)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestDecodeCopies(t *testing.T) {
	b, err := Encode(File{Tensors: map[string]Tensor{"w": {Shape: []int{2}, F32: []float32{1, 2}}}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if got := f.Tensors["w"].F32; got[0] != 1 || got[1] != 2 {
		t.Errorf("clearing the input changed the decoded tensor to %v", got)
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name string
		f    File
		want []string
	}{
		{"empty name", File{Tensors: map[string]Tensor{"": {F32: []float32{1}}}}, []string{"a tensor has an empty name"}},
		{"reserved name", File{Tensors: map[string]Tensor{"__metadata__": {F32: []float32{1}}}}, []string{`tensor "__metadata__": the name is reserved`}},
		{"name not UTF-8", File{Tensors: map[string]Tensor{"a\xff": {F32: []float32{1}}}}, []string{"the name is not valid UTF-8"}},
		{"no slice", File{Tensors: map[string]Tensor{"w": {Shape: []int{0}}}}, []string{`tensor "w": 0 of F32, F64 and I64 are set; exactly one must be`}},
		{"two slices", File{Tensors: map[string]Tensor{"w": {F32: []float32{1}, I64: []int64{1}}}}, []string{"2 of F32, F64 and I64 are set"}},
		{"negative shape", File{Tensors: map[string]Tensor{"w": {Shape: []int{-1}, F32: []float32{}}}}, []string{"entry 0 is negative"}},
		{"too few elements", File{Tensors: map[string]Tensor{"w": {Shape: []int{2, 3}, F64: make([]float64, 5)}}}, []string{"shape [2 3] holds more than the 5 elements given"}},
		{"too many elements", File{Tensors: map[string]Tensor{"w": {Shape: []int{2, 3}, F64: make([]float64, 7)}}}, []string{"shape [2 3] holds 6 elements but 7 are given"}},
		{"scalar without its element", File{Tensors: map[string]Tensor{"w": {I64: []int64{}}}}, []string{"shape [] holds more than the 0 elements given"}},
		{"huge shape", File{Tensors: map[string]Tensor{"w": {Shape: []int{1 << 40, 1 << 40, 1 << 40}, F32: []float32{1}}}}, []string{"holds more than the 1 elements given"}},
		{"metadata not UTF-8", File{Metadata: map[string]string{"k": "\xff"}}, []string{`metadata "k": not valid UTF-8`}},
		{"every problem at once", File{Tensors: map[string]Tensor{"a": {}, "b": {Shape: []int{2}, F32: []float32{1}}}}, []string{`tensor "a"`, `tensor "b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Encode(tt.f)
			if err == nil {
				t.Fatal("Encode accepted the file")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestTensorDTypeLen(t *testing.T) {
	tests := []struct {
		name string
		t    Tensor
		d    DType
		n    int
	}{
		{"F32", Tensor{F32: make([]float32, 3)}, F32, 3},
		{"F64", Tensor{F64: make([]float64, 2)}, F64, 2},
		{"I64 empty", Tensor{I64: []int64{}}, I64, 0},
		{"none", Tensor{}, "", 0},
		{"two", Tensor{F32: make([]float32, 1), F64: make([]float64, 4)}, "", 1},
	}
	for _, tt := range tests {
		if d, n := tt.t.DType(), tt.t.Len(); d != tt.d || n != tt.n {
			t.Errorf("%s: DType, Len = %q, %d, want %q, %d", tt.name, d, n, tt.d, tt.n)
		}
	}
}

func TestWriteReadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "last.safetensors")
	if err := WriteFile(path, sampleFile()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffTensors(sampleFile().Tensors, got.Tensors); diff != "" {
		t.Errorf("tensors read back (-want +got):\n%s", diff)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// A file that cannot be encoded leaves the old one as it was, and
	// nothing else in the directory.
	err = WriteFile(path, File{Tensors: map[string]Tensor{"w": {}}})
	if err == nil || !strings.HasPrefix(err.Error(), "writing "+path+": ") {
		t.Errorf("writing an invalid file: error %v, want one starting with %q", err, "writing "+path+": ")
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("a failed write changed the existing file")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries after a failed write, want 1", len(entries))
	}

	// A write into a missing directory fails and creates nothing.
	missing := filepath.Join(dir, "no", "such.safetensors")
	if err := WriteFile(missing, sampleFile()); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after a failed write, stat gives %v, want not-exist", err)
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.safetensors")
	_, err := ReadFile(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "reading "+missing+": ") {
		t.Errorf("reading a missing file: error %v, want one wrapping fs.ErrNotExist that starts with %q", err, "reading "+missing)
	}

	corrupt := filepath.Join(dir, "corrupt.safetensors")
	b, err := Encode(sampleFile())
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-3] ^= 0x80
	if err := os.WriteFile(corrupt, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = ReadFile(corrupt)
	if err == nil || !strings.HasPrefix(err.Error(), "reading "+corrupt+": checksum mismatch") {
		t.Errorf("reading a corrupt file: error %v, want a checksum mismatch naming the file", err)
	}
}

// FuzzDecode checks that Decode never panics and that whatever it accepts
// encodes again and decodes to the same tensors and metadata.
func FuzzDecode(f *testing.F) {
	valid, err := Encode(sampleFile())
	if err != nil {
		f.Fatal(err)
	}
	small, err := Encode(File{Tensors: map[string]Tensor{"a": {Shape: []int{2}, F32: []float32{1, 2}}, "b": {I64: []int64{3}}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(small)
	for _, n := range []int{0, 7, 8, 9, 16, len(small) / 2, len(small) - 1} {
		f.Add(small[:n])
	}
	f.Add(file(`{"x":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"__metadata__":{"k":"v"}}`, le(2.5)))
	f.Add(file(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, le(float32(1))))

	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Decode(b)
		if err != nil {
			return
		}
		again, err := Encode(got)
		if err != nil {
			t.Fatalf("a decoded file does not encode: %v", err)
		}
		back, err := Decode(again)
		if err != nil {
			t.Fatalf("an encoded file does not decode: %v", err)
		}
		if diff := diffTensors(got.Tensors, back.Tensors); diff != "" {
			t.Errorf("tensors after decode, encode, decode (-first +second):\n%s", diff)
		}
		delete(got.Metadata, MetaChecksum)
		delete(back.Metadata, MetaChecksum)
		if diff := cmp.Diff(got.Metadata, back.Metadata, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("metadata after decode, encode, decode (-first +second):\n%s", diff)
		}
	})
}
