package models

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// stream returns the random source of one tensor: a PCG generator seeded with
// the model seed and the FNV-1a hash of the tensor's name. Each tensor has its
// own stream, so its values depend only on (seed, name), never on the order
// in which tensors are built or filled.
func stream(seed uint64, name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// fillTensor returns p's values as little-endian float32 bytes, the raw_data
// layout of a FLOAT TensorProto.
func fillTensor(p *param, seed uint64) []byte {
	n := p.size()
	raw := make([]byte, 4*n)
	switch p.kind {
	case fillZeros:
		// make already zeroed it.
	case fillOnes:
		one := math.Float32bits(1)
		for i := range n {
			binary.LittleEndian.PutUint32(raw[4*i:], one)
		}
	case fillNormal:
		r := stream(seed, p.name)
		for i := range n {
			v := float32(r.NormFloat64() * p.std)
			binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
		}
	}
	return raw
}

// initializers fills every parameter of g, on up to GOMAXPROCS goroutines,
// and returns them as FLOAT TensorProtos in declaration order.
func (g *graph) initializers(seed uint64) []*onnxpb.TensorProto {
	out := make([]*onnxpb.TensorProto, len(g.params))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, p := range g.params {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = &onnxpb.TensorProto{
				Name:     proto.String(p.name),
				Dims:     p.dims,
				DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
				RawData:  fillTensor(p, seed),
			}
		}()
	}
	wg.Wait()
	return out
}
