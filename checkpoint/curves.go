package checkpoint

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The size of the curves image in pixels.
const (
	curvesWidth  = 1000
	curvesHeight = 800
)

// PlotCurves draws the training curves of recs and writes them to path as
// a PNG image, atomically (see RenderCurves for what the image shows).
func PlotCurves(path string, recs []Record) error {
	b, err := RenderCurves(recs)
	if err != nil {
		return fmt.Errorf("plotting %s: %w", path, err)
	}
	return writeAtomic(path, b)
}

// RenderCurves returns a 1000x800 PNG image of two panels sharing the step
// axis: above, the training loss and, where records have it, the
// validation loss; below, the training and validation top-1 accuracy.
// Non-finite values are left out. A panel without data says "no data yet"
// in its title, so an empty log gives an image, not an error.
func RenderCurves(recs []Record) ([]byte, error) {
	var trainLoss, valLoss, trainAcc, valAcc plotter.XYs
	add := func(xys *plotter.XYs, step int64, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			*xys = append(*xys, plotter.XY{X: float64(step), Y: v})
		}
	}
	for _, r := range recs {
		add(&trainLoss, r.Step, r.Loss)
		add(&trainAcc, r.Step, r.TrainAcc)
		if r.ValLoss != nil {
			add(&valLoss, r.Step, *r.ValLoss)
		}
		if r.ValAcc != nil {
			add(&valAcc, r.Step, *r.ValAcc)
		}
	}

	loss, err := panel("Loss", "loss", trainLoss, valLoss)
	if err != nil {
		return nil, err
	}
	loss.Legend.Top = true
	acc, err := panel("Top-1 accuracy", "accuracy", trainAcc, valAcc)
	if err != nil {
		return nil, err
	}
	acc.Y.Min = math.Min(acc.Y.Min, 0)
	acc.Y.Max = math.Max(acc.Y.Max, 1)
	// Both panels span the same steps, so that one step is at the same
	// place in both.
	xmin, xmax := math.Min(loss.X.Min, acc.X.Min), math.Max(loss.X.Max, acc.X.Max)
	loss.X.Min, loss.X.Max, acc.X.Min, acc.X.Max = xmin, xmax, xmin, xmax

	img := image.NewRGBA(image.Rect(0, 0, curvesWidth, curvesHeight))
	c := vgimg.NewWith(vgimg.UseImage(img), vgimg.UseDPI(vgimg.DefaultDPI))
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadX: 10, PadY: 10, PadTop: 10, PadBottom: 10, PadLeft: 10, PadRight: 10}
	plots := [][]*plot.Plot{{loss}, {acc}}
	canvases := plot.Align(plots, tiles, draw.New(c))
	for i, row := range plots {
		row[0].Draw(canvases[i][0])
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: c}).WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("encoding the curves as PNG: %w", err)
	}
	return buf.Bytes(), nil
}

// panel returns a plot of the training and validation series against step,
// with a legend; without any points its axes span 0 to 1 and its title
// says there is no data yet.
func panel(title, ylabel string, train, val plotter.XYs) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "step"
	p.Y.Label.Text = ylabel
	p.BackgroundColor = color.White
	p.Add(plotter.NewGrid())
	// Validation runs now and then, so its points are marked; a training
	// series of one point is marked too, as a line through it has no length.
	if err := addSeries(p, "training", train, plotutil.Color(0), onePoint(train)); err != nil {
		return nil, fmt.Errorf("plotting training %s: %w", ylabel, err)
	}
	if err := addSeries(p, "validation", val, plotutil.Color(1), true); err != nil {
		return nil, fmt.Errorf("plotting validation %s: %w", ylabel, err)
	}
	if len(train) == 0 && len(val) == 0 {
		p.Title.Text = title + ": no data yet"
		p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
	}
	return p, nil
}

// addSeries adds a line through xys, if it has points, and its legend
// entry to p; marked adds a dot at each point.
func addSeries(p *plot.Plot, name string, xys plotter.XYs, c color.Color, marked bool) error {
	if len(xys) == 0 {
		return nil
	}
	l, pts, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	l.Color, l.Width = c, 2
	if !marked {
		p.Add(l)
		p.Legend.Add(name, l)
		return nil
	}
	pts.Color, pts.Shape = c, draw.CircleGlyph{}
	p.Add(l, pts)
	p.Legend.Add(name, l, pts)
	return nil
}

// onePoint reports whether all of xys are the same point.
func onePoint(xys plotter.XYs) bool {
	for _, xy := range xys {
		if xy != xys[0] {
			return false
		}
	}
	return true
}
