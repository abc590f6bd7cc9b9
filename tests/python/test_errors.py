"""Bad input through the Python binding gives the documented status and a
message, never a crash or a hang."""
import ctypes
import os

import numpy as np
import pytest


def expect(raptor, cls, fn, *args, **kw):
    with pytest.raises(cls) as ei:
        fn(*args, **kw)
    e = ei.value
    assert isinstance(e, raptor.RaptorError)
    assert e.status == cls.status
    assert e.message, "the library gave no message for %s" % cls.name
    return e


def test_status_names(raptor):
    from raptor import _errors
    for status, name in _errors._NAMES.items():
        assert raptor.status_name(status) == name
    assert raptor.abi_version() >= 1
    assert raptor.version()


def test_token_ids_out_of_range(raptor, model):
    expect(raptor, raptor.OutOfRangeError, model.encode, [[101, 30522, 102]])
    expect(raptor, raptor.OutOfRangeError, model.encode, [[101, -1, 102]])
    expect(raptor, raptor.OutOfRangeError, model.encode, [np.zeros(513, dtype=np.int32)])
    expect(raptor, raptor.OutOfRangeError, model.encode, [[101, 2 ** 40, 102]])  # caught by the binding
    # The engine stays usable.
    assert model.encode([[101, 102]]).shape == (1, 384)


def test_bad_cu_seqlens(raptor, model):
    ids = np.array([101, 7592, 102, 101, 102], dtype=np.int32)
    for cu in ([0, 3, 2, 5], [1, 3, 5], [0, 3, 4], [0, 3, 3, 5], [0, 3, 6]):
        expect(raptor, raptor.InvalidArgumentError, model.encode_packed, ids, np.array(cu, dtype=np.int32))
    expect(raptor, raptor.InvalidArgumentError, model.encode, [[101, 102], []])


def test_too_small_buffers(raptor, model):
    ids = np.array([101, 7592, 102, 101, 102], dtype=np.int32)
    cu = np.array([0, 3, 5], dtype=np.int32)
    expect(raptor, raptor.BufferTooSmallError, model.encode_packed, ids, cu,
           pooled_out=np.empty((1, 384), dtype=np.float32))
    expect(raptor, raptor.BufferTooSmallError, model.encode_packed, ids, cu,
           hidden_out=np.empty((4, 384), dtype=np.float32))
    good = model.encode_packed(ids, cu, pooled_out=np.empty((2, 384), dtype=np.float32))
    assert good.shape == (2, 384)


def test_freed_handles(raptor, engine, model_path):
    from raptor import _lib as L
    lib = L.lib()
    m = engine.load(model_path)
    raw = m.handle
    m.close()
    # The binding refuses a closed model...
    expect(raptor, raptor.InvalidHandleError, m.encode, [[101, 102]])
    with pytest.raises(raptor.InvalidHandleError):
        m.info
    # ...and the library detects the freed handle itself, without dereferencing it.
    info = L.raptor_model_info_t(struct_size=ctypes.sizeof(L.raptor_model_info_t))
    assert lib.raptor_model_get_info(raw, ctypes.byref(info)) == L.ERR_INVALID_HANDLE
    assert lib.raptor_last_error()
    b = L.raptor_batch_t()
    lib.raptor_batch_default(ctypes.byref(b))
    o = L.raptor_output_t()
    lib.raptor_output_default(ctypes.byref(o))
    assert lib.raptor_encode(raw, ctypes.byref(b), ctypes.byref(o)) == L.ERR_INVALID_HANDLE
    assert lib.raptor_encode(None, ctypes.byref(b), ctypes.byref(o)) == L.ERR_INVALID_HANDLE
    lib.raptor_model_free(raw)  # a second free is detected and ignored
    lib.raptor_model_free(None)


def test_wrong_struct_size(raptor, model):
    from raptor import _lib as L
    lib = L.lib()
    info = L.raptor_model_info_t(struct_size=7)
    assert lib.raptor_model_get_info(model.handle, ctypes.byref(info)) == L.ERR_INVALID_ARGUMENT
    assert lib.raptor_last_error()
    opts = L.raptor_engine_options_t()
    lib.raptor_engine_options_default(ctypes.byref(opts))
    assert opts.struct_size == L.raptor_engine_options_t.devices.offset  # the v1 fields (issue 10)
    lib.raptor_engine_options_init(ctypes.byref(opts), ctypes.sizeof(opts))
    assert opts.struct_size == ctypes.sizeof(opts)
    opts.struct_size = 3
    out = L.raptor_engine_p()
    assert lib.raptor_engine_create(ctypes.byref(opts), ctypes.byref(out)) == L.ERR_INVALID_ARGUMENT
    assert out.value is None  # out parameters are untouched on error


def test_model_files(raptor, engine, model_path, tmp_path):
    expect(raptor, raptor.IoError, engine.load, str(tmp_path / "missing.raptor"))
    expect(raptor, raptor.IoError, engine.load, str(tmp_path))  # a directory
    with open(model_path, "rb") as f:
        data = bytearray(f.read())
    bad = tmp_path / "truncated.raptor"
    bad.write_bytes(bytes(data[: len(data) // 3]))
    expect(raptor, raptor.InvalidModelError, engine.load, str(bad))
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF  # in tensor data: the checksum catches it
    expect(raptor, raptor.InvalidModelError, engine.load_bytes, bytes(flipped))
    expect(raptor, raptor.InvalidModelError, engine.load_bytes, b"\x00" * 4096)


def test_backends(raptor):
    expect(raptor, raptor.InvalidArgumentError, raptor.Engine, backend="tpu")  # refused by the binding
    expect(raptor, raptor.InvalidArgumentError, raptor.Engine, backend=7)  # refused by the library
    expect(raptor, raptor.InvalidArgumentError, raptor.Engine, threads=-1)
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("an NVIDIA driver is present: backend='cuda' may work here")
    expect(raptor, raptor.BackendUnavailableError, raptor.Engine, backend="cuda")
    with raptor.Engine(backend="auto") as e:
        assert e.backend == "cpu"


def test_engine_close_frees_models(raptor, model_path):
    e = raptor.Engine(backend="cpu")
    m = e.load(model_path)
    raw = m.handle
    e.close()
    expect(raptor, raptor.InvalidHandleError, m.encode, [[101, 102]])
    from raptor import _lib as L
    info = L.raptor_model_info_t(struct_size=ctypes.sizeof(L.raptor_model_info_t))
    assert L.lib().raptor_model_get_info(raw, ctypes.byref(info)) == L.ERR_INVALID_HANDLE
    e.close()  # idempotent
