//go:build unix

package onnximport

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile maps the file at path into memory read-only and returns its
// bytes and a function that unmaps them. Decoding copies every field out
// of the mapping, so the model does not hold on to it, and unmapping right
// after decoding keeps peak memory at about the model's size instead of
// twice it. Files that cannot be mapped (empty ones, special files) are
// read instead.
func mapFile(path string) ([]byte, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := info.Size()
	if !info.Mode().IsRegular() || size == 0 || size != int64(int(size)) {
		b, err := os.ReadFile(path)
		return b, func() {}, err
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_PRIVATE)
	if err != nil {
		return nil, nil, fmt.Errorf("mapping %s: %w", path, err)
	}
	return b, func() { syscall.Munmap(b) }, nil
}
