package engine

import "testing"

// TestStartup proves that a binary linking Gorgonia starts: on Go 1.26 it
// panics at start-up unless go4.org/unsafe/assume-no-moving-gc is pinned
// to a version that knows the release.
func TestStartup(t *testing.T) {
	if Float32.Size() != 4 || Float64.Size() != 8 {
		t.Errorf("element sizes %d and %d, want 4 and 8", Float32.Size(), Float64.Size())
	}
}
