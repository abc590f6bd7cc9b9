// Command abi is libraptor.so: the C ABI of include/raptor.h, built with
//
//	go build -buildmode=c-shared -o build/libraptor.so ./abi
//
// It is the only cgo package and holds the //export functions and their
// small helpers: the handle table, status mapping, the last error and the
// log bridge. The public functions are defined in C (shim.c) with the
// header's exact prototypes and forward to the hidden raptorgo_* exports
// here.
//
// Decisions:
//   - Handles are table entries, not pointers (handles.go): a freed, foreign
//     or NULL handle is answered with RAPTOR_ERR_INVALID_HANDLE.
//   - Every export recovers panics into RAPTOR_ERR_INTERNAL and turns memory
//     faults while reading or writing caller memory into panics
//     (debug.SetPanicOnFault), so a bad buffer pointer fails the call.
//   - Inputs are copied into Go memory and outputs computed into Go memory,
//     then copied (or converted to fp16) into the caller's buffers byte by
//     byte: buffers of any alignment are accepted, and an asynchronous
//     request writes its buffers only when it succeeds.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../include -Wall -Wextra
#include "shim.h"
*/
import "C"

func main() {}
