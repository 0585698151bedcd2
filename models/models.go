package models

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// ProducerName and ProducerVersion are written into every model's
// producer_name and producer_version.
var (
	ProducerName    = "dcconvert"
	ProducerVersion = "0.1.0"
)

// Supported default-domain opsets and the default one.
const (
	MinOpset     = 7
	MaxOpset     = 17
	DefaultOpset = 13
)

// DefaultSeed is the seed used when Config.Seed is 0.
const DefaultSeed = 1

// maxDim bounds every input dimension, so that no size computation overflows.
const maxDim = 1 << 20

// maxParamBytes is the most initializer data one ONNX file can hold: a
// protobuf message is limited to 2 GiB.
const maxParamBytes = 2<<30 - 1<<20

// Config says what to build. Zero fields take the builder's defaults (see
// DefaultConfig).
type Config struct {
	// Input is the input shape C, H, W without the batch dimension; all zero
	// means the builder's default (3x224x224; vgg-mini 1x28x28).
	Input [3]int64
	// Classes is the width of the output; 0 means the default (1000; vgg-mini 10).
	Classes int
	// BN inserts BatchNormalization between every convolution and its ReLU
	// (VGG family; resnet18 always has batch normalization and ignores it).
	BN bool
	// Opset is the default-domain opset, 7..17; 0 means 13.
	Opset int64
	// Seed seeds the initialisation; 0 means 1.
	Seed uint64
}

// ConfigError reports an unknown builder name or a Config field that Build
// cannot use. Field is "name", "input", "classes" or "opset", so that a caller
// can point at whatever set it (a command-line flag, say).
type ConfigError struct {
	Field string
	// Msg is the whole message; it names the field and its value.
	Msg string
}

// Error returns e.Msg.
func (e *ConfigError) Error() string { return e.Msg }

// builder is one entry of the catalogue.
type builder struct {
	name    string
	input   [3]int64
	classes int
	build   func(g *graph, x fmap, cfg Config) (string, error)
	// alwaysBN marks a network that has batch normalization by design and
	// ignores Config.BN.
	alwaysBN bool
}

// builders is the catalogue, in the order Names lists it.
var builders = []builder{
	{"vgg11", [3]int64{3, 224, 224}, 1000, buildVGG(vggA), false},
	{"vgg13", [3]int64{3, 224, 224}, 1000, buildVGG(vggB), false},
	{"vgg16", [3]int64{3, 224, 224}, 1000, buildVGG(vggD), false},
	{"vgg19", [3]int64{3, 224, 224}, 1000, buildVGG(vggE), false},
	{"vgg-mini", [3]int64{1, 28, 28}, 10, buildVGGMini, false},
	{"resnet18", [3]int64{3, 224, 224}, 1000, buildResNet18, true},
}

// Names lists the builders: vgg11 vgg13 vgg16 vgg19 vgg-mini resnet18.
func Names() []string {
	names := make([]string, len(builders))
	for i, b := range builders {
		names[i] = b.name
	}
	return names
}

func lookup(name string) (builder, error) {
	for _, b := range builders {
		if b.name == name {
			return b, nil
		}
	}
	return builder{}, &ConfigError{
		Field: "name",
		Msg:   fmt.Sprintf("unknown model %q: valid names are %s", name, strings.Join(Names(), ", ")),
	}
}

// DefaultConfig returns the defaults of the named builder: its default input
// and classes, no added batch normalization, opset 13 and seed 1.
func DefaultConfig(name string) (Config, error) {
	b, err := lookup(name)
	if err != nil {
		return Config{}, err
	}
	return Config{Input: b.input, Classes: b.classes, Opset: DefaultOpset, Seed: DefaultSeed}, nil
}

// IRVersion returns the IR version that the ONNX release introducing opset
// pairs with it: 7, 8 -> 3; 9 -> 4; 10 -> 5; 11 -> 6; 12..14 -> 7; 15..17 -> 8.
// It returns 0 for an opset outside MinOpset..MaxOpset.
func IRVersion(opset int64) int64 {
	switch {
	case opset < MinOpset || opset > MaxOpset:
		return 0
	case opset <= 8:
		return 3
	case opset <= 11:
		return opset - 5
	case opset <= 14:
		return 7
	default:
		return 8
	}
}

