package engine_test

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/engine"
	"github.com/dcconvert/dcconvert/internal/onnxpb"
	"github.com/dcconvert/dcconvert/onnximport"
)

// metricsTol is the absolute tolerance of the metric comparisons: the
// metrics are computed in float64 from float32 scores.
const metricsTol = 1e-9

func TestMetricsAdd(t *testing.T) {
	ln := math.Log
	for _, tc := range []struct {
		name       string
		scores     []float32
		classes    int
		labels     []int
		kind       engine.Scores
		top1, top5 int
		ce         float64 // summed
	}{
		{
			name:   "logits",
			scores: []float32{1, 2, 3, 3, 2, 1}, classes: 3, labels: []int{2, 1},
			top1: 1, top5: 2,
			ce: 2*ln(math.E+math.E*math.E+math.E*math.E*math.E) - 3 - 2,
		},
		{
			name:   "large logits do not overflow",
			scores: []float32{1000, 0}, classes: 2, labels: []int{1},
			top1: 0, top5: 1, ce: 1000 + math.Log1p(math.Exp(-1000)),
		},
		{
			name: "top five of seven",
			// label 0 ranks 5th (index 4 in the order 6,5,4,3,0,...) in the
			// first row and 6th in the second.
			scores:  []float32{3, 1, 2, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 0},
			classes: 7, labels: []int{0, 6},
			top1: 0, top5: 1,
			ce: logSumExp(3, 1, 2, 4, 5, 6, 7) - 3 + logSumExp(1, 2, 3, 4, 5, 6, 0),
		},
		{
			name: "ties go to the lower index",
			// the same score for every class: label 0 ranks first, label 5 sixth.
			scores:  []float32{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			classes: 6, labels: []int{0, 5},
			top1: 1, top5: 1, ce: 2 * ln(6),
		},
		{
			name:   "fewer than five classes",
			scores: []float32{5, 0, 5, 0}, classes: 2, labels: []int{1, 1},
			top1: 0, top5: 2, ce: 2 * (5 + math.Log1p(math.Exp(-5))),
		},
		{
			name:   "probabilities",
			scores: []float32{0.25, 0.75, 1, 0}, classes: 2, labels: []int{1, 1},
			kind: engine.Probabilities, top1: 1, top5: 2,
			ce: -ln(float64(float32(0.75))) - ln(math.SmallestNonzeroFloat32),
		},
		{
			name:   "log-probabilities",
			scores: []float32{-0.5, -1.5}, classes: 2, labels: []int{1},
			kind: engine.LogProbabilities, top1: 0, top5: 1, ce: 1.5,
		},
		{name: "empty batch", classes: 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m engine.Metrics
			if err := m.Add(tc.scores, tc.classes, tc.labels, tc.kind); err != nil {
				t.Fatal(err)
			}
			if m.Samples != len(tc.labels) || m.Top1 != tc.top1 || m.Top5 != tc.top5 {
				t.Errorf("samples, top-1, top-5 = %d, %d, %d; want %d, %d, %d", m.Samples, m.Top1, m.Top5, len(tc.labels), tc.top1, tc.top5)
			}
			if math.Abs(m.CrossEntropy-tc.ce) > metricsTol*max(1, math.Abs(tc.ce)) {
				t.Errorf("cross-entropy = %.12g, want %.12g", m.CrossEntropy, tc.ce)
			}
		})
	}
}

// logSumExp returns log(sum(exp(v))) for small values.
func logSumExp(v ...float64) float64 {
	var s float64
	for _, x := range v {
		s += math.Exp(x)
	}
	return math.Log(s)
}

