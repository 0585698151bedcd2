package data

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/dcconvert/dcconvert/internal/onnxpb"
)

// modelWithMeta returns a model whose metadata holds the given key/value
// pairs, in order.
func modelWithMeta(kv ...string) *onnxpb.ModelProto {
	m := &onnxpb.ModelProto{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.MetadataProps = append(m.MetadataProps, &onnxpb.StringStringEntryProto{Key: proto.String(kv[i]), Value: proto.String(kv[i+1])})
	}
	return m
}

func TestPreprocessingRoundTrip(t *testing.T) {
	for _, p := range []Preprocessing{
		{Input: []int{1, 28, 28}, Mean: []float32{0.286}, Std: []float32{0.353}, Classes: []string{"a", "b"}},
		{Input: []int{3, 32, 32}, Mean: []float32{0.4914, 0.4822, 0.4465}, Std: []float32{0.247, 0.243, 0.261}},
		{Mean: []float32{0.5}},
		{},
	} {
		m := modelWithMeta("other", "x", MetaPreprocess, `{"input":[9,9,9]}`)
		if err := WritePreprocessing(m, p); err != nil {
			t.Fatalf("WritePreprocessing(%+v): %v", p, err)
		}
		n := 0
		for _, e := range m.GetMetadataProps() {
			if e.GetKey() == MetaPreprocess {
				n++
			}
		}
		if n != 1 || m.GetMetadataProps()[0].GetKey() != "other" {
			t.Fatalf("metadata after writing: %v; want the other entry kept and one %s", m.GetMetadataProps(), MetaPreprocess)
		}
		got, ok, err := ReadPreprocessing(m)
		if err != nil || !ok {
			t.Fatalf("ReadPreprocessing = %v, %v", ok, err)
		}
		if diff := cmp.Diff(p, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestReadPreprocessing(t *testing.T) {
	for _, tc := range []struct {
		name    string
		model   *onnxpb.ModelProto
		want    Preprocessing
		found   bool
		wantErr string
	}{
		{name: "absent", model: modelWithMeta("other", "{}")},
		{name: "no metadata", model: &onnxpb.ModelProto{}},
		{
			name:  "full",
			model: modelWithMeta(MetaPreprocess, `{"input":[1,28,28],"mean":[0.5],"std":[0.25],"classes":["x","y"]}`),
			want:  Preprocessing{Input: []int{1, 28, 28}, Mean: []float32{0.5}, Std: []float32{0.25}, Classes: []string{"x", "y"}},
			found: true,
		},
		{name: "empty object", model: modelWithMeta(MetaPreprocess, `{}`), found: true},
		{name: "per-channel without input", model: modelWithMeta(MetaPreprocess, `{"mean":[1,2,3]}`),
			want: Preprocessing{Mean: []float32{1, 2, 3}}, found: true},
		{name: "not JSON", model: modelWithMeta(MetaPreprocess, `mean=0.5`), found: true, wantErr: "metadata dcconvert.preprocess: invalid character"},
		{name: "trailing data", model: modelWithMeta(MetaPreprocess, `{} {}`), found: true, wantErr: "data after the JSON object"},
		{name: "unknown field", model: modelWithMeta(MetaPreprocess, `{"means":[0.5]}`), found: true, wantErr: `unknown field "means"`},
		{name: "twice", model: modelWithMeta(MetaPreprocess, `{}`, MetaPreprocess, `{}`), found: true, wantErr: "more than once"},
		{name: "short input", model: modelWithMeta(MetaPreprocess, `{"input":[28,28]}`), found: true, wantErr: "want three sizes"},
		{name: "zero size", model: modelWithMeta(MetaPreprocess, `{"input":[1,0,28]}`), found: true, wantErr: "sizes must be positive"},
		{name: "mean count", model: modelWithMeta(MetaPreprocess, `{"input":[1,28,28],"mean":[1,2,3]}`), found: true, wantErr: "mean: 3 values for 1 channels"},
		{name: "std count", model: modelWithMeta(MetaPreprocess, `{"std":[1,2]}`), found: true, wantErr: "std: 2 values"},
		{name: "zero std", model: modelWithMeta(MetaPreprocess, `{"std":[0]}`), found: true, wantErr: "std value 0 is 0"},
		{name: "empty class", model: modelWithMeta(MetaPreprocess, `{"classes":["a",""]}`), found: true, wantErr: "class 1 has an empty name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, found, err := ReadPreprocessing(tc.model)
			if found != tc.found {
				t.Errorf("found = %v, want %v", found, tc.found)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestWritePreprocessingChecks(t *testing.T) {
	m := modelWithMeta("other", "x")
	err := WritePreprocessing(m, Preprocessing{Input: []int{3, 32, 32}, Std: []float32{1, 0}})
	if err == nil || !strings.Contains(err.Error(), "std: 2 values for 3 channels") || !strings.Contains(err.Error(), "std value 1 is 0") {
		t.Fatalf("error = %v, want both problems reported", err)
	}
	if len(m.GetMetadataProps()) != 1 {
		t.Errorf("metadata changed by a failed write: %v", m.GetMetadataProps())
	}
}
