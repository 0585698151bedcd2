package checkpoint

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf8"
)

// DType is the element type of a tensor, spelled as in a safetensors
// header. F32, F64 and I64 are supported.
type DType string

// The supported element types.
const (
	F32 DType = "F32" // float32
	F64 DType = "F64" // float64
	I64 DType = "I64" // int64
)

// size returns the bytes per element of a supported type, or 0.
func (d DType) size() int {
	switch d {
	case F32:
		return 4
	case F64, I64:
		return 8
	}
	return 0
}

// Tensor is one tensor of a safetensors file: its shape and its elements in
// row-major order. Exactly one of F32, F64 and I64 is non-nil; it holds as
// many elements as the shape says (a scalar has shape [] and one element; a
// tensor with a zero in its shape has an empty, non-nil slice).
type Tensor struct {
	Shape []int
	F32   []float32
	F64   []float64
	I64   []int64
}

// DType returns the element type of the tensor: the type of its non-nil
// slice, or "" when none or more than one is set.
func (t Tensor) DType() DType {
	var d DType
	n := 0
	if t.F32 != nil {
		d, n = F32, n+1
	}
	if t.F64 != nil {
		d, n = F64, n+1
	}
	if t.I64 != nil {
		d, n = I64, n+1
	}
	if n != 1 {
		return ""
	}
	return d
}

// Len returns the number of elements the tensor holds: the length of its
// non-nil slice (of the first, in the order F32, F64, I64, when the tensor
// is invalid and has several).
func (t Tensor) Len() int {
	switch {
	case t.F32 != nil:
		return len(t.F32)
	case t.F64 != nil:
		return len(t.F64)
	case t.I64 != nil:
		return len(t.I64)
	}
	return 0
}

// File is the content of one safetensors file: tensors by name and the
// free-form string metadata of the header.
type File struct {
	Tensors  map[string]Tensor
	Metadata map[string]string
}

// MetaChecksum is the metadata key under which Encode records the
// lower-case hex SHA-256 of the data section; Decode verifies it when
// present.
const MetaChecksum = "dcconvert.sha256"

// metadataKey is the reserved header key of the metadata object.
const metadataKey = "__metadata__"

// maxElements bounds the element count of a tensor in a file, so that its
// size in bytes fits in an int64 whatever its element type.
const maxElements = math.MaxInt64 / 8

// maxHeader is the largest header, in bytes, Decode accepts (and Encode
// writes), as other safetensors readers do.
const maxHeader = 100_000_000

// headerEntry is a tensor's entry in the header. The fields are in
// alphabetical order of their JSON names so that the encoded header has
// sorted keys.
type headerEntry struct {
	DataOffsets []int64 `json:"data_offsets"`
	DType       DType   `json:"dtype"`
	Shape       []int64 `json:"shape"`
}

// Encode returns the safetensors encoding of f. The output depends on f
// alone: tensors are laid out in the data section in the byte order of
// their names, the header is compact JSON with sorted keys, padded with
// spaces so that the data section starts at a multiple of 8 bytes, and
// elements are little-endian. The metadata written is f.Metadata plus
// MetaChecksum, whose value Encode computes (replacing any the caller set);
// f itself is not changed.
//
// Encode checks f first and reports every problem together: tensor names
// must be non-empty valid UTF-8 other than "__metadata__", each tensor must
// have exactly one slice set, shape entries must not be negative and the
// element count must match the shape; metadata must be valid UTF-8.
func Encode(f File) ([]byte, error) {
	if err := validate(f); err != nil {
		return nil, fmt.Errorf("encoding safetensors: %w", err)
	}
	names := make([]string, 0, len(f.Tensors))
	for name := range f.Tensors {
		names = append(names, name)
	}
	slices.Sort(names)

	entries := make(map[string]any, len(names)+1)
	var dataLen int64
	for _, name := range names {
		t := f.Tensors[name]
		d := t.DType()
		end := dataLen + int64(t.Len()*d.size())
		shape := make([]int64, len(t.Shape))
		for i, s := range t.Shape {
			shape[i] = int64(s)
		}
		entries[name] = headerEntry{DataOffsets: []int64{dataLen, end}, DType: d, Shape: shape}
		dataLen = end
	}

	// The checksum's length is fixed, so the header is laid out with a
	// placeholder, the data written after it and hashed in place, and the
	// placeholder then replaced: the data is never held twice.
	meta := make(map[string]string, len(f.Metadata)+1)
	for k, v := range f.Metadata {
		meta[k] = v
	}
	meta[MetaChecksum] = strings.Repeat("0", 2*sha256.Size)
	entries[metadataKey] = meta
	header, err := encodeHeader(entries)
	if err != nil {
		return nil, err
	}
	n := len(header)
	if n > maxHeader {
		return nil, fmt.Errorf("encoding safetensors: the header takes %d bytes, more than the %d readers accept", n, maxHeader)
	}

	out := make([]byte, 8+n+int(dataLen))
	binary.LittleEndian.PutUint64(out, uint64(n))
	data := out[8+n:]
	off := 0
	for _, name := range names {
		off += putElements(data[off:], f.Tensors[name])
	}
	sum := sha256.Sum256(data)
	meta[MetaChecksum] = hex.EncodeToString(sum[:])
	final, err := encodeHeader(entries)
	if err != nil {
		return nil, err
	}
	if len(final) != n {
		return nil, fmt.Errorf("encoding safetensors header: its length changed from %d to %d bytes with the checksum", n, len(final))
	}
	copy(out[8:], final)
	return out, nil
}

