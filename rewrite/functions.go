package rewrite

import (
	"encoding/json"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// minIRVersion is the first IR version with model-local functions.
const minIRVersion = 8

// addFunctions gives every decoupled op type in the graph its model-local
// function, written in the model's own default-domain opset.
func addFunctions(st *State) error {
	m := st.Model
	p := m.Proto
	opset := m.Opset("")
	have := map[string]bool{}
	for _, f := range p.GetFunctions() {
		have[f.GetDomain()+"\x00"+f.GetName()] = true
	}
	for _, n := range m.Graph().GetNode() {
		if !onnximport.IsDecoupledConv(n) || have[n.GetDomain()+"\x00"+n.GetOpType()] {
			continue
		}
		cfg, err := dcnet.FromNode(n)
		if err != nil {
			return fmt.Errorf("node %q: %w", n.GetName(), err)
		}
		fn, err := dcnet.Function(cfg, opset)
		if err != nil {
			return fmt.Errorf("node %q: %w", n.GetName(), err)
		}
		p.Functions = append(p.Functions, fn)
		have[n.GetDomain()+"\x00"+n.GetOpType()] = true
	}
	return nil
}

// importDomain imports the ai.dcnet domain and raises the IR version to 8
// where it is lower, as model-local functions require.
func importDomain(m *onnximport.Model) {
	p := m.Proto
	if m.Opset(dcnet.Domain) == 0 {
		p.OpsetImport = append(p.OpsetImport, &onnxpb.OperatorSetIdProto{
			Domain: proto.String(dcnet.Domain), Version: proto.Int64(dcnet.DomainVersion)})
	}
	if p.GetIrVersion() < minIRVersion {
		p.IrVersion = proto.Int64(minIRVersion)
	}
}

// writeMetadata records every decoupled layer's configuration under
// ai.dcnet.layers and the layers whose radius is not calibrated under
// ai.dcnet.uncalibrated (removed when none is).
func writeMetadata(st *State) error {
	m := st.Model
	layers := map[string]dcnet.LayerInfo{}
	learned := map[string]bool{}
	for _, n := range m.Graph().GetNode() {
		if !onnximport.IsDecoupledConv(n) {
			continue
		}
		cfg, err := dcnet.FromNode(n)
		if err != nil {
			return fmt.Errorf("node %q: %w", n.GetName(), err)
		}
		layers[n.GetName()] = dcnet.LayerInfoOf(cfg)
		learned[n.GetName()] = cfg.LearnRho
	}
	b, err := json.Marshal(layers)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", dcnet.MetaLayers, err)
	}
	setMetadata(m.Proto, dcnet.MetaLayers, string(b))

	// Layers stay uncalibrated until something calibrates them: keep the
	// ones already listed that still have a learnable radius, then add the
	// new ones.
	var uncal []string
	seen := map[string]bool{}
	old, _ := Metadata(m.Proto, dcnet.MetaUncalibrated)
	for _, name := range append(strings.Split(old, ","), st.Report.Uncalibrated...) {
		if name != "" && learned[name] && !seen[name] {
			seen[name] = true
			uncal = append(uncal, name)
		}
	}
	setMetadata(m.Proto, dcnet.MetaUncalibrated, strings.Join(uncal, ","))
	return nil
}

// Metadata returns the value of a metadata_props key.
func Metadata(p *onnxpb.ModelProto, key string) (string, bool) {
	for _, kv := range p.GetMetadataProps() {
		if kv.GetKey() == key {
			return kv.GetValue(), true
		}
	}
	return "", false
}

// setMetadata sets a metadata_props key, or removes it when value is
// empty.
func setMetadata(p *onnxpb.ModelProto, key, value string) {
	out := p.MetadataProps[:0]
	found := false
	for _, kv := range p.GetMetadataProps() {
		if kv.GetKey() != key {
			out = append(out, kv)
			continue
		}
		if value != "" && !found {
			kv.Value = proto.String(value)
			out = append(out, kv)
			found = true
		}
	}
	if value != "" && !found {
		out = append(out, &onnxpb.StringStringEntryProto{Key: proto.String(key), Value: proto.String(value)})
	}
	p.MetadataProps = out
}
