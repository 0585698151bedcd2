package peer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// requireEnv is the environment variable that turns missing peers from
// skipped tests into failed ones.
const requireEnv = "DCCONVERT_REQUIRE_PEERS"

// Require reports whether DCCONVERT_REQUIRE_PEERS=1 is set.
func Require() bool {
	return os.Getenv(requireEnv) == "1"
}

// missing skips the test with a message saying which peer is missing and how
// to install it, or fails the test when Require reports true.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Require() {
		t.Fatalf("%s (%s=1: missing peers fail the test)", msg, requireEnv)
	}
	t.Skipf("%s (skipped; set %s=1 to fail instead)", msg, requireEnv)
}

// repoRoot returns the directory holding go.mod, walking up from the working
// directory (a test's working directory is its package directory).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		_, err := os.Stat(filepath.Join(dir, "go.mod"))
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("finding the repository root: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}