// encodeHeader returns the header JSON of entries, compact, keys sorted,
// padded with spaces to a multiple of 8 bytes.
func encodeHeader(entries map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(entries); err != nil {
		return nil, fmt.Errorf("encoding safetensors header: %w", err)
	}
	h := bytes.TrimSuffix(b.Bytes(), []byte{'\n'})
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	return h, nil
}

// validate returns every problem that keeps f from being encoded.
func validate(f File) error {
	var errs []error
	for name, t := range f.Tensors {
		switch {
		case name == "":
			errs = append(errs, errors.New("a tensor has an empty name"))
		case name == metadataKey:
			errs = append(errs, fmt.Errorf("tensor %q: the name is reserved for the metadata", name))
		case !utf8.ValidString(name):
			errs = append(errs, fmt.Errorf("tensor %q: the name is not valid UTF-8", name))
		}
		if err := checkTensor(t); err != nil {
			errs = append(errs, fmt.Errorf("tensor %q: %w", name, err))
		}
	}
	for k, v := range f.Metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			errs = append(errs, fmt.Errorf("metadata %q: not valid UTF-8", k))
		}
	}
	return errors.Join(errs...)
}

// checkTensor checks that t has one slice set whose length its shape gives.
func checkTensor(t Tensor) error {
	if t.DType() == "" {
		set := 0
		for _, ok := range []bool{t.F32 != nil, t.F64 != nil, t.I64 != nil} {
			if ok {
				set++
			}
		}
		return fmt.Errorf("%d of F32, F64 and I64 are set; exactly one must be", set)
	}
	n, err := elementCount(t.Shape, int64(t.Len()))
	if err != nil {
		return err
	}
	switch {
	case n > int64(t.Len()):
		return fmt.Errorf("shape %v holds more than the %d elements given", t.Shape, t.Len())
	case n < int64(t.Len()):
		return fmt.Errorf("shape %v holds %d elements but %d are given", t.Shape, n, t.Len())
	}
	return nil
}

// elementCount returns the number of elements of shape, or an error when
// an entry is negative. A count above limit is returned as limit+1 (the
// caller compares the result with limit), so the product cannot overflow.
func elementCount[T int | int64](shape []T, limit int64) (int64, error) {
	for i, s := range shape {
		if s < 0 {
			return 0, fmt.Errorf("shape %v: entry %d is negative", shape, i)
		}
	}
	n := int64(1)
	for _, s := range shape {
		if s == 0 {
			return 0, nil
		}
	}
	for _, s := range shape {
		if n > limit/int64(s) {
			return limit + 1, nil
		}
		n *= int64(s)
	}
	return n, nil
}

// putElements writes the elements of t to b, little-endian, and returns
// the number of bytes written.
func putElements(b []byte, t Tensor) int {
	switch {
	case t.F32 != nil:
		for i, v := range t.F32 {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return 4 * len(t.F32)
	case t.F64 != nil:
		for i, v := range t.F64 {
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(v))
		}
		return 8 * len(t.F64)
	default:
		for i, v := range t.I64 {
			binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
		}
		return 8 * len(t.I64)
	}
}

// span is where one tensor lies in the data section.
type span struct {
	name       string
	begin, end int64
}

