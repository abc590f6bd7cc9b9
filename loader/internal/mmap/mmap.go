// Package mmap maps files read-only into memory.
package mmap

import (
	"fmt"
	"os"
)

// File maps f's first size bytes read-only. The returned function unmaps
// them; the bytes must not be used afterwards. Writing to them crashes the
// process. Where mmap is unavailable the file is read into memory instead.
func File(f *os.File, size int64) ([]byte, func() error, error) {
	if size <= 0 {
		return nil, func() error { return nil }, nil
	}
	if uint64(size) > uint64(^uint(0)>>1) {
		return nil, nil, fmt.Errorf("%d bytes do not fit in the address space", size)
	}
	return mapFile(f, size)
}

// Anon returns size bytes of zeroed, private anonymous memory, outside the
// Go heap: the garbage collector neither scans nor zeroes it, pages are
// zeroed by the kernel as they are first touched (transparent huge pages
// requested where the kernel offers them), and the returned function gives
// the memory back at once. Where mmap is unavailable it is a Go allocation.
func Anon(size int) ([]byte, func() error, error) {
	if size <= 0 {
		return nil, func() error { return nil }, nil
	}
	return anon(size)
}
