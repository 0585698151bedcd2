package checkpoint

import (
	"encoding/json"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// ptr returns a pointer to v.
func ptr(v float64) *float64 { return &v }

// sampleRecords returns a short log: records with and without validation.
func sampleRecords() []Record {
	return []Record{
		{Step: 10, Epoch: 0.25, Loss: 2.31, LR: 0.01, TrainAcc: 0.125, ImagesPerSec: 812.5, WallSeconds: 1.5},
		{Step: 20, Epoch: 0.5, Loss: 1.75, LR: 0.01, TrainAcc: 0.375, ImagesPerSec: 830, WallSeconds: 3},
		{Step: 40, Epoch: 1, Loss: 1.2, LR: 0.005, TrainAcc: 0.5, ValAcc: ptr(0.4375), ValLoss: ptr(1.5),
			ImagesPerSec: 1e6, WallSeconds: 6.25},
		{Step: 60, Epoch: 1.5, Loss: 0.9, LR: 1e-7, TrainAcc: 0.625, ValAcc: ptr(0), ImagesPerSec: 829.125, WallSeconds: 9},
	}
}

func TestMetricsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), MetricsFile)
	recs := sampleRecords()
	if err := WriteMetrics(path, recs); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetrics(path)
	if err != nil {
		t.Fatal(err)
	}
	// Values are written in the shortest form that reads back exactly.
	if diff := cmp.Diff(recs, got, exactFloats); diff != "" {
		t.Errorf("records read back (-want +got):\n%s", diff)
	}

	// A rewrite replaces the whole log.
	if err := WriteMetrics(path, recs[:1]); err != nil {
		t.Fatal(err)
	}
	got, err = ReadMetrics(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Errorf("after rewriting one record, the log holds %d", len(got))
	}

	// An empty log is an empty file and no records.
	if err := WriteMetrics(path, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadMetrics(path); err != nil || len(got) != 0 {
		t.Errorf("reading an empty log gave %v, %v", got, err)
	}
}

// TestEncodeMetricsForm checks the exact form of the log.
func TestEncodeMetricsForm(t *testing.T) {
	recs := sampleRecords()[1:3]
	want := `{"step":20,"epoch":0.5,"loss":1.75,"lr":0.01,"train_acc":0.375,"images_per_sec":830,"wall_s":3}` + "\n" +
		`{"step":40,"epoch":1,"loss":1.2,"lr":0.005,"train_acc":0.5,"val_acc":0.4375,"val_loss":1.5,"images_per_sec":1e+06,"wall_s":6.25}` + "\n"
	if got := string(EncodeMetrics(recs)); got != want {
		t.Errorf("EncodeMetrics gave\n%s\nwant\n%s", got, want)
	}
	// encoding/json gives the same line through Record.MarshalJSON.
	b, err := json.Marshal(recs[1])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b)+"\n", strings.SplitAfter(want, "\n")[1]; got != want {
		t.Errorf("json.Marshal gave %s, want %s", got, want)
	}
	if got := EncodeMetrics(nil); len(got) != 0 {
		t.Errorf("EncodeMetrics(nil) = %q, want nothing", got)
	}
}

func TestMetricsNonFinite(t *testing.T) {
	recs := []Record{{Step: 1, Epoch: math.Inf(1), Loss: math.NaN(), LR: math.Inf(-1), TrainAcc: 0.5,
		ValAcc: ptr(math.NaN()), ImagesPerSec: math.NaN(), WallSeconds: 2}}
	b := EncodeMetrics(recs)
	want := `{"step":1,"epoch":null,"loss":null,"lr":null,"train_acc":0.5,"val_acc":null,"images_per_sec":null,"wall_s":2}` + "\n"
	if string(b) != want {
		t.Errorf("EncodeMetrics gave\n%s\nwant\n%s", b, want)
	}
	if !json.Valid(b[:len(b)-1]) {
		t.Errorf("the line is not valid JSON: %s", b)
	}
	got, err := decodeMetrics(b)
	if err != nil {
		t.Fatal(err)
	}
	r := got[0]
	for name, v := range map[string]float64{"epoch": r.Epoch, "loss": r.Loss, "lr": r.LR, "images_per_sec": r.ImagesPerSec} {
		if !math.IsNaN(v) {
			t.Errorf("%s read back as %v, want NaN", name, v)
		}
	}
	if r.ValAcc == nil || !math.IsNaN(*r.ValAcc) {
		t.Errorf("val_acc read back as %v, want a pointer to NaN", r.ValAcc)
	}
	if r.ValLoss != nil {
		t.Errorf("val_loss read back as %v, want nil (the key is absent)", *r.ValLoss)
	}
	if r.Step != 1 || r.TrainAcc != 0.5 || r.WallSeconds != 2 {
		t.Errorf("finite fields read back as %+v", r)
	}
}

func TestReadMetricsErrors(t *testing.T) {
	good := `{"step":1,"epoch":0.1,"loss":2,"lr":0.1,"train_acc":0.1,"images_per_sec":1,"wall_s":1}`
	tests := []struct {
		name, content, want string
	}{
		{"not JSON", good + "\nloss=2\n", "line 2: not a JSON object"},
		{"after a blank line", good + "\n\n" + `{"step":2,"loss":"high"}` + "\n", "line 3: "},
		{"fractional step", `{"step":1.5}`, "line 1: "},
		{"truncated", good + "\n" + `{"step":2,"loss":`, "line 2: unexpected end of JSON input"},
		{"null line", "null\n", "line 1: not a JSON object"},
		{"two objects on a line", good + good, "line 1: invalid character '{' after top-level value"},
	}
	dir := t.TempDir()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+".jsonl")
			if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadMetrics(path)
			if want := "reading " + path + ": " + tt.want; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %v, want one starting with %q", err, want)
			}
		})
	}

	missing := filepath.Join(dir, "missing.jsonl")
	_, err := ReadMetrics(missing)
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "reading "+missing+": ") {
		t.Errorf("reading a missing log: error %v, want one wrapping fs.ErrNotExist that names the file", err)
	}
	if err := WriteMetrics(filepath.Join(dir, "no", MetricsFile), sampleRecords()); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

// TestReadMetricsLenient reads what other versions may write: unknown
// keys, absent keys, CRLF line ends, no final newline.
func TestReadMetricsLenient(t *testing.T) {
	path := filepath.Join(t.TempDir(), MetricsFile)
	content := `{"step":5,"loss":1.5,"grad_norm":3}` + "\r\n" + `{"step":6,"val_loss":2}`
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMetrics(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{{Step: 5, Loss: 1.5}, {Step: 6, ValLoss: ptr(2)}}
	if diff := cmp.Diff(want, got, exactFloats); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}
