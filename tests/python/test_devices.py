"""Several devices in one engine through the Python binding (issue 10): a
device list, "all", bad selections (empty, repeated, negative, out of range)
raising the right errors, per-device stats (one copy of the weights per
device, requests spread over them) and results identical to one device. On
the CPU backend each listed ordinal is one CPU replica standing for a GPU."""
import os

import numpy as np
import pytest

from conftest import ROOT

TESTMODELS = os.environ.get("RAPTOR_TESTMODELS") or os.path.join(ROOT, "build", "testmodels")


@pytest.fixture(scope="module")
def bert(raptor):
    p = os.path.join(TESTMODELS, "tiny-bert.raptor")
    if not os.path.exists(p):
        pytest.skip("test models not made (%s): go run ./tests/tools/mkmodel" % p)
    return p


@pytest.mark.parametrize("devices,err", [
    ([], "InvalidArgumentError"),
    ([0, 1, 0], "InvalidArgumentError"),
    ([0, -1], "InvalidArgumentError"),
    ([0, 64], "OutOfRangeError"),
    ("some", "ValueError"),
])
def test_bad_device_selections(raptor, devices, err):
    with pytest.raises(Exception) as ei:
        raptor.Engine(backend="cpu", devices=devices)
    assert type(ei.value).__name__ == err, ei.value
    if err != "ValueError":
        assert "raptor_engine_create" in str(ei.value)


def test_all_devices_cpu_is_one(raptor):
    with raptor.Engine(backend="cpu", devices="all") as e:
        assert e.device_count == 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_devices_equal_one_device(raptor, bert, n):
    rng = np.random.default_rng(n)
    seqs = [rng.integers(5, 79, size=int(rng.integers(1, 100))).tolist() for _ in range(30)]
    with raptor.Engine(backend="cpu", threads=2) as one, \
            raptor.Engine(backend="cpu", threads=2, devices=list(range(n))[::-1], max_batch_tokens=64,
                          max_queue_delay_us=20000) as many:
        assert many.device_count == n
        m1, mn = one.load(bert), many.load(bert)
        ds = many.device_stats()
        assert [d["ordinal"] for d in ds] == list(range(n))[::-1]
        assert all(d["weight_bytes"] > 0 and d["weight_bytes"] == ds[0]["weight_bytes"] for d in ds)
        reqs = [mn.submit([s], pooling="mean") for s in seqs]
        for s, r in zip(seqs, reqs):
            got = r.result(timeout=60)
            want = m1.encode([s], pooling="mean")
            np.testing.assert_array_equal(np.asarray(got["pooled"] if isinstance(got, dict) else got),
                                          np.asarray(want["pooled"] if isinstance(want, dict) else want))
        ds = many.device_stats()
        assert sum(d["requests"] for d in ds) == len(seqs)
        assert not any(d["failed"] for d in ds)
        if n > 1:
            assert sum(1 for d in ds if d["batches"] > 0) >= 2, ds
        text = many.metrics()
        assert 'raptor_device_weight_bytes{device="0",ordinal="%d"}' % (n - 1) in text
