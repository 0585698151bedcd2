package export

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/checkpoint"
	"github.com/dcconvert/dcconvert/data"
	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/models"
	"github.com/dcconvert/dcconvert/onnximport"
	"github.com/dcconvert/dcconvert/rewrite"
)

// Model returns the fine-tuned model: the run's model with the
// checkpoint's parameters and running statistics written into the
// initializers of the same names as float32 (running statistics, which
// the checkpoint holds in float64, rounded). Every call returns a new
// model; t is not changed.
//
// A later use of a shared initializer, "<initializer>@<node>", that
// fine-tuning moved away from the first use becomes an initializer of
// that name, which the node reads instead of the shared one. A layer
// listed in the ai.dcnet.uncalibrated metadata whose radius scale has
// been updated by training (its "<RhoScale>#t" counter is positive) now
// holds the running average and leaves the list; the key is removed when
// the list is empty. The preprocessing of run.json is recorded under
// data.MetaPreprocess, and the producer is dcconvert.
func (t *Trained) Model() (*onnximport.Model, error) {
	p := proto.Clone(t.source.Proto).(*onnxpb.ModelProto)
	m := &onnximport.Model{Proto: p}
	g := p.GetGraph()
	pos := map[string]int{}
	for i, init := range g.GetInitializer() {
		pos[init.GetName()] = i
	}
	values := map[string][]float32{} // checkpoint values by engine name
	var shared []string
	for _, name := range sortedKeys(t.params) {
		values[name] = t.values(name)
	}
	for _, name := range sortedKeys(t.stats) {
		values[name] = t.values(name)
	}
	for _, name := range sortedKeys(values) {
		i, ok := pos[name]
		if !ok {
			shared = append(shared, name)
			continue
		}
		nt, err := replaced(g.Initializer[i], values[name])
		if err != nil {
			return nil, err
		}
		g.Initializer[i] = nt
	}
	uses := newUses(g)
	for _, name := range shared {
		if err := t.splitShared(m, uses, name, values); err != nil {
			return nil, err
		}
	}
	t.calibrated(p, uses)
	if pre := t.Run.Preprocess; pre.Input != nil || pre.Mean != nil || pre.Std != nil || pre.Classes != nil {
		if err := data.WritePreprocessing(p, pre); err != nil {
			return nil, fmt.Errorf("%s: %w", t.Dir.Path(checkpoint.RunFile), err)
		}
	}
	p.ProducerName = proto.String(models.ProducerName)
	p.ProducerVersion = proto.String(models.ProducerVersion)
	return m, nil
}

// values returns a checkpoint tensor as float32.
func (t *Trained) values(name string) []float32 {
	v := t.file.Tensors[name]
	if v.F32 != nil {
		return v.F32
	}
	out := make([]float32, len(v.F64))
	for i, x := range v.F64 {
		out[i] = float32(x)
	}
	return out
}

// replaced returns a float initializer like old holding values instead.
func replaced(old *onnxpb.TensorProto, values []float32) (*onnxpb.TensorProto, error) {
	dt := onnxpb.TensorProto_DataType(old.GetDataType())
	var t *onnxpb.TensorProto
	switch dt {
	case onnxpb.TensorProto_FLOAT:
		t = onnximport.FloatTensor(old.GetName(), slices.Clone(old.GetDims()), values)
	case onnxpb.TensorProto_DOUBLE:
		raw := make([]byte, 0, 8*len(values))
		for _, x := range values {
			raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(float64(x)))
		}
		t = &onnxpb.TensorProto{Name: proto.String(old.GetName()), Dims: slices.Clone(old.GetDims()),
			DataType: proto.Int32(int32(dt)), RawData: raw}
	default:
		return nil, fmt.Errorf("initializer %q is %s; export writes FLOAT and DOUBLE parameters only", old.GetName(), dt)
	}
	t.DocString = old.DocString
	return t, nil
}

// uses indexes the main graph for following values through Identity
// nodes.
type uses struct {
	g        *onnxpb.GraphProto
	producer map[string]*onnxpb.NodeProto
	inits    map[string]bool
}

func newUses(g *onnxpb.GraphProto) *uses {
	u := &uses{g: g, producer: map[string]*onnxpb.NodeProto{}, inits: map[string]bool{}}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			u.producer[o] = n
		}
	}
	for _, t := range g.GetInitializer() {
		u.inits[t.GetName()] = true
	}
	return u
}

// source returns the initializer value resolves to through Identity
// nodes, as the engine looks parameters up, or "".
func (u *uses) source(value string) string {
	for range len(u.g.GetNode()) + 1 {
		if u.inits[value] {
			return value
		}
		n := u.producer[value]
		if n == nil || n.GetOpType() != onnximport.OpIdentity || !onnximport.IsDefaultDomain(n.GetDomain()) || len(n.GetInput()) == 0 {
			return ""
		}
		value = n.GetInput()[0]
	}
	return ""
}