// resolve fills cfg's zero fields from b's defaults and checks the result.
func (b builder) resolve(cfg Config) (Config, error) {
	if cfg.Input == [3]int64{} {
		cfg.Input = b.input
	}
	if cfg.Classes == 0 {
		cfg.Classes = b.classes
	}
	if cfg.Opset == 0 {
		cfg.Opset = DefaultOpset
	}
	if cfg.Seed == 0 {
		cfg.Seed = DefaultSeed
	}
	var errs []error
	if cfg.Opset < MinOpset || cfg.Opset > MaxOpset {
		errs = append(errs, &ConfigError{
			Field: "opset",
			Msg:   fmt.Sprintf("opset %d is not supported: must be in %d..%d", cfg.Opset, MinOpset, MaxOpset),
		})
	}
	if cfg.Classes < 1 {
		errs = append(errs, &ConfigError{
			Field: "classes",
			Msg:   fmt.Sprintf("classes %d is not valid: must be at least 1", cfg.Classes),
		})
	}
	for _, d := range cfg.Input {
		if d < 1 {
			errs = append(errs, &ConfigError{
				Field: "input",
				Msg:   fmt.Sprintf("input %s is not valid: every dimension must be positive", shapeString(cfg.Input)),
			})
			break
		}
		if d > maxDim {
			errs = append(errs, &ConfigError{
				Field: "input",
				Msg:   fmt.Sprintf("input %s is not valid: dimensions over %d are not supported", shapeString(cfg.Input), maxDim),
			})
			break
		}
	}
	return cfg, errors.Join(errs...)
}

// Build builds the named model. Zero fields of cfg take the builder's
// defaults. The model has one input "input" [batch_size, C, H, W] and one
// output "output" [batch_size, classes], both FLOAT, and its initializers are
// filled deterministically from cfg.Seed. Errors for a bad name or config are
// *ConfigError values (several joined with errors.Join).
func Build(name string, cfg Config) (*onnxpb.ModelProto, error) {
	b, err := lookup(name)
	if err != nil {
		return nil, err
	}
	cfg, err = b.resolve(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}

	g := newGraph(cfg.Opset)
	x := fmap{name: inputName, c: cfg.Input[0], h: cfg.Input[1], w: cfg.Input[2]}
	out, err := b.build(g, x, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := checkSize(g, cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	g.renameOutput(out, outputName)

	graphName := name
	if cfg.BN && !b.alwaysBN {
		graphName += "_bn"
	}
	inits := g.initializers(cfg.Seed)
	inputs := []*onnxpb.ValueInfoProto{valueInfo(inputName, -1, cfg.Input[0], cfg.Input[1], cfg.Input[2])}
	ir := IRVersion(cfg.Opset)
	if ir < 4 {
		// Before IR 4 every initializer must also be a graph input.
		for _, p := range g.params {
			inputs = append(inputs, valueInfo(p.name, p.dims...))
		}
	}
	return &onnxpb.ModelProto{
		IrVersion:       proto.Int64(ir),
		OpsetImport:     []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(cfg.Opset)}},
		ProducerName:    proto.String(ProducerName),
		ProducerVersion: proto.String(ProducerVersion),
		DocString: proto.String(fmt.Sprintf("%s: input %s, %d classes, seed %d",
			graphName, shapeString(cfg.Input), cfg.Classes, cfg.Seed)),
		Graph: &onnxpb.GraphProto{
			Name:        proto.String(graphName),
			Node:        g.nodes,
			Initializer: inits,
			Input:       inputs,
			Output:      []*onnxpb.ValueInfoProto{valueInfo(outputName, -1, int64(cfg.Classes))},
		},
	}, nil
}

// checkSize reports weights that would not fit in one ONNX file. The blame
// goes to classes when the classifier's last layer alone is too large, else
// to the input.
func checkSize(g *graph, cfg Config) error {
	// Bytes are summed in float64, so no product of dimensions can overflow.
	bytes := make([]float64, len(g.params))
	var total float64
	for i, p := range g.params {
		bytes[i] = 4
		for _, d := range p.dims {
			bytes[i] *= float64(d)
		}
		total += bytes[i]
	}
	if total <= maxParamBytes {
		return nil
	}
	// The last two parameters are the final layer's weight and bias.
	if last := bytes[len(bytes)-1] + bytes[len(bytes)-2]; last > maxParamBytes {
		return &ConfigError{
			Field: "classes",
			Msg: fmt.Sprintf("classes %d is too large: %.3g GiB of weights do not fit in one ONNX file (2 GiB)",
				cfg.Classes, total/(1<<30)),
		}
	}
	return &ConfigError{
		Field: "input",
		Msg: fmt.Sprintf("input %s is too large: %.3g GiB of weights do not fit in one ONNX file (2 GiB)",
			shapeString(cfg.Input), total/(1<<30)),
	}
}

// shapeString writes a shape as CxHxW.
func shapeString(s [3]int64) string {
	return fmt.Sprintf("%dx%dx%d", s[0], s[1], s[2])
}