// Decode parses a safetensors file. It accepts what the format allows and
// Encode writes, from any writer: tensors in any order, any JSON
// whitespace, a header of any length up to 100 MB. It rejects, with an
// error saying what is wrong, a file shorter than its 8-byte header length,
// a header that is not a JSON object or not valid UTF-8, a tensor named
// twice, a dtype other than F32, F64 and I64, a shape that does not match
// the tensor's byte range, byte ranges that leave the data section,
// overlap, leave holes or leave bytes after the last tensor, and metadata
// that is not an object of strings. When the metadata holds MetaChecksum,
// the data section must hash to it.
//
// The returned tensors hold copies of the data; they do not alias b.
// Decode does not panic on any input.
func Decode(b []byte) (File, error) {
	if len(b) < 8 {
		return File{}, fmt.Errorf("the file is %d bytes, shorter than the 8-byte header length that starts a safetensors file", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > maxHeader {
		return File{}, fmt.Errorf("the header length %d is more than the %d bytes allowed", n, maxHeader)
	}
	if n > uint64(len(b)-8) {
		return File{}, fmt.Errorf("the header length %d is larger than the %d bytes that follow it", n, len(b)-8)
	}
	header, data := b[8:8+n], b[8+n:]
	if !utf8.Valid(header) {
		return File{}, errors.New("the header is not valid UTF-8")
	}
	members, err := objectMembers(header)
	if err != nil {
		return File{}, fmt.Errorf("the header is not a JSON object: %w", err)
	}

	f := File{Tensors: make(map[string]Tensor, len(members))}
	var errs []error
	var spans []span
	dtypes := make(map[string]DType, len(members))
	shapes := make(map[string][]int, len(members))
	for _, m := range members {
		if m.key == metadataKey {
			meta, err := decodeMetadata(m.value)
			if err != nil {
				errs = append(errs, fmt.Errorf("metadata: %w", err))
			}
			f.Metadata = meta
			continue
		}
		if m.key == "" {
			errs = append(errs, errors.New("a tensor has an empty name"))
			continue
		}
		d, shape, s, err := decodeEntry(m.value, int64(len(data)))
		if err != nil {
			errs = append(errs, fmt.Errorf("tensor %q: %w", m.key, err))
			continue
		}
		s.name = m.key
		spans = append(spans, s)
		dtypes[m.key], shapes[m.key] = d, shape
	}
	if err := errors.Join(errs...); err != nil {
		return File{}, err
	}
	if err := checkLayout(spans, int64(len(data))); err != nil {
		return File{}, err
	}
	if want, ok := f.Metadata[MetaChecksum]; ok {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			return File{}, fmt.Errorf("checksum mismatch: the data section hashes to %s but the header records %s; the file is corrupt", got, want)
		}
	}
	for _, s := range spans {
		f.Tensors[s.name] = readElements(dtypes[s.name], shapes[s.name], data[s.begin:s.end])
	}
	return f, nil
}

// member is one key and value of a JSON object.
type member struct {
	key   string
	value json.RawMessage
}

// objectMembers returns the members of the JSON object b holds, in order,
// rejecting a key that appears twice and anything after the object.
func objectMembers(b []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("it starts with %v", tokenString(tok))
	}
	var members []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("found %v where a key belongs", tokenString(tok))
		}
		if seen[key] {
			return nil, fmt.Errorf("key %q appears twice", key)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("key %q: %w", key, err)
		}
		members = append(members, member{key, v})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if tok, err := dec.Token(); err != io.EOF {
		if err != nil {
			return nil, fmt.Errorf("after the object: %w", err)
		}
		return nil, fmt.Errorf("%v follows the object", tokenString(tok))
	}
	return members, nil
}

// tokenString describes a JSON token for an error message.
func tokenString(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		return fmt.Sprintf("%q", string(v))
	case string:
		return fmt.Sprintf("the string %q", v)
	case nil:
		return "null"
	}
	return fmt.Sprintf("%v", tok)
}

// decodeMetadata decodes the metadata object; null stands for none.
func decodeMetadata(raw json.RawMessage) (map[string]string, error) {
	if string(raw) == "null" {
		return nil, nil
	}
	members, err := objectMembers(raw)
	if err != nil {
		return nil, fmt.Errorf("not a JSON object of strings: %w", err)
	}
	meta := make(map[string]string, len(members))
	var errs []error
	for _, m := range members {
		var v string
		if len(m.value) == 0 || m.value[0] != '"' || json.Unmarshal(m.value, &v) != nil {
			errs = append(errs, fmt.Errorf("%q: the value %s is not a string", m.key, abbreviate(m.value)))
			continue
		}
		meta[m.key] = v
	}
	return meta, errors.Join(errs...)
}

// abbreviate shortens a JSON value for an error message.
func abbreviate(raw json.RawMessage) string {
	const most = 40
	if len(raw) <= most {
		return string(raw)
	}
	return strings.ToValidUTF8(string(raw[:most]), "") + "..."
}

