package onnximport

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// Operator-set bounds accepted for the default ONNX domain. The operators
// dcconvert works with changed little after opset 17; models up to 21 are
// read as they are.
const (
	MinOpset = 7
	MaxOpset = 21
)

// DefaultDomain is the canonical name of the default operator domain; the
// empty string and "ai.onnx" both denote it.
const DefaultDomain = "ai.onnx"

// Model is an ONNX model in memory: the decoded protobuf message plus the
// external data it refers to. The Proto field is the source of truth;
// changes made to it are what Encode and WriteFile write.
type Model struct {
	// Proto is the decoded model.
	Proto *onnxpb.ModelProto
	// Path is the file the model was read from, or empty.
	Path string

	dir      string
	external map[string][]byte // location -> file contents
}

// Decode decodes the wire form of a model without checking it. It fails
// only on bytes that are not a well-formed ModelProto.
func Decode(b []byte) (*Model, error) {
	if len(b) == 0 {
		return nil, errors.New("file is empty")
	}
	m := &onnxpb.ModelProto{}
	if err := proto.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("not an ONNX model: %w", err)
	}
	return &Model{Proto: m}, nil
}

// Encode returns the wire form of the model. For a model decoded from b
// and not changed since, the result equals b whenever b was written in
// canonical field order, as every ONNX writer does.
func (m *Model) Encode() ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m.Proto)
	if err != nil {
		return nil, fmt.Errorf("encoding model: %w", err)
	}
	return b, nil
}

// Graph returns the main graph of the model; it is nil only for a model
// that has not been checked.
func (m *Model) Graph() *onnxpb.GraphProto { return m.Proto.GetGraph() }

// Opsets returns the imported operator-set version of each domain, with the
// default domain under DefaultDomain.
func (m *Model) Opsets() map[string]int64 {
	out := make(map[string]int64, len(m.Proto.GetOpsetImport()))
	for _, o := range m.Proto.GetOpsetImport() {
		out[canonicalDomain(o.GetDomain())] = o.GetVersion()
	}
	return out
}

// Opset returns the imported version of domain ("" or "ai.onnx" for the
// default domain), or 0 when the model does not import it.
func (m *Model) Opset(domain string) int64 {
	return m.Opsets()[canonicalDomain(domain)]
}

// Initializer returns the initializer of the main graph with the given
// name.
func (m *Model) Initializer(name string) (*onnxpb.TensorProto, bool) {
	for _, t := range m.Graph().GetInitializer() {
		if t.GetName() == name {
			return t, true
		}
	}
	return nil, false
}

// Initializers returns the initializers of the main graph by name.
func (m *Model) Initializers() map[string]*onnxpb.TensorProto {
	out := make(map[string]*onnxpb.TensorProto, len(m.Graph().GetInitializer()))
	for _, t := range m.Graph().GetInitializer() {
		out[t.GetName()] = t
	}
	return out
}

// canonicalDomain maps the two spellings of the default domain to one.
func canonicalDomain(d string) string {
	if d == "" || d == "ai.onnx" {
		return DefaultDomain
	}
	return d
}

// IsDefaultDomain reports whether a node domain denotes the default ONNX
// operator set.
func IsDefaultDomain(d string) bool { return canonicalDomain(d) == DefaultDomain }

// nodeLabel names a node in messages: its name when it has one, else its
// index, followed by its operator type.
func nodeLabel(i int, n *onnxpb.NodeProto) string {
	op := n.GetOpType()
	if d := n.GetDomain(); !IsDefaultDomain(d) {
		op = d + "." + op
	}
	if n.GetName() != "" {
		return fmt.Sprintf("node %q (%s)", n.GetName(), op)
	}
	return fmt.Sprintf("node #%d (%s)", i, op)
}
