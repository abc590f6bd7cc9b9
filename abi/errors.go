package main

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"unicode/utf8"
	"unsafe"

	"github.com/raptor-infer/raptor/engine"
	"github.com/raptor-infer/raptor/internal/status"
)

// The status codes of the C ABI are status.Code values, one to one.
func init() {
	for c := status.OK; c <= status.Timeout; c++ {
		statusNames = append(statusNames, C.CString(c.String()))
	}
}

var (
	statusNames   []*C.char // indexed by code; C strings that live forever
	unknownStatus = C.CString("UNKNOWN")
)

//export raptorgo_status_name
func raptorgo_status_name(s C.raptor_status_t) *C.char {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return unknownStatus
}

// maxErrorLen is the thread-local buffer's capacity in shim.c, less the NUL.
const maxErrorLen = 1023

// setLastError stores msg as the calling thread's last error. An export
// runs on its caller's thread, so the C thread-local is the caller's.
func setLastError(msg string) {
	if len(msg) > maxErrorLen {
		cut := maxErrorLen
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut]
	}
	if msg == "" {
		C.raptorc_set_error(nil, 0)
		return
	}
	C.raptorc_set_error((*C.char)(unsafe.Pointer(unsafe.StringData(msg))), C.size_t(len(msg)))
}

// fail records err, prefixed with the function name, as the last error and
// returns its status. A plain (non-status) error is INTERNAL.
func fail(fn string, err error) C.raptor_status_t {
	code := status.CodeOf(err)
	if code == status.OK {
		code = status.Internal
	}
	msg := err.Error()
	if msg == "" {
		msg = code.String()
	}
	setLastError(fn + ": " + msg)
	return C.raptor_status_t(code)
}

func failf(fn string, code status.Code, format string, args ...any) C.raptor_status_t {
	return fail(fn, status.Errorf(code, format, args...))
}

// guard is deferred first by every export: caller memory faults become
// panics, and a panic becomes RAPTOR_ERR_INTERNAL with a message (st may be
// nil for void exports). Use: defer guard("raptor_x", &st)().
func guard(fn string, st *C.raptor_status_t) func() {
	old := debug.SetPanicOnFault(true)
	return func() {
		debug.SetPanicOnFault(old)
		if p := recover(); p != nil {
			msg := fmt.Sprintf("internal error: %v", p)
			if e, ok := p.(interface{ Addr() uintptr }); ok {
				msg = fmt.Sprintf("memory fault at address %#x (a pointer passed in is not valid, or a raptor bug): %v", e.Addr(), p)
			}
			buf := make([]byte, 4096)
			buf = buf[:runtime.Stack(buf, false)]
			logf(engine.LogError, "%s: %s", fn, msg)
			logf(engine.LogDebug, "%s", buf)
			code := failf(fn, status.Internal, "%s", msg)
			if st != nil {
				*st = code
			}
		}
	}
}
