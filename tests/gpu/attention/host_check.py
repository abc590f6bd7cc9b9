"""Builds host_check.cc with g++ and checks kernels/sparse_attention.cuh on
the CPU: the generator against plan_ref.py (itself checked against
internal/plan/testdata/vectors.json) and the schedule (every key block of
every (sequence, head, query block) covered exactly once, split slots unique
and within the host bound). No GPU needed: python3 host_check.py"""
import os
import random
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import plan_ref  # noqa: E402


def build():
    exe = os.path.join(tempfile.gettempdir(), "raptor_sa_host_check")
    subprocess.check_call(["g++", "-std=c++17", "-O2", "-Wall", "-o", exe, os.path.join(HERE, "host_check.cc")])
    return exe


def run(exe, text):
    return subprocess.run([exe], input=text, capture_output=True, text=True, check=True).stdout


def main():
    plan_ref.check_plan_vectors()
    exe = build()
    rng = random.Random(1)
    # generator: all middle rows of random sequences
    cases, lines = [], []
    for _ in range(300):
        r = rng.choice([0, 1, 2, 3, 3, 3, 5, 8, 16])
        n = (5 + 2 * r) * 64 + rng.choice([1, 2, 63, 64, 65, rng.randrange(1, 5000)])
        seed, rseed = rng.getrandbits(64), rng.getrandbits(64)
        layer, head = rng.randrange(48), rng.randrange(32)
        cases.append((seed, rseed, layer, head, n, r))
        lines.append(f"plan {seed} {rseed} {layer} {head} {n} {r}")
    out = run(exe, "\n".join(lines) + "\n").splitlines()
    k = 0
    nrows = 0
    for (seed, rseed, layer, head, n, r) in cases:
        nb = -(-n // 64)
        for i in range(1, nb - 1):
            f = out[k].split()
            k += 1
            assert int(f[1]) == i
            want = plan_ref.key_blocks(n, r, True, seed, rseed, layer, head, i)
            assert [int(x) for x in f[2:]] == want, (seed, rseed, layer, head, n, r, i, f, want)
            nrows += 1
    assert k == len(out)
    print(f"generator: {nrows} middle rows of {len(cases)} sequences match plan_ref")
    # schedule
    nb_checked = 0
    for trial in range(60):
        r = rng.choice([1, 2, 3, 3, 5])
        C = rng.choice([8, 16, 32, 64, 1 << 30])
        sort = rng.choice([0, 1])
        sparse = rng.choice([0, 1, 1, 1])
        H = rng.choice([1, 2, 3, 12])
        seed = rng.getrandbits(64)
        nseq = rng.choice([1, 2, 5, 17, 64])
        thr = (5 + 2 * r) * 64
        pool = [0, 1, 63, 64, 65, thr, thr + 1, 4096, C * 64 if C < 1000 else 777, C * 64 + 1 if C < 1000 else 778]
        ns = [rng.choice(pool) if rng.random() < 0.5 else rng.randrange(1, 9000) for _ in range(nseq)]
        if trial == 0:
            ns = [65536, 1, 63]
            nseq = 3
        out = run(exe, f"sched {nseq} {H} {r} {C} {sort} {sparse} {seed} " + " ".join(map(str, ns)) + "\n").splitlines()
        assert out[0].startswith("T"), out[0]
        total, nseg, used, bound = map(int, out[0].split()[1:])
        assert used <= bound, (used, bound)
        assert total == len(out) - 1
        seen = {}
        slots = set()
        for l in out[1:]:
            f = [int(x) for x in l.split()[1:]]
            s, h, qb, row, chunk, nchunks, slot, semi, L = f[:9]
            blocks = f[9:]
            assert len(blocks) == L
            if nchunks > 1:
                assert 0 <= slot < used and slot not in slots
                slots.add(slot)
                assert 0 <= semi < 2 * H * nseq
            seen.setdefault((s, h, qb), []).extend(blocks)
        for s, n in enumerate(ns):
            nb = -(-n // 64)
            for h in range(H):
                for i in range(nb):
                    want = plan_ref.key_blocks(n, r, sparse, seed, s * 7919 + 1, 5, h, i)
                    got = sorted(seen.pop((s, h, i)))
                    assert got == want, (s, n, h, i, got[:20], want[:20])
                    nb_checked += 1
        assert not seen, list(seen)[:5]
    print(f"schedule: 60 random batches, {nb_checked} (sequence, head, query block) rows covered exactly once")


if __name__ == "__main__":
    main()