// decodeEntry decodes and checks one tensor's header entry against a data
// section of dataLen bytes.
func decodeEntry(raw json.RawMessage, dataLen int64) (DType, []int, span, error) {
	var e struct {
		DType       *string  `json:"dtype"`
		Shape       *[]int64 `json:"shape"`
		DataOffsets *[]int64 `json:"data_offsets"`
	}
	if len(raw) == 0 || raw[0] != '{' {
		return "", nil, span{}, fmt.Errorf("the entry %s is not an object", abbreviate(raw))
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return "", nil, span{}, fmt.Errorf("the entry %s: %w", abbreviate(raw), err)
	}
	var missing []string
	if e.DType == nil {
		missing = append(missing, "dtype")
	}
	if e.Shape == nil || *e.Shape == nil {
		missing = append(missing, "shape")
	}
	if e.DataOffsets == nil || *e.DataOffsets == nil {
		missing = append(missing, "data_offsets")
	}
	if len(missing) > 0 {
		return "", nil, span{}, fmt.Errorf("the entry has no %s", strings.Join(missing, ", "))
	}
	d := DType(*e.DType)
	if d.size() == 0 {
		return "", nil, span{}, fmt.Errorf("dtype %q is not supported (F32, F64 and I64 are)", d)
	}
	offs := *e.DataOffsets
	if len(offs) != 2 {
		return "", nil, span{}, fmt.Errorf("data_offsets has %d entries, not 2", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < begin || end > dataLen {
		return "", nil, span{}, fmt.Errorf("data_offsets [%d, %d] are out of range: the data section has %d bytes", begin, end, dataLen)
	}
	size := int64(d.size())
	count, err := elementCount(*e.Shape, maxElements)
	if err != nil {
		return "", nil, span{}, err
	}
	if count > maxElements {
		return "", nil, span{}, fmt.Errorf("shape %v has more elements than a file can hold", *e.Shape)
	}
	if count*size != end-begin {
		return "", nil, span{}, fmt.Errorf("shape %v of %s takes %d bytes but data_offsets [%d, %d] span %d bytes",
			*e.Shape, d, count*size, begin, end, end-begin)
	}
	shape := make([]int, len(*e.Shape))
	for i, s := range *e.Shape {
		if s > math.MaxInt { // an empty tensor's other entries are not bounded by its size
			return "", nil, span{}, fmt.Errorf("shape %v: entry %d does not fit in an int", *e.Shape, i)
		}
		shape[i] = int(s)
	}
	return d, shape, span{begin: begin, end: end}, nil
}

// checkLayout checks that the spans cover the data section exactly: no
// overlap, no hole, nothing after the last.
func checkLayout(spans []span, dataLen int64) error {
	slices.SortFunc(spans, func(a, b span) int {
		return cmp.Or(cmp.Compare(a.begin, b.begin), cmp.Compare(a.end, b.end), strings.Compare(a.name, b.name))
	})
	var pos int64
	prev := ""
	for _, s := range spans {
		switch {
		case s.begin < pos:
			return fmt.Errorf("tensors %q and %q overlap in the data section (bytes %d to %d)", prev, s.name, s.begin, pos)
		case s.begin > pos:
			return fmt.Errorf("the data section has a hole: bytes %d to %d belong to no tensor", pos, s.begin)
		}
		pos, prev = s.end, s.name
	}
	if pos != dataLen {
		return fmt.Errorf("%d trailing bytes follow the last tensor in the data section", dataLen-pos)
	}
	return nil
}

// readElements decodes the little-endian elements of a tensor from b,
// whose length the caller has checked.
func readElements(d DType, shape []int, b []byte) Tensor {
	t := Tensor{Shape: shape}
	switch d {
	case F32:
		t.F32 = make([]float32, len(b)/4)
		for i := range t.F32 {
			t.F32[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case F64:
		t.F64 = make([]float64, len(b)/8)
		for i := range t.F64 {
			t.F64[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case I64:
		t.I64 = make([]int64, len(b)/8)
		for i := range t.I64 {
			t.I64[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
	}
	return t
}

// WriteFile encodes f and writes it to path atomically: a failed write
// leaves no file behind and any earlier file at path as it was.
func WriteFile(path string, f File) error {
	b, err := Encode(f)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return writeAtomic(path, b)
}

// ReadFile reads and decodes the safetensors file at path. Errors start
// with "reading PATH: "; a missing file gives one that wraps
// fs.ErrNotExist.
func ReadFile(path string) (File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return File{}, fmt.Errorf("reading %s: %w", path, unwrapPath(err))
	}
	f, err := Decode(b)
	if err != nil {
		return File{}, fmt.Errorf("reading %s: %w", path, err)
	}
	return f, nil
}

// unwrapPath drops the *fs.PathError around err, whose path the caller's
// message already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
