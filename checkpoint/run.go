package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/dcconvert/dcconvert/data"
)

// RunVersion is the version of the run.json format this package writes.
const RunVersion = 1

// Metadata keys of the checkpoints of a run directory, next to those of
// the trainer's snapshot (dcconvert.step, dcconvert.optimizer).
const (
	// MetaEpoch is the number of epochs done, fractional.
	MetaEpoch = "dcconvert.epoch"
	// MetaValTop1 is the validation top-1 accuracy in percent that the
	// checkpoint was saved with, when it was validated.
	MetaValTop1 = "dcconvert.val_top1"
	// MetaRun is the fingerprint of the run (Run.Fingerprint) the
	// checkpoint belongs to.
	MetaRun = "dcconvert.run"
)

// Run is the content of run.json: what a run directory's checkpoints
// belong to and what resuming and exporting need to know.
type Run struct {
	Version int `json:"version"`
	// Source is the model file fine-tuning started from and SourceSHA256
	// the SHA-256 of its bytes.
	Source       string `json:"source"`
	SourceSHA256 string `json:"source_sha256"`
	// Data is the data directory (or "synthetic"), DataFormat its format
	// and DataFingerprint a digest of what the training saw (sizes,
	// classes, validation split), so that resuming on other data is
	// refused.
	Data            string `json:"data"`
	DataFormat      string `json:"data_format"`
	DataFingerprint string `json:"data_fingerprint"`
	// Preprocess is how images become the model's input, with the class
	// names.
	Preprocess data.Preprocessing `json:"preprocess"`
	// Config is the fine-tuning configuration (finetune.Config as JSON).
	Config json.RawMessage `json:"config"`
	// Trained and Frozen name the parameters that train and those that
	// do not.
	Trained []string `json:"trained"`
	Frozen  []string `json:"frozen,omitempty"`
}

// ReadRun reads a run.json file.
func ReadRun(path string) (Run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Run{}, fmt.Errorf("reading %s: %w", path, err)
	}
	var r Run
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&r); err != nil {
		return Run{}, fmt.Errorf("reading %s: %w", path, err)
	}
	if r.Version != RunVersion {
		return Run{}, fmt.Errorf("reading %s: version %d, this dcconvert reads version %d", path, r.Version, RunVersion)
	}
	return r, nil
}

// WriteRun writes a run.json file atomically.
func WriteRun(path string, r Run) error {
	r.Version = RunVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return writeAtomic(path, append(b, '\n'))
}
