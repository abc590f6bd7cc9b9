package raptor

import "fmt"

// Status is a raptor_status_t code from include/raptor.h.
type Status int32

// The status codes of raptor.h. Their values are part of the C ABI.
const (
	StatusOK                 Status = 0
	StatusInvalidArgument    Status = 1
	StatusOutOfRange         Status = 2
	StatusBufferTooSmall     Status = 3
	StatusInvalidHandle      Status = 4
	StatusIO                 Status = 5
	StatusInvalidModel       Status = 6
	StatusUnsupported        Status = 7
	StatusBackendUnavailable Status = 8
	StatusOutOfMemory        Status = 9
	StatusBusy               Status = 10
	StatusDeadlineExceeded   Status = 11
	StatusCancelled          Status = 12
	StatusShutdown           Status = 13
	StatusDeviceFailed       Status = 14
	StatusInternal           Status = 15
	StatusTimeout            Status = 16
)

var statusNames = [...]string{
	"OK", "INVALID_ARGUMENT", "OUT_OF_RANGE", "BUFFER_TOO_SMALL", "INVALID_HANDLE", "IO",
	"INVALID_MODEL", "UNSUPPORTED", "BACKEND_UNAVAILABLE", "OUT_OF_MEMORY", "BUSY",
	"DEADLINE_EXCEEDED", "CANCELLED", "SHUTDOWN", "DEVICE_FAILED", "INTERNAL", "TIMEOUT",
}

// String is the code's constant name without the RAPTOR_ERR_ prefix, e.g. "INVALID_ARGUMENT".
func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("STATUS(%d)", int32(s))
}

// Error is a failed raptor call: its status code and the library's message.
// errors.Is(err, raptor.ErrOutOfRange) matches any *Error with that status.
type Error struct {
	Status Status
	Msg    string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return "raptor: " + e.Status.String()
	}
	return "raptor: " + e.Msg + " (" + e.Status.String() + ")"
}

// Is reports whether target is an *Error with the same status, so the
// sentinels below match errors carrying any message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// Sentinels for errors.Is, one per status code.
var (
	ErrInvalidArgument    = &Error{Status: StatusInvalidArgument}
	ErrOutOfRange         = &Error{Status: StatusOutOfRange}
	ErrBufferTooSmall     = &Error{Status: StatusBufferTooSmall}
	ErrInvalidHandle      = &Error{Status: StatusInvalidHandle}
	ErrIO                 = &Error{Status: StatusIO}
	ErrInvalidModel       = &Error{Status: StatusInvalidModel}
	ErrUnsupported        = &Error{Status: StatusUnsupported}
	ErrBackendUnavailable = &Error{Status: StatusBackendUnavailable}
	ErrOutOfMemory        = &Error{Status: StatusOutOfMemory}
	ErrBusy               = &Error{Status: StatusBusy}
	ErrDeadlineExceeded   = &Error{Status: StatusDeadlineExceeded}
	ErrCancelled          = &Error{Status: StatusCancelled}
	ErrShutdown           = &Error{Status: StatusShutdown}
	ErrDeviceFailed       = &Error{Status: StatusDeviceFailed}
	ErrInternal           = &Error{Status: StatusInternal}
	ErrTimeout            = &Error{Status: StatusTimeout}
)
