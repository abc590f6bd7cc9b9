package cuda

import (
	"errors"
	"fmt"

	"github.com/raptor-infer/raptor/internal/status"
)

// CallError is a failed call into one of the CUDA libraries. It names the
// call, the library's error code, its symbolic name and its description.
type CallError struct {
	Lib  string // "driver", "nvrtc" or "cublasLt"
	Call string // e.g. "cuMemAlloc_v2(1073741824 bytes)"
	Code int
	Name string // e.g. "CUDA_ERROR_OUT_OF_MEMORY"
	Desc string // e.g. "out of memory"
}

func (e *CallError) Error() string {
	s := fmt.Sprintf("%s: %s (%d)", e.Call, e.Name, e.Code)
	if e.Desc != "" && e.Desc != e.Name {
		s += ": " + e.Desc
	}
	return s
}

// Driver error codes raptor treats specially (cuda.h, CUresult).
const (
	errInvalidValue      = 1
	errOutOfMemory       = 2
	errNotInitialized    = 3
	errDeinitialized     = 4
	errStubLibrary       = 34
	errDeviceUnavailable = 46
	errNoDevice          = 100
	errInvalidDevice     = 101
	errInvalidImage      = 200
	errInvalidContext    = 201
	errNoBinaryForGPU    = 209
	errECCUncorrectable  = 214
	errNotReady          = 600
	errIllegalAddress    = 700
	errLaunchTimeout     = 702
	errHardwareStack     = 714
	errIllegalInstr      = 715
	errMisalignedAddr    = 716
	errInvalidAddrSpace  = 717
	errInvalidPC         = 718
	errLaunchFailed      = 719
	errContextDestroyed  = 709
	errSystemDriver      = 803
	errCompatNotSupport  = 804
	errUnknown           = 999
)

// stickyCode reports whether a driver error leaves the context unusable: the
// device must be failed (status.DeviceFailed) and every later call refused.
func stickyCode(code int) bool {
	switch code {
	case errIllegalAddress, errLaunchTimeout, errHardwareStack, errIllegalInstr,
		errMisalignedAddr, errInvalidAddrSpace, errInvalidPC, errLaunchFailed,
		errECCUncorrectable, errContextDestroyed, errDeinitialized, errUnknown:
		return true
	}
	return false
}

// driverStatus maps a driver error code onto raptor's status codes.
func driverStatus(code int) status.Code {
	switch {
	case code == errOutOfMemory:
		return status.OutOfMemory
	case stickyCode(code):
		return status.DeviceFailed
	case code == errNoDevice, code == errInvalidDevice, code == errNotInitialized,
		code == errStubLibrary, code == errDeviceUnavailable, code == errSystemDriver,
		code == errCompatNotSupport:
		return status.BackendUnavailable
	}
	return status.Internal
}

// IsSticky reports whether err carries a driver error after which the device
// context is unusable.
func IsSticky(err error) bool {
	var ce *CallError
	return errors.As(err, &ce) && ce.Lib == "driver" && stickyCode(ce.Code)
}

// callFailed wraps a CallError into a *status.Error with code c.
func callFailed(c status.Code, ce *CallError) error {
	return &status.Error{Code: c, Msg: "cuda", Err: ce}
}
