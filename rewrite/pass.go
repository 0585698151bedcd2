package rewrite

import (
	"errors"
	"fmt"

	"github.com/dcconvert/dcconvert/dcnet"
	"github.com/dcconvert/dcconvert/onnximport"
)

// Options configures a rewrite.
type Options struct {
	// Config is the decoupled operator given to every selected layer. Its
	// Bias and ChannelScale fields are set per layer.
	Config dcnet.Config
	// Layers is the layer selection (see the package documentation); empty
	// selects every rewritable Conv.
	Layers string
	// Inline writes function bodies in place of the decoupled nodes.
	Inline bool
	// Calib supplies calibration data (DCNET.md section 3): with it, a
	// learnable radius gets its RhoScale measured, RhoAuto the rho
	// attribute, and AlphaAuto the per-channel output scale.
	Calib Calibrator
	// RhoAuto fixes each layer's radius at the mean patch norm of the
	// calibration data.
	RhoAuto bool
	// AlphaAuto fits each layer's per-channel output scale A by least
	// squares against the source convolution.
	AlphaAuto bool
}

// State is what the passes of one rewrite share.
type State struct {
	Model   *onnximport.Model
	Options Options
	// Shapes are the inferred shapes of the model before the rewrite.
	Shapes onnximport.Shapes
	// Selected holds the graph indices of the Conv nodes to rewrite, in
	// graph order.
	Selected []int
	// Report describes what the rewrite did.
	Report *Report
}

// Pass is one step of a rewrite.
type Pass struct {
	Name string
	Doc  string
	Run  func(*State) error
}

// Passes returns the passes a rewrite with opts runs, in order.
func Passes(opts Options) []Pass {
	ps := []Pass{
		{"name-nodes", "give every unnamed Conv a unique name", nameNodes},
		{"select", "resolve the layer selection to Conv nodes", selectLayers},
		{"decouple", "replace each selected Conv by a DecoupledConv node", decouple},
		{"calibrate", "measure radii and output scales on calibration data (with Calib)", calibrate},
		{"functions", "add one model-local function per distinct configuration", addFunctions},
		{"metadata", "record the configurations in metadata_props", writeMetadata},
	}
	if opts.Inline {
		ps = append(ps, Pass{"inline", "replace function calls by their bodies", inlinePass})
	}
	return ps
}

// Run rewrites m in place as opts says and returns what it did. When check
// is not nil it is called after every pass, and an error it returns stops
// the rewrite, naming the pass. On error the model may be partly changed:
// callers that must keep it intact rewrite a fresh copy.
func Run(m *onnximport.Model, opts Options, check func(pass string, m *onnximport.Model) error) (*Report, error) {
	if (opts.RhoAuto || opts.AlphaAuto) && opts.Calib == nil {
		return nil, errors.New("calibration (rho or alpha auto) needs calibration data")
	}
	if opts.RhoAuto {
		if !opts.Config.NeedsRho() {
			return nil, fmt.Errorf("magnitude %s has no radius to calibrate", opts.Config.Magnitude)
		}
		opts.Config.LearnRho = false
		opts.Config.Rho = 1 // replaced by the measured mean patch norm
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	shapes, _ := m.InferShapes() // what cannot be inferred stays unknown
	st := &State{Model: m, Options: opts, Shapes: shapes, Report: &Report{}}
	for _, p := range Passes(opts) {
		if err := p.Run(st); err != nil {
			return nil, err
		}
		if check != nil {
			if err := check(p.Name, m); err != nil {
				return nil, fmt.Errorf("after pass %s: %w", p.Name, err)
			}
		}
	}
	return st.Report, nil
}