// node returns the node the engine names node (its name, or "#<index>"
// for one without a name) that reads init among its inputs.
func (u *uses) node(node, init string) *onnxpb.NodeProto {
	for i, n := range u.g.GetNode() {
		name := n.GetName()
		if name == "" {
			name = "#" + strconv.Itoa(i)
		}
		if name != node {
			continue
		}
		for _, in := range n.GetInput() {
			if in != "" && u.source(in) == init {
				return n
			}
		}
	}
	return nil
}

// splitShared handles the checkpoint tensor name of a later use of a
// shared initializer, "<initializer>@<node>": when its values differ from
// those of the initializer, it becomes an initializer of that name, next
// to the shared one, and the node reads it.
func (t *Trained) splitShared(m *onnximport.Model, u *uses, name string, values map[string][]float32) error {
	g := m.Graph()
	for i := strings.Index(name, "@"); i >= 0; i = nextIndex(name, "@", i) {
		init, node := name[:i], name[i+1:]
		if !u.inits[init] {
			continue
		}
		n := u.node(node, init)
		if n == nil {
			continue
		}
		at := slices.IndexFunc(g.Initializer, func(x *onnxpb.TensorProto) bool { return x.GetName() == init })
		base := values[init]
		if base == nil {
			tt, err := m.Tensor(g.Initializer[at])
			if err != nil {
				return fmt.Errorf("initializer %q: %w", init, err)
			}
			base = tt.Float
		}
		if slices.Equal(base, values[name]) {
			return nil
		}
		nt, err := replaced(g.Initializer[at], values[name])
		if err != nil {
			return err
		}
		nt.Name = proto.String(name)
		g.Initializer = slices.Insert(g.Initializer, at+1, nt)
		u.inits[name] = true
		if m.Proto.GetIrVersion() < 4 {
			// Before IR 4 every initializer is a graph input too.
			g.Input = append(g.Input, tensorInfo(nt))
		}
		for k, in := range n.GetInput() {
			if in != "" && u.source(in) == init {
				n.Input[k] = name
			}
		}
		return nil
	}
	return fmt.Errorf("checkpoint %s: tensor %q is neither an initializer nor a later use of one by a node", t.Checkpoint, name)
}

// nextIndex returns the index of the next sep in s after i, or -1.
func nextIndex(s, sep string, i int) int {
	j := strings.Index(s[i+1:], sep)
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// tensorInfo returns the graph input declaring initializer t.
func tensorInfo(t *onnxpb.TensorProto) *onnxpb.ValueInfoProto {
	dims := make([]*onnxpb.TensorShapeProto_Dimension, len(t.GetDims()))
	for i, d := range t.GetDims() {
		dims[i] = &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}}
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(t.GetName()),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(t.GetDataType()),
			Shape:    &onnxpb.TensorShapeProto{Dim: dims},
		}}},
	}
}

// calibrated removes from the ai.dcnet.uncalibrated metadata every layer
// whose radius scale training has updated: its counter "<RhoScale>#t"
// (the engine's name of the node's RhoScale use) is positive.
func (t *Trained) calibrated(p *onnxpb.ModelProto, u *uses) {
	list, ok := rewrite.Metadata(p, dcnet.MetaUncalibrated)
	if !ok {
		return
	}
	nodes := map[string]*onnxpb.NodeProto{}
	for _, n := range p.GetGraph().GetNode() {
		if dcnet.IsDecoupled(n) && n.GetName() != "" {
			nodes[n.GetName()] = n
		}
	}
	var still []string
	for _, name := range strings.Split(list, ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if t.counter(nodes[name], u) == 0 {
			still = append(still, name)
		}
	}
	for i, kv := range p.GetMetadataProps() {
		if kv.GetKey() != dcnet.MetaUncalibrated {
			continue
		}
		if len(still) == 0 {
			p.MetadataProps = slices.Delete(p.MetadataProps, i, i+1)
		} else {
			kv.Value = proto.String(strings.Join(still, ","))
		}
		return
	}
}

// counter returns the running-average step count of node's RhoScale, 0
// when the node or the counter is missing.
func (t *Trained) counter(n *onnxpb.NodeProto, u *uses) int64 {
	if n == nil || len(n.GetInput()) <= dcnet.IndexRhoScale {
		return 0
	}
	init := u.source(n.GetInput()[dcnet.IndexRhoScale])
	if init == "" {
		return 0
	}
	for _, name := range []string{init + "@" + n.GetName(), init} {
		if v, ok := t.file.Tensors[name+engine.CounterSuffix]; ok && len(v.I64) == 1 {
			return v.I64[0]
		}
	}
	return 0
}
