"""raptor's status codes as Python exceptions: one RaptorError subclass per code."""
from . import _lib as L


class RaptorError(Exception):
    """A raptor call failed. `status` is the raptor_status_t code, `name` its
    constant name (e.g. "INVALID_ARGUMENT"), `message` the library's message."""

    status = -1
    name = "ERROR"

    def __init__(self, message, status=None):
        if status is not None:
            self.status = status
        self.message = message
        super().__init__("%s (%s, status %d)" % (message, self.name, self.status))


def _error(name, status, *bases):
    cls = type(name, (RaptorError,) + bases, {"status": status, "__doc__": "raptor status %d" % status})
    cls.name = _NAMES[status]
    return cls


_NAMES = {
    L.ERR_INVALID_ARGUMENT: "INVALID_ARGUMENT", L.ERR_OUT_OF_RANGE: "OUT_OF_RANGE",
    L.ERR_BUFFER_TOO_SMALL: "BUFFER_TOO_SMALL", L.ERR_INVALID_HANDLE: "INVALID_HANDLE", L.ERR_IO: "IO",
    L.ERR_INVALID_MODEL: "INVALID_MODEL", L.ERR_UNSUPPORTED: "UNSUPPORTED",
    L.ERR_BACKEND_UNAVAILABLE: "BACKEND_UNAVAILABLE", L.ERR_OUT_OF_MEMORY: "OUT_OF_MEMORY", L.ERR_BUSY: "BUSY",
    L.ERR_DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED", L.ERR_CANCELLED: "CANCELLED", L.ERR_SHUTDOWN: "SHUTDOWN",
    L.ERR_DEVICE_FAILED: "DEVICE_FAILED", L.ERR_INTERNAL: "INTERNAL", L.ERR_TIMEOUT: "TIMEOUT",
}

InvalidArgumentError = _error("InvalidArgumentError", L.ERR_INVALID_ARGUMENT, ValueError)
OutOfRangeError = _error("OutOfRangeError", L.ERR_OUT_OF_RANGE, ValueError)
BufferTooSmallError = _error("BufferTooSmallError", L.ERR_BUFFER_TOO_SMALL, ValueError)
InvalidHandleError = _error("InvalidHandleError", L.ERR_INVALID_HANDLE)
IoError = _error("IoError", L.ERR_IO)
InvalidModelError = _error("InvalidModelError", L.ERR_INVALID_MODEL)
UnsupportedError = _error("UnsupportedError", L.ERR_UNSUPPORTED)
BackendUnavailableError = _error("BackendUnavailableError", L.ERR_BACKEND_UNAVAILABLE)
OutOfMemoryError = _error("OutOfMemoryError", L.ERR_OUT_OF_MEMORY)
BusyError = _error("BusyError", L.ERR_BUSY)
DeadlineExceededError = _error("DeadlineExceededError", L.ERR_DEADLINE_EXCEEDED)
CancelledError = _error("CancelledError", L.ERR_CANCELLED)
ShutdownError = _error("ShutdownError", L.ERR_SHUTDOWN)
DeviceFailedError = _error("DeviceFailedError", L.ERR_DEVICE_FAILED)
InternalError = _error("InternalError", L.ERR_INTERNAL)
WaitTimeoutError = _error("WaitTimeoutError", L.ERR_TIMEOUT)

_BY_STATUS = {c.status: c for c in (
    InvalidArgumentError, OutOfRangeError, BufferTooSmallError, InvalidHandleError, IoError, InvalidModelError,
    UnsupportedError, BackendUnavailableError, OutOfMemoryError, BusyError, DeadlineExceededError,
    CancelledError, ShutdownError, DeviceFailedError, InternalError, WaitTimeoutError)}


def error_for(status, message):
    """The exception for a status code; an unknown code gives a plain RaptorError."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return RaptorError(message, status)
    return cls(message)


def check(status):
    """Raises the error for a failed call, with the calling thread's last error message."""
    if status != L.OK:
        msg = L.lib().raptor_last_error()
        raise error_for(status, msg.decode("utf-8", "replace") if msg else "")
