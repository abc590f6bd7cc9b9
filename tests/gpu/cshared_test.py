"""internal/cuda inside a Go c-shared library, called from many Python
threads at once (foreign threads the Go runtime did not create). Built by
tests/gpu/run.sh into build/gpu/lib/libcudaselftest.so; skips without it
or without a GPU."""
import ctypes
import os
import threading

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LIB = os.path.join(ROOT, "build", "gpu", "lib", "libcudaselftest.so")
BACKEND_UNAVAILABLE = 8


@pytest.fixture(scope="module")
def lib():
    if not os.path.exists(LIB):
        pytest.skip("libcudaselftest.so not built: run tests/gpu/run.sh")
    l = ctypes.CDLL(LIB)
    l.RaptorCudaSelfTest.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t]
    l.RaptorCudaSelfTest.restype = ctypes.c_int32
    return l


def call(lib, seed):
    buf = ctypes.create_string_buffer(4096)
    rc = lib.RaptorCudaSelfTest(seed, buf, len(buf))
    return rc, buf.value.decode()


def test_many_python_threads(lib):
    rc, msg = call(lib, 0)
    if rc == BACKEND_UNAVAILABLE:
        pytest.skip("no usable GPU: " + msg.splitlines()[0])
    assert rc == 0, msg
    results = []
    lock = threading.Lock()

    def worker(t):
        for i in range(10):
            r = call(lib, 1000 * t + i)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    bad = [r for r in results if r[0] != 0]
    print(f"c-shared: {len(results)} GEMMs from 16 Python threads, {len(bad)} failures")
    assert len(results) == 160 and not bad, bad[:3]
