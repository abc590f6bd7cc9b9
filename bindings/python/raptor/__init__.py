"""raptor: a transformer-encoder inference engine for long, variable-length inputs.

A ctypes binding of libraptor.so (include/raptor.h). The library is found
through $RAPTOR_LIB, then a raptor checkout's build/libraptor.so, then the
dynamic loader's search path.

    import raptor
    with raptor.Engine() as engine:
        model = engine.load("build/models/all-MiniLM-L6-v2.raptor")
        vectors = model.encode(["Hello, world!"], normalize=True)   # numpy [1, 384]
"""
from ._core import (Encoding, Engine, Model, ModelInfo, Request, abi_version, set_log_handler, status_name,
                    version)
from ._errors import (BackendUnavailableError, BufferTooSmallError, BusyError, CancelledError,
                      DeadlineExceededError, DeviceFailedError, InternalError, InvalidArgumentError,
                      InvalidHandleError, InvalidModelError, IoError, OutOfMemoryError, OutOfRangeError,
                      RaptorError, ShutdownError, UnsupportedError, WaitTimeoutError)

__all__ = [
    "Engine", "Model", "ModelInfo", "Request", "Encoding", "version", "abi_version", "status_name",
    "set_log_handler", "RaptorError", "InvalidArgumentError", "OutOfRangeError", "BufferTooSmallError",
    "InvalidHandleError", "IoError", "InvalidModelError", "UnsupportedError", "BackendUnavailableError",
    "OutOfMemoryError", "BusyError", "DeadlineExceededError", "CancelledError", "ShutdownError",
    "DeviceFailedError", "InternalError", "WaitTimeoutError",
]
