package onnximport

import (
	"fmt"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// Window is the sliding-window geometry shared by Conv, MaxPool and
// AveragePool, with every attribute resolved to its default.
type Window struct {
	Kernel    []int64
	Strides   []int64
	Dilations []int64
	// Pads holds the begin pads of each spatial axis, then the end pads,
	// as the ONNX attribute does. With AutoPad SAME_* they are computed by
	// Resolve.
	Pads     []int64
	AutoPad  string // NOTSET, SAME_UPPER, SAME_LOWER or VALID
	CeilMode bool
}

// ParseWindow reads the window attributes of a Conv or pooling node;
// kernel is the kernel size from the weight when the node has no
// kernel_shape attribute (Conv).
func ParseWindow(n *onnxpb.NodeProto, kernel []int64) (Window, error) {
	w := Window{
		Kernel:    AttrInts(n, "kernel_shape"),
		Strides:   AttrInts(n, "strides"),
		Dilations: AttrInts(n, "dilations"),
		Pads:      AttrInts(n, "pads"),
		AutoPad:   AttrString(n, "auto_pad", "NOTSET"),
		CeilMode:  AttrInt(n, "ceil_mode", 0) != 0,
	}
	if w.Kernel == nil {
		w.Kernel = kernel
	}
	return w.Resolve()
}

// Resolve returns the window with every attribute the ONNX default where
// it is missing (strides and dilations 1, pads 0, auto_pad NOTSET), and
// checks it: one value per spatial axis (two for pads), positive kernel,
// strides and dilations, no negative pad, a known auto_pad.
func (w Window) Resolve() (Window, error) {
	k := len(w.Kernel)
	if k == 0 {
		return w, fmt.Errorf("kernel shape is unknown")
	}
	fill := func(name string, v []int64, size int, def int64) ([]int64, error) {
		if v == nil {
			v = make([]int64, size)
			for i := range v {
				v[i] = def
			}
			return v, nil
		}
		if len(v) != size {
			return nil, fmt.Errorf("%s has %d values, want %d", name, len(v), size)
		}
		return v, nil
	}
	var err error
	if w.Strides, err = fill("strides", w.Strides, k, 1); err != nil {
		return w, err
	}
	if w.Dilations, err = fill("dilations", w.Dilations, k, 1); err != nil {
		return w, err
	}
	if w.Pads, err = fill("pads", w.Pads, 2*k, 0); err != nil {
		return w, err
	}
	if w.AutoPad == "" {
		w.AutoPad = "NOTSET"
	}
	for i := 0; i < k; i++ {
		if w.Kernel[i] < 1 || w.Strides[i] < 1 || w.Dilations[i] < 1 {
			return w, fmt.Errorf("kernel %v, strides %v and dilations %v must be positive", w.Kernel, w.Strides, w.Dilations)
		}
		if w.Pads[i] < 0 || w.Pads[i+k] < 0 {
			return w, fmt.Errorf("pads %v must not be negative", w.Pads)
		}
	}
	switch w.AutoPad {
	case "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID":
	default:
		return w, fmt.Errorf("auto_pad %q is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID", w.AutoPad)
	}
	return w, nil
}

// Output returns the spatial output sizes for spatial input sizes in,
// and the explicit pads that produce them.
func (w Window) Output(in []Dim) ([]Dim, []int64, error) {
	k := len(w.Kernel)
	if len(in) != k {
		return nil, nil, fmt.Errorf("input has %d spatial dimensions, kernel %v has %d", len(in), w.Kernel, k)
	}
	out := make([]Dim, k)
	pads := append([]int64(nil), w.Pads...)
	for i := 0; i < k; i++ {
		if !in[i].Known() {
			out[i] = Unknown
			continue
		}
		x, s := in[i].Size, w.Strides[i]
		ext := (w.Kernel[i]-1)*w.Dilations[i] + 1
		var o int64
		switch w.AutoPad {
		case "SAME_UPPER", "SAME_LOWER":
			o = (x + s - 1) / s
			total := max((o-1)*s+ext-x, 0)
			small, big := total/2, total-total/2
			if w.AutoPad == "SAME_UPPER" {
				pads[i], pads[i+k] = small, big
			} else {
				pads[i], pads[i+k] = big, small
			}
		case "VALID":
			pads[i], pads[i+k] = 0, 0
			if x < ext {
				return nil, nil, fmt.Errorf("input size %d is smaller than the kernel extent %d", x, ext)
			}
			o = (x-ext)/s + 1
		default:
			span := x + pads[i] + pads[i+k] - ext
			if span < 0 {
				return nil, nil, fmt.Errorf("input size %d with pads %d+%d is smaller than the kernel extent %d", x, pads[i], pads[i+k], ext)
			}
			o = span/s + 1
			if w.CeilMode && span%s != 0 {
				o++
				// The last window must start inside the input or its
				// begin padding.
				if (o-1)*s >= x+pads[i] {
					o--
				}
			}
		}
		out[i] = Dim{Size: o}
	}
	return out, pads, nil
}
