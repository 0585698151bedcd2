//go:build !unix

package onnximport

import "os"

// mapFile reads the file at path; platforms without mmap read it whole.
func mapFile(path string) ([]byte, func(), error) {
	b, err := os.ReadFile(path)
	return b, func() {}, err
}
