package main

import "syscall"

// memoryLimit is the largest buffer the library copies from a caller (a
// model image): the machine's RAM, so that an absurd size fails with a
// status instead of the Go runtime's fatal out-of-memory error.
func memoryLimit() uint64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil || si.Totalram == 0 {
		return 1 << 36
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}
