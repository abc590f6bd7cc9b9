"""Hardening from Python (issue 9): a create/load/encode/submit/cancel/free
loop must return the process to its baseline (handles, goroutines, Go heap);
misaligned and strided numpy inputs are accepted; freed handles of every kind
are detected through the raw ABI."""
import ctypes
import time

import numpy as np
import pytest

from raptor import _lib as L


def _settle(probe, base, key, slack, tries=100):
    s = probe.stats()
    for _ in range(tries):
        if s[key] <= base[key] + slack:
            break
        time.sleep(0.02)
        s = probe.stats()
    return s


def test_leak_loop(raptor, model_path):
    with open(model_path, "rb") as f:
        image = f.read()
    with raptor.Engine(backend="cpu") as probe:
        base = probe.stats()
        heaps = []
        for i in range(20):
            with raptor.Engine(backend="cpu") as e:
                m = e.load(model_path)
                v = m.encode([[101, 7592, 102], [101, 2204, 2154, 102]])
                assert v.shape == (2, 384) and np.isfinite(v).all()
                reqs = [m.submit([[101, 2000 + k, 102]]) for k in range(4)]
                reqs[0].cancel()
                for r in reqs[1:]:
                    assert r.result().shape == (1, 384)
                m.close()
                if i % 3 == 0:  # a model left for the engine's close to free
                    e.load(model_path)
            heaps.append(probe.stats()["process_heap_bytes"])
        s = _settle(probe, base, "process_goroutines", 2)
        assert s["process_handles"] == base["process_handles"]
        assert s["process_goroutines"] <= base["process_goroutines"] + 2
        # The Go heap does not grow with the rounds (garbage not yet swept
        # counts in it: compare the later rounds with the earlier ones).
        assert max(heaps[14:]) <= 2 * max(heaps[:6]) + (16 << 20), heaps
        del image


def test_misaligned_and_strided_inputs(raptor, model):
    ids = np.array([101, 7592, 1010, 2088, 999, 102], dtype=np.int32)
    want = model.encode([ids])
    # a view at an odd byte offset, and a strided view
    raw = np.zeros(ids.nbytes + 1, dtype=np.uint8)
    mis = raw[1:].view(np.int32)
    mis[:] = ids
    assert mis.ctypes.data % 4 == 1
    np.testing.assert_array_equal(model.encode([mis]), want)
    strided = np.repeat(ids, 2)[::2]
    np.testing.assert_array_equal(model.encode([strided]), want)


def test_freed_handles_every_kind(raptor, model_path):
    lib = L.lib()
    e = raptor.Engine(backend="cpu")
    m = e.load(model_path)
    req = m.submit([[101, 102]])
    req.result()
    eh, mh, rh = e.handle, m.handle, req.handle
    e.close()  # frees the model and the request handles too
    info = L.raptor_model_info_t()
    info.struct_size = ctypes.sizeof(info)
    st = L.raptor_engine_stats_t()
    st.struct_size = ctypes.sizeof(st)
    done = ctypes.c_int32(7)
    assert lib.raptor_engine_get_stats(eh, ctypes.byref(st)) == L.ERR_INVALID_HANDLE
    assert b"freed" in lib.raptor_last_error()
    assert lib.raptor_model_get_info(mh, ctypes.byref(info)) == L.ERR_INVALID_HANDLE
    assert lib.raptor_request_poll(rh, ctypes.byref(done), None) == L.ERR_INVALID_HANDLE
    assert done.value == 7  # untouched
    assert lib.raptor_request_wait(rh, 0, None) == L.ERR_INVALID_HANDLE
    assert lib.raptor_request_cancel(rh) == L.ERR_INVALID_HANDLE
    # wrong kinds
    assert lib.raptor_model_get_info(eh, ctypes.byref(info)) == L.ERR_INVALID_HANDLE
    lib.raptor_request_free(rh)
    lib.raptor_model_free(mh)
    lib.raptor_engine_free(eh)
