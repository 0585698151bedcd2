package engine

import (
	"fmt"
	"math"

	"github.com/dcconvert/dcconvert/onnximport"
)

// Scores says what the values of a classifier's output are, and so how
// Metrics turns them into a cross-entropy. The top-k accuracies do not
// depend on it: every kind ranks the classes the same way.
type Scores int

// The kinds of classifier output.
const (
	// Logits are unnormalised log-probabilities: the cross-entropy of a
	// sample is -log softmax(logits)[label].
	Logits Scores = iota
	// Probabilities are the output of a Softmax: the cross-entropy is
	// -log p[label], with p clamped below at the smallest positive
	// float32 (about 1.4e-45) so that a probability that underflowed to 0
	// costs about 103.3 instead of infinity.
	Probabilities
	// LogProbabilities are the output of a LogSoftmax: the cross-entropy
	// is -logp[label].
	LogProbabilities
)

// String returns "logits", "probabilities" or "log-probabilities".
func (s Scores) String() string {
	switch s {
	case Logits:
		return "logits"
	case Probabilities:
		return "probabilities"
	case LogProbabilities:
		return "log-probabilities"
	}
	return fmt.Sprintf("Scores(%d)", int(s))
}

// ScoresOf returns what the first graph output of m holds: Probabilities
// when it is made by a Softmax over the classes (axis 1 or -1, the
// default being 1 before opset 13 and -1 from it), LogProbabilities for
// such a LogSoftmax, and Logits otherwise. Identity nodes between the
// node and the output are looked through.
func ScoresOf(m *onnximport.Model) Scores {
	g := m.Graph()
	if len(g.GetOutput()) == 0 {
		return Logits
	}
	producer := map[string]int{}
	for i, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			producer[o] = i
		}
	}
	name := g.GetOutput()[0].GetName()
	for range len(g.GetNode()) { // bounded: a well-formed graph has no cycle
		i, ok := producer[name]
		if !ok {
			return Logits
		}
		n := g.GetNode()[i]
		if !onnximport.IsDefaultDomain(n.GetDomain()) {
			return Logits
		}
		switch n.GetOpType() {
		case onnximport.OpIdentity:
			if len(n.GetInput()) == 0 {
				return Logits
			}
			name = n.GetInput()[0]
			continue
		case onnximport.OpSoftmax, onnximport.OpLogSoftmax:
			def := int64(-1)
			if m.Opset("") < 13 {
				def = 1
			}
			if axis := onnximport.AttrInt(n, "axis", def); axis != 1 && axis != -1 {
				return Logits
			}
			if n.GetOpType() == onnximport.OpSoftmax {
				return Probabilities
			}
			return LogProbabilities
		}
		return Logits
	}
	return Logits
}

// Metrics accumulates the classification metrics of an evaluation over
// batches: how many samples have their label ranked first and among the
// first five, and the sum of their cross-entropies. The zero value is
// empty and ready to use.
//
// Classes are ranked by score, a tie going to the class with the lower
// index (as an argmax that returns the first maximum does): a sample
// counts towards the top-k accuracy when fewer than k classes rank above
// its label. With fewer than k classes every sample counts.
type Metrics struct {
	// Samples is the number of samples added.
	Samples int
	// Top1 and Top5 count the samples whose label ranks first, and among
	// the first five.
	Top1, Top5 int
	// CrossEntropy is the sum of the samples' cross-entropies, in nats.
	CrossEntropy float64
}

// Add adds a batch to m: scores holds len(labels) rows of classes values
// (the first graph output of a classifier, row-major), of the given kind,
// and labels the class of each row. Rows beyond the labels are not
// allowed; a caller that pads a batch passes only the real rows. A label
// outside [0, classes) or a score that is NaN or infinite (for
// Probabilities, one outside [0, 1]) is an error naming the row, and
// leaves m as it was.
func (m *Metrics) Add(scores []float32, classes int, labels []int, kind Scores) error {
	if classes < 1 {
		return fmt.Errorf("metrics: %d classes; want at least 1", classes)
	}
	if len(scores) != len(labels)*classes {
		return fmt.Errorf("metrics: %d scores for %d samples of %d classes, want %d", len(scores), len(labels), classes, len(labels)*classes)
	}
	if kind != Logits && kind != Probabilities && kind != LogProbabilities {
		return fmt.Errorf("metrics: unknown kind of scores %v", kind)
	}
	var top1, top5 int
	var ce float64
	for i, label := range labels {
		if label < 0 || label >= classes {
			return fmt.Errorf("metrics: sample %d: label %d is outside the %d classes", i, label, classes)
		}
		row := scores[i*classes : (i+1)*classes]
		for j, s := range row {
			if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
				return fmt.Errorf("metrics: sample %d: score %d is %g", i, j, s)
			}
			if kind == Probabilities && (s < 0 || s > 1) {
				return fmt.Errorf("metrics: sample %d: probability %d is %g, outside [0, 1]", i, j, s)
			}
		}
		switch rank := Rank(row, label); {
		case rank == 0:
			top1++
			top5++
		case rank < 5:
			top5++
		}
		ce += CrossEntropy(row, label, kind)
	}
	m.Samples += len(labels)
	m.Top1 += top1
	m.Top5 += top5
	m.CrossEntropy += ce
	return nil
}

// Merge adds the counts of o to m.
func (m *Metrics) Merge(o Metrics) {
	m.Samples += o.Samples
	m.Top1 += o.Top1
	m.Top5 += o.Top5
	m.CrossEntropy += o.CrossEntropy
}

// Top1Accuracy returns the percentage of samples whose label ranks first,
// 0 when there are none.
func (m Metrics) Top1Accuracy() float64 { return percent(m.Top1, m.Samples) }

// Top5Accuracy returns the percentage of samples whose label ranks among
// the first five, 0 when there are none.
func (m Metrics) Top5Accuracy() float64 { return percent(m.Top5, m.Samples) }

// MeanCrossEntropy returns the mean cross-entropy of the samples, in nats,
// 0 when there are none.
func (m Metrics) MeanCrossEntropy() float64 {
	if m.Samples == 0 {
		return 0
	}
	return m.CrossEntropy / float64(m.Samples)
}

// percent returns 100 k / n, or 0 when n is 0.
func percent(k, n int) float64 {
	if n == 0 {
		return 0
	}
	return 100 * float64(k) / float64(n)
}

// Rank returns how many classes rank above label in one row of scores:
// those with a higher score, and those with the same score and a lower
// index. 0 means the label is the top prediction.
func Rank(row []float32, label int) int {
	s := row[label]
	rank := 0
	for j, v := range row {
		if v > s || (v == s && j < label) {
			rank++
		}
	}
	return rank
}

// smallestProbability is the floor of a probability whose logarithm is
// taken: the smallest positive float32.
const smallestProbability = math.SmallestNonzeroFloat32

// CrossEntropy returns the cross-entropy, in nats, of one row of scores of
// the given kind against label, computed in float64: -log softmax(row)
// [label] for Logits (with the maximum subtracted first, so that large
// logits do not overflow), -log row[label] for Probabilities (clamped, see
// Probabilities), -row[label] for LogProbabilities.
func CrossEntropy(row []float32, label int, kind Scores) float64 {
	switch kind {
	case Probabilities:
		return -math.Log(max(float64(row[label]), smallestProbability))
	case LogProbabilities:
		return -float64(row[label])
	}
	hi := math.Inf(-1)
	for _, v := range row {
		hi = max(hi, float64(v))
	}
	var sum float64
	for _, v := range row {
		sum += math.Exp(float64(v) - hi)
	}
	return hi + math.Log(sum) - float64(row[label])
}
