"""Where the wgmma kernel's time goes on n x 4096 batches (issue 6): a call's
fixed cost and tail, and the cost of one key-block step in short (sparse
middle-row) and long (dense-row) work items.

For n = 1, 2, 4, 8 sequences of 4096 tokens (fp16, 12 heads, D = 64, r = 3,
the default schedule reused, as in every layer of a forward after the first)
it times the sparse model and the dense model (every row attends all 64
blocks), fits time = a + b * n for each, and reports per key-block step
b / (block steps per sequence): the slope leaves out what every call pays
once (launch, start, the last items' tail), which the intercept a holds.
Medians of CUDA-event timings after warm-up, as bench/attention_bench.py.

    OUT=/tmp python3 bench/attention_rate.py     (on the GPU machine)
"""
import os
import statistics
import sys
import time

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "gpu", "attention"))
from sparse_attn import Module, SparseAttention  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_timing import bench, sm_clock, tee_log  # noqa: E402

H, D, R, BLK = 12, 64, 3, 64
OUT = os.environ.get("OUT", "/tmp")
log = tee_log(os.path.join(OUT, "attention_rate.log"))


def steps_per_seq(n_tok, sparse):
    nb = -(-n_tok // BLK)
    if not sparse or nb <= 5 + 2 * R:
        return nb * nb
    return (nb - 4) * (5 + R) + 2 * (4 + R) + 2 * nb


def fit(xs, ys):
    mx, my = statistics.mean(xs), statistics.mean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main():
    m = Module(log)
    sa = SparseAttention(m)
    log(f"device {torch.cuda.get_device_name()} ({m.arch}, {m.nsm} SMs); fp16, H={H}, D={D}, r={R}")
    gen = torch.Generator(device="cuda").manual_seed(3)
    ns = (1, 2, 4, 8)
    rounds = 5
    times = {(sp, n): [] for sp in (1, 0) for n in ns}
    data = {}
    for n in ns:
        T = 4096 * n
        qkv = torch.randn((T, 3, H, D), generator=gen, device="cuda", dtype=torch.float32).half()
        o = torch.empty((T, H, D), dtype=torch.float16, device="cuda")
        cu = torch.tensor([4096 * i for i in range(n + 1)], dtype=torch.int32, device="cuda")
        seeds = torch.arange(1, n + 1, dtype=torch.int64, device="cuda")
        data[n] = (qkv, o, cu, seeds)
    # warm-up: half a second of sparse 8 x 4096 calls (the clock leaves idle; a long dense warm-up instead puts
    # the GPU at its power limit, and every timing after it runs throttled)
    qkv, o, cu, seeds = data[8]
    t0 = time.time()
    while time.time() - t0 < 0.5:
        sa(qkv[:, 0], qkv[:, 1], qkv[:, 2], o, cu, seeds, seed=5, layer=2, r=R)
        torch.cuda.synchronize()
    # interleaved rounds over every configuration, so that the clock's drift weighs on all alike
    clocks = []
    for rnd in range(rounds):
        for sp in (1, 0):
            for n in ns:
                qkv, o, cu, seeds = data[n]
                q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
                sa(q, k, v, o, cu, seeds, seed=5, layer=2, r=R, sparse=sp)  # leaves the schedule
                times[(sp, n)].append(bench(lambda: sa(q, k, v, o, cu, seeds, seed=5, layer=2, r=R, sparse=sp,
                                                       schedule=False), reps=9)[0])
            clocks.append(sm_clock())
    ck = [c for c in clocks if c]
    if ck:
        log(f"SM clock between configurations {min(c[0] for c in ck)}-{max(c[0] for c in ck)} MHz, "
            f"{min(c[1] for c in ck):.0f}-{max(c[1] for c in ck):.0f} W")
    log("| model | n x 4096 | block steps | median us | us per 1k block steps |")
    log("|---|---|---|---|---|")
    fits = {}
    for sp in (1, 0):
        ys = []
        for n in ns:
            t = statistics.median(times[(sp, n)]) * 1e3
            st = n * H * steps_per_seq(4096, sp)
            ys.append(t)
            log(f"| {'sparse' if sp else 'dense'} | {n} | {st} | {t:.1f} | {t / st * 1e3:.3f} |")
        a, b = fit(list(ns), ys)
        per = b / (H * steps_per_seq(4096, sp)) * 1e3
        fits[sp] = (a, b, per)
        log(f"fit {'sparse' if sp else 'dense'}: time = {a:.1f} us + {b:.2f} us x n; "
            f"{per:.3f} us per 1k block steps in the slope")
    # one 64-token sequence: the call's fixed cost
    qkv = torch.randn((64, 3, H, D), generator=gen, device="cuda", dtype=torch.float32).half()
    o = torch.empty((64, H, D), dtype=torch.float16, device="cuda")
    cu = torch.tensor([0, 64], dtype=torch.int32, device="cuda")
    seeds = torch.ones(1, dtype=torch.int64, device="cuda")
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    sa(q, k, v, o, cu, seeds, seed=5, layer=2, r=R)
    fixed = bench(lambda: sa(q, k, v, o, cu, seeds, seed=5, layer=2, r=R, schedule=False))[0] * 1e3
    log(f"1 x 64 tokens (one block per head): {fixed:.1f} us per call")
    a_s, _, per_s = fits[1]
    _, _, per_d = fits[0]
    t8 = statistics.median(times[(1, 8)]) * 1e3
    log(f"sparse 8 x 4096: {t8:.1f} us = intercept {a_s:.1f} (of which a 64-token call {fixed:.1f}) + "
        f"{t8 - a_s:.1f} in the slope; a key-block step costs {per_s / per_d:.3f}x a dense-row step "
        f"({per_s:.3f} vs {per_d:.3f} us per 1k)")


if __name__ == "__main__":
    main()
