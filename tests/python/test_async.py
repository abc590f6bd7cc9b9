"""Asynchronous requests through the Python binding: submit, poll, wait,
await, cancel, callbacks, and many threads at once."""
import asyncio
import threading

import numpy as np
import pytest


def test_submit_equals_encode(model, ids):
    want = model.encode(ids, hidden=True)
    req = model.submit(ids, hidden=True)
    got = req.wait(timeout=60)
    assert req.poll() and req.done()
    assert got.pooled.tobytes() == want.pooled.tobytes()
    assert got.packed.tobytes() == want.packed.tobytes()
    assert req.result().pooled is got.pooled
    req.free()
    req.free()


def test_await(model, ids):
    want = model.encode(ids)

    async def main():
        reqs = [model.submit([s]) for s in ids]
        return await asyncio.gather(*reqs)

    got = asyncio.run(main())
    assert np.concatenate(got).tobytes() == want.tobytes()


def test_done_callback_runs_once(model, ids):
    calls = []
    ev = threading.Event()
    req = model.submit(ids[:3])

    def cb(r):
        calls.append(r)
        ev.set()

    req.add_done_callback(cb)
    assert ev.wait(60)
    req.result()
    assert calls == [req]


def test_cancel(raptor, engine, model, ids):
    before = engine.stats()["requests_cancelled"]
    big = ids * 8
    reqs = [model.submit(big) for _ in range(3)]
    for r in reqs:
        r.cancel()
    for r in reqs:
        with pytest.raises(raptor.CancelledError) as ei:
            r.result(timeout=60)
        assert ei.value.status == raptor.CancelledError.status
        r.cancel()  # cancelling a completed request is a no-op
    assert engine.stats()["requests_cancelled"] >= before + 3


def test_wait_timeout(raptor, model, ids):
    req = model.submit(ids * 8)
    with pytest.raises(raptor.WaitTimeoutError):
        req.wait(timeout=0)
    req.cancel()
    with pytest.raises(raptor.CancelledError):
        req.result(timeout=60)


def test_async_errors_are_raised(raptor, model):
    try:
        req = model.submit([[101, 30522, 102]])
    except raptor.OutOfRangeError as e:  # validated at submit
        assert e.message
        return
    with pytest.raises(raptor.OutOfRangeError) as ei:
        req.result(timeout=60)
    assert ei.value.message


def test_threads(engine, model, ids):
    want = model.encode(ids)
    errors = []

    def worker(w):
        try:
            for k in range(10):
                i, j = (w * 10 + k) % len(ids), (w * 3 + k) % len(ids)
                out = model.submit([ids[i], ids[j]]).result(timeout=120)
                if out[0].tobytes() != want[i].tobytes() or out[1].tobytes() != want[j].tobytes():
                    errors.append("mismatch %d %d" % (i, j))
        except Exception as e:  # reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    st = engine.stats()
    assert st["queue_depth"] == 0
    assert st["requests_completed"] >= 80
