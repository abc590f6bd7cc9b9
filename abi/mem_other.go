//go:build !linux

package main

// memoryLimit is the largest buffer the library copies from a caller (a
// model image): 64 GiB where the machine's RAM is not known.
func memoryLimit() uint64 { return 1 << 36 }
