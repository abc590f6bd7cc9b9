// Package status defines raptor's error codes, shared by every layer and
// mapped one to one onto the C ABI's raptor_status_t values.
package status

import (
	"errors"
	"fmt"
)

// Code is a raptor status code. The numeric values are part of the C ABI
// (include/raptor.h) and never change; new codes are appended.
type Code int32

const (
	OK                 Code = 0
	InvalidArgument    Code = 1  // a bad argument from the caller
	OutOfRange         Code = 2  // an index or length outside its allowed range (token id >= vocab, too long sequence)
	BufferTooSmall     Code = 3  // a caller-provided output buffer is too small
	InvalidHandle      Code = 4  // NULL, freed or foreign handle
	IO                 Code = 5  // a file could not be opened or read
	InvalidModel       Code = 6  // a weight file is malformed, corrupt or unsupported
	Unsupported        Code = 7  // a valid request this build or backend cannot serve
	BackendUnavailable Code = 8  // the requested backend (e.g. cuda) cannot be used here
	OutOfMemory        Code = 9  // host or device memory exhausted
	Busy               Code = 10 // the request queue is full
	DeadlineExceeded   Code = 11 // a request's deadline passed before it completed
	Cancelled          Code = 12 // a request was cancelled
	Shutdown           Code = 13 // the engine is closing or closed
	DeviceFailed       Code = 14 // the device hit an unrecoverable fault; the engine is failed
	Internal           Code = 15 // a bug in raptor (includes recovered panics)
	Timeout            Code = 16 // a wait timed out; the awaited work goes on
)

var names = map[Code]string{
	OK: "OK", InvalidArgument: "INVALID_ARGUMENT", OutOfRange: "OUT_OF_RANGE",
	BufferTooSmall: "BUFFER_TOO_SMALL", InvalidHandle: "INVALID_HANDLE", IO: "IO",
	InvalidModel: "INVALID_MODEL", Unsupported: "UNSUPPORTED",
	BackendUnavailable: "BACKEND_UNAVAILABLE", OutOfMemory: "OUT_OF_MEMORY", Busy: "BUSY",
	DeadlineExceeded: "DEADLINE_EXCEEDED", Cancelled: "CANCELLED", Shutdown: "SHUTDOWN",
	DeviceFailed: "DEVICE_FAILED", Internal: "INTERNAL", Timeout: "TIMEOUT",
}

func (c Code) String() string {
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("STATUS(%d)", int32(c))
}

// Error is an error carrying a Code.
type Error struct {
	Code Code
	Msg  string
	Err  error // optional wrapped cause
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and formatted message.
func Errorf(c Code, format string, args ...any) error {
	return &Error{Code: c, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with code c whose message is msg and whose cause is err.
func Wrap(c Code, err error, msg string) error {
	return &Error{Code: c, Msg: msg, Err: err}
}

// CodeOf returns the Code of err: OK for nil, the code of the first *Error in
// the chain, and Internal for any other error.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}