func TestMetricsKindsAgree(t *testing.T) {
	// The same predictions given as logits, probabilities and
	// log-probabilities give the same metrics.
	logits := []float32{0.3, -1.2, 2.5, 0.1, 4, -3, 1, 1, 1, 0.5, 0.25, -0.75}
	labels := []int{0, 1, 2, 0}
	const k = 3
	probs := make([]float32, len(logits))
	logp := make([]float32, len(logits))
	for i := range labels {
		row := logits[i*k : (i+1)*k]
		lse := logSumExp(float64(row[0]), float64(row[1]), float64(row[2]))
		for j, v := range row {
			logp[i*k+j] = float32(float64(v) - lse)
			probs[i*k+j] = float32(math.Exp(float64(v) - lse))
		}
	}
	var ml, mp, mlp engine.Metrics
	for _, c := range []struct {
		m      *engine.Metrics
		scores []float32
		kind   engine.Scores
	}{{&ml, logits, engine.Logits}, {&mp, probs, engine.Probabilities}, {&mlp, logp, engine.LogProbabilities}} {
		if err := c.m.Add(c.scores, k, labels, c.kind); err != nil {
			t.Fatalf("%v: %v", c.kind, err)
		}
	}
	const tol = 1e-6 // the float32 rounding of the probabilities
	for _, m := range []engine.Metrics{mp, mlp} {
		if m.Top1 != ml.Top1 || m.Top5 != ml.Top5 || math.Abs(m.MeanCrossEntropy()-ml.MeanCrossEntropy()) > tol {
			t.Errorf("metrics %+v, want those of the logits %+v (cross-entropy within %g)", m, ml, tol)
		}
	}
}

func TestMetricsAccumulate(t *testing.T) {
	var m engine.Metrics
	if m.Top1Accuracy() != 0 || m.Top5Accuracy() != 0 || m.MeanCrossEntropy() != 0 {
		t.Fatalf("empty metrics = %v, %v, %v; want zeros", m.Top1Accuracy(), m.Top5Accuracy(), m.MeanCrossEntropy())
	}
	batches := []struct {
		scores []float32
		labels []int
	}{
		{[]float32{2, 0, 0, 2}, []int{0, 0}},
		{[]float32{0, 2, 0, 0}, []int{1, 0}},
		{[]float32{1, 0}, []int{0}},
	}
	var merged engine.Metrics
	for _, b := range batches {
		var one engine.Metrics
		if err := one.Add(b.scores, 2, b.labels, engine.Logits); err != nil {
			t.Fatal(err)
		}
		merged.Merge(one)
		if err := m.Add(b.scores, 2, b.labels, engine.Logits); err != nil {
			t.Fatal(err)
		}
	}
	if merged != m {
		t.Errorf("merged %+v, want %+v", merged, m)
	}
	// Correct: sample 0, sample 2, sample 3 (0 vs 0: tie goes to class 0), sample 4.
	if m.Samples != 5 || m.Top1 != 4 || m.Top5 != 5 {
		t.Fatalf("metrics %+v; want 5 samples, 4 top-1, 5 top-5", m)
	}
	if got := m.Top1Accuracy(); math.Abs(got-80) > metricsTol {
		t.Errorf("top-1 accuracy %v, want 80", got)
	}
	if got := m.Top5Accuracy(); math.Abs(got-100) > metricsTol {
		t.Errorf("top-5 accuracy %v, want 100", got)
	}
	// Per sample: lse(2,0)-2, lse(0,2)-0, lse(0,2)-2, log 2, lse(1,0)-1.
	want := (logSumExp(2, 0) - 2 + logSumExp(0, 2) + logSumExp(0, 2) - 2 + math.Log(2) + logSumExp(1, 0) - 1) / 5
	if got := m.MeanCrossEntropy(); math.Abs(got-want) > metricsTol {
		t.Errorf("mean cross-entropy %v, want %v", got, want)
	}
}

func TestMetricsAddErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		scores  []float32
		classes int
		labels  []int
		kind    engine.Scores
		wantErr string
	}{
		{"no classes", nil, 0, nil, engine.Logits, "0 classes"},
		{"short scores", []float32{1, 2, 3}, 2, []int{0, 1}, engine.Logits, "3 scores for 2 samples of 2 classes, want 4"},
		{"label too big", []float32{1, 2, 3, 4}, 2, []int{0, 2}, engine.Logits, "sample 1: label 2 is outside the 2 classes"},
		{"negative label", []float32{1, 2}, 2, []int{-1}, engine.Logits, "label -1"},
		{"NaN", []float32{1, 2, float32(math.NaN()), 4}, 2, []int{0, 0}, engine.Logits, "sample 1: score 0 is NaN"},
		{"infinity", []float32{float32(math.Inf(1)), 0}, 2, []int{0}, engine.Logits, "score 0 is +Inf"},
		{"probability above 1", []float32{1.5, 0}, 2, []int{0}, engine.Probabilities, "probability 0 is 1.5"},
		{"unknown kind", []float32{1, 0}, 2, []int{0}, engine.Scores(7), "unknown kind of scores Scores(7)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := engine.Metrics{Samples: 1, Top1: 1, Top5: 1, CrossEntropy: 0.5}
			before := m
			err := m.Add(tc.scores, tc.classes, tc.labels, tc.kind)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
			if m != before {
				t.Errorf("metrics changed by a failed Add: %+v, want %+v", m, before)
			}
		})
	}
}

// classifier returns a model computing x -> [nodes] -> the graph output
// "y" at the given default-domain opset; the last node must write "y".
func classifier(opset int64, nodes ...*onnxpb.NodeProto) *onnximport.Model {
	return &onnximport.Model{Proto: &onnxpb.ModelProto{
		IrVersion:   proto.Int64(7),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opset)}},
		Graph: &onnxpb.GraphProto{
			Name:   proto.String("classifier"),
			Node:   nodes,
			Input:  []*onnxpb.ValueInfoProto{valueInfo("x", 2, 3)},
			Output: []*onnxpb.ValueInfoProto{valueInfo("y", 2, 3)},
		},
	}}
}

// renamed returns n with its output renamed.
func renamed(n *onnxpb.NodeProto, out string) *onnxpb.NodeProto {
	n.Output = []string{out}
	return n
}

func TestScoresOf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		model *onnximport.Model
		want  engine.Scores
	}{
		{"relu", classifier(13, nodeOf("Relu", "y", []string{"x"})), engine.Logits},
		{"softmax opset 13", classifier(13, nodeOf("Softmax", "y", []string{"x"})), engine.Probabilities},
		{"softmax opset 11", classifier(11, nodeOf("Softmax", "y", []string{"x"})), engine.Probabilities},
		{"softmax axis 1", classifier(13, nodeOf("Softmax", "y", []string{"x"}, intAttr("axis", 1))), engine.Probabilities},
		{"softmax axis 0", classifier(13, nodeOf("Softmax", "y", []string{"x"}, intAttr("axis", 0))), engine.Logits},
		{"log-softmax", classifier(13, nodeOf("LogSoftmax", "y", []string{"x"})), engine.LogProbabilities},
		{"softmax then identity", classifier(13,
			renamed(nodeOf("Softmax", "s", []string{"x"}), "s"),
			nodeOf("Identity", "y", []string{"s"})), engine.Probabilities},
		{"softmax then relu", classifier(13,
			renamed(nodeOf("Softmax", "s", []string{"x"}), "s"),
			nodeOf("Relu", "y", []string{"s"})), engine.Logits},
		{"output is the input", &onnximport.Model{Proto: &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{
			Input: []*onnxpb.ValueInfoProto{valueInfo("y", 2, 3)}, Output: []*onnxpb.ValueInfoProto{valueInfo("y", 2, 3)}}}}, engine.Logits},
		{"no output", &onnximport.Model{Proto: &onnxpb.ModelProto{Graph: &onnxpb.GraphProto{}}}, engine.Logits},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := engine.ScoresOf(tc.model); got != tc.want {
				t.Errorf("ScoresOf = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestScoresString(t *testing.T) {
	for s, want := range map[engine.Scores]string{
		engine.Logits: "logits", engine.Probabilities: "probabilities",
		engine.LogProbabilities: "log-probabilities", engine.Scores(9): "Scores(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}
