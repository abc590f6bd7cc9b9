"""The scheduler through the Python binding: submit options (priority,
deadline, blocking), POOLER pooling, merged batches equal to encode alone,
stats and Prometheus metrics, shutdown (drain, cancel), and bad inputs."""
import os
import threading

import numpy as np
import pytest

from conftest import ROOT

TESTMODELS = os.environ.get("RAPTOR_TESTMODELS") or os.path.join(ROOT, "build", "testmodels")


@pytest.fixture(scope="module")
def tiny(raptor):
    paths = [os.path.join(TESTMODELS, n) for n in ("tiny-bert.raptor", "tiny-bigbird.raptor")]
    for p in paths:
        if not os.path.exists(p):
            pytest.skip("test models not made (%s): go run ./tests/tools/mkmodel" % p)
    return paths


def _seqs(rng, vocab, n, max_len):
    return [rng.integers(5, vocab, size=int(rng.integers(1, max_len + 1))).tolist() for _ in range(n)]


def test_merged_requests_equal_encode_alone(raptor, tiny):
    rng = np.random.default_rng(5)
    with raptor.Engine(backend="cpu", max_queue_delay_us=20000) as e:
        bert, bigbird = e.load(tiny[0]), e.load(tiny[1])
        jobs = []
        for i in range(40):
            m, vocab, max_len = (bert, 79, 128) if i % 2 == 0 else (bigbird, 100, 256)
            seqs = _seqs(rng, vocab, 1 + i % 3, max_len if i % 7 == 0 else 40)
            pooling = ["mean", "cls", "pooler"][i % 3] if m is bert else ["mean", "cls"][i % 2]
            want = m.encode(seqs, pooling=pooling, hidden=True, normalize=bool(i % 2))
            r = m.submit(seqs, pooling=pooling, hidden=True, normalize=bool(i % 2), priority=i % 3,
                         deadline=60.0, block_timeout=None)
            jobs.append((want, r))
        for want, r in jobs:
            got = r.result(timeout=60)
            assert np.array_equal(got.pooled, want.pooled) and np.array_equal(got.packed, want.packed)
        s = e.stats()
        assert s["scheduler_requests"] == 40 and s["mean_batch_requests"] > 1
        assert s["padded_tokens"] == 0 and s["padding_ratio"] == 0.0
        assert s["completed_by_status"]["OK"] == s["requests_completed"]
        assert s["queue_latency_p99_us"] >= s["queue_latency_p50_us"] > 0
        text = e.metrics()
        assert 'raptor_requests_completed_total{status="OK"} %d\n' % s["requests_completed"] in text
        assert "raptor_padding_ratio 0\n" in text and "raptor_live_models 2\n" in text


def test_bad_options_and_pooler(raptor, tiny):
    with raptor.Engine(backend="cpu") as e:
        bert, bigbird = e.load(tiny[0]), e.load(tiny[1])
        with pytest.raises(raptor.InvalidArgumentError):
            bert.submit([[5, 6]], deadline=-1)
        with pytest.raises(raptor.OutOfRangeError, match="100 days"):
            bert.submit([[5, 6]], deadline=101 * 86400)
        with pytest.raises(raptor.OutOfRangeError, match="allows"):
            bert.submit([[5] * 129], priority=1)
        with pytest.raises(raptor.InvalidArgumentError, match="pooler"):
            bigbird.submit([[5, 6]], pooling="pooler")
        with pytest.raises(raptor.InvalidArgumentError, match="pooler"):
            bigbird.encode([[5, 6]], pooling="pooler")
        with pytest.raises(raptor.InvalidArgumentError):
            e.shutdown(mode="later")
        assert e.stats()["rejected_by_status"]["OUT_OF_RANGE"] >= 1


def test_shutdown_drain_then_refuse(raptor, tiny):
    e = raptor.Engine(backend="cpu", max_queue_delay_us=5000000)
    bigbird = e.load(tiny[1])
    reqs = [bigbird.submit([[7] * 120, [8] * 30]) for _ in range(20)]
    e.shutdown("drain")  # batches close at once: the 5 s queue delay does not hold them
    assert all(r.done() or r.poll() for r in reqs)
    first = reqs[0].result()
    for r in reqs:
        assert np.array_equal(r.result(), first)
    with pytest.raises(raptor.ShutdownError):
        bigbird.submit([[7, 8]])
    with pytest.raises(raptor.ShutdownError):
        bigbird.encode([[7, 8]])
    e.shutdown("cancel", timeout=0)  # again: returns at once
    assert e.stats()["queue_depth"] == 0
    e.close()


def test_deadline_and_concurrent_threads(raptor, tiny):
    """16 threads submit with random cancels and deadlines; each request
    completes once with a status it may have."""
    rng = np.random.default_rng(9)
    with raptor.Engine(backend="cpu", queue_capacity=8, max_queue_delay_us=1000) as e:
        bert = e.load(tiny[0])
        work = [(_seqs(rng, 79, 1 + i % 2, 30), i % 10 == 0, i % 5 == 1) for i in range(400)]
        want = [bert.encode(s) for s, _, _ in work]
        outcomes = [None] * len(work)

        def run(w):
            for i in range(w, len(work), 16):
                seqs, cancel, tight = work[i]
                try:
                    r = bert.submit(seqs, deadline=1e-4 if tight else None, block_timeout=None)
                except raptor.DeadlineExceededError:  # passed while waiting for room in the queue
                    outcomes[i] = "expired" if tight else "bad expiry"
                    continue
                if cancel:
                    r.cancel()
                try:
                    got = r.result(timeout=60)
                    outcomes[i] = "ok" if np.array_equal(got, want[i]) else "wrong"
                except raptor.CancelledError:
                    outcomes[i] = "cancelled" if cancel else "bad cancel"
                except raptor.DeadlineExceededError:
                    outcomes[i] = "expired" if tight else "bad expiry"
                r.free()

        threads = [threading.Thread(target=run, args=(w,)) for w in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(outcomes) <= {"ok", "cancelled", "expired"}, set(outcomes)
        s = e.stats()
        assert s["live_requests"] == 0 and s["queue_depth"] == 0
        n_ok = outcomes.count("ok")
        assert s["completed_by_status"].get("OK", 0) >= n_ok


def test_warmup(raptor, tiny):
    """Model.warmup (raptor_model_warmup): one batch on the CPU; bad
    parameters raise; the model then encodes as without it."""
    with raptor.Engine(backend="cpu") as e:
        bert, bigbird = e.load(tiny[0]), e.load(tiny[1])
        want = bert.encode([[5, 6, 7], [8, 9]], pooling="cls")
        assert bert.warmup() == 1
        assert bigbird.warmup(pooling=None, hidden=True, token_type_ids=True, seeds=True, max_tokens=64) == 1
        assert bert.warmup(pooling="pooler", normalize=True) == 1
        with pytest.raises(raptor.InvalidArgumentError, match="pooler"):
            bigbird.warmup(pooling="pooler")
        with pytest.raises(raptor.InvalidArgumentError, match="max_tokens"):
            bert.warmup(max_tokens=-1)
        with pytest.raises(raptor.InvalidArgumentError):
            bert.warmup(pooling=None)
        with pytest.raises(raptor.InvalidArgumentError, match="unknown pooling"):
            bert.warmup(pooling="max")
        got = bert.encode([[5, 6, 7], [8, 9]], pooling="cls")
        assert np.array_equal(got, want)
        bert.close()
        with pytest.raises(raptor.InvalidHandleError):
            bert.warmup()
