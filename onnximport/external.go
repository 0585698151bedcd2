package onnximport

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// externalRef is a tensor's external_data entry, parsed.
type externalRef struct {
	location string
	offset   int64
	length   int64 // -1: to the end of the file
}

// parseExternal reads a tensor's external_data key/value list.
func parseExternal(t *onnxpb.TensorProto) (externalRef, error) {
	ref := externalRef{length: -1}
	for _, kv := range t.GetExternalData() {
		v := kv.GetValue()
		switch kv.GetKey() {
		case "location":
			ref.location = v
		case "offset", "length":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return ref, fmt.Errorf("external data %s %q is not a non-negative integer", kv.GetKey(), v)
			}
			if kv.GetKey() == "offset" {
				ref.offset = n
			} else {
				ref.length = n
			}
		}
	}
	if ref.location == "" {
		return ref, errors.New("external data has no location")
	}
	return ref, nil
}

// isExternal reports whether a tensor keeps its data in an external file.
func isExternal(t *onnxpb.TensorProto) bool {
	return t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL
}

// resolveLocation returns the file an external data location names,
// refusing locations that are absolute or lead outside dir.
func resolveLocation(dir, loc string) (string, error) {
	if filepath.IsAbs(loc) || strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, `\`) || filepath.VolumeName(loc) != "" {
		return "", fmt.Errorf("external data location %q is absolute; it must be relative to the model's directory", loc)
	}
	clean := filepath.Clean(filepath.FromSlash(loc))
	if clean == ".." || strings.HasPrefix(clean, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("external data location %q leads outside the model's directory", loc)
	}
	path := filepath.Join(dir, clean)
	// A symbolic link inside the directory must not lead out of it either.
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", fmt.Errorf("external data location %q: %w", loc, err)
	}
	realPath, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("external data location %q: %w", loc, err)
	}
	rel, err := filepath.Rel(realDir, realPath)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return "", fmt.Errorf("external data location %q leads outside the model's directory", loc)
	}
	return path, nil
}

// eachTensor calls fn for every tensor stored in the model: initializers
// and tensor-valued attributes, in the main graph, in subgraphs and in
// model-local functions.
func eachTensor(m *onnxpb.ModelProto, fn func(t *onnxpb.TensorProto)) {
	var graph func(g *onnxpb.GraphProto)
	var nodes func(ns []*onnxpb.NodeProto)
	nodes = func(ns []*onnxpb.NodeProto) {
		for _, n := range ns {
			for _, a := range n.GetAttribute() {
				if a.GetT() != nil {
					fn(a.GetT())
				}
				for _, t := range a.GetTensors() {
					fn(t)
				}
				if a.GetG() != nil {
					graph(a.GetG())
				}
				for _, g := range a.GetGraphs() {
					graph(g)
				}
			}
		}
	}
	graph = func(g *onnxpb.GraphProto) {
		for _, t := range g.GetInitializer() {
			fn(t)
		}
		nodes(g.GetNode())
	}
	if g := m.GetGraph(); g != nil {
		graph(g)
	}
	for _, f := range m.GetFunctions() {
		nodes(f.GetNode())
	}
}

// loadExternal reads every external data file the model refers to and
// checks that each tensor's range lies inside its file.
func (m *Model) loadExternal() error {
	var errs []error
	eachTensor(m.Proto, func(t *onnxpb.TensorProto) {
		if !isExternal(t) {
			return
		}
		ref, err := parseExternal(t)
		if err == nil {
			_, err = m.externalBytes(ref)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tensor %q: %w", t.GetName(), err))
		}
	})
	return joinLimited(errs)
}

// externalBytes returns the bytes an external reference covers, reading
// (once) the file it names.
func (m *Model) externalBytes(ref externalRef) ([]byte, error) {
	if m.dir == "" {
		return nil, fmt.Errorf("external data %q cannot be resolved: the model was not read from a file", ref.location)
	}
	data, ok := m.external[ref.location]
	if !ok {
		path, err := resolveLocation(m.dir, ref.location)
		if err != nil {
			return nil, err
		}
		data, err = os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading external data: %w", err)
		}
		if m.external == nil {
			m.external = make(map[string][]byte)
		}
		m.external[ref.location] = data
	}
	size := int64(len(data))
	if ref.offset > size {
		return nil, fmt.Errorf("external data offset %d is past the end of %q (%d bytes)", ref.offset, ref.location, size)
	}
	if ref.length < 0 {
		return data[ref.offset:], nil
	}
	if ref.length > size-ref.offset {
		return nil, fmt.Errorf("external data range %d+%d reaches past the end of %q (%d bytes)", ref.offset, ref.length, ref.location, size)
	}
	return data[ref.offset : ref.offset+ref.length], nil
}
