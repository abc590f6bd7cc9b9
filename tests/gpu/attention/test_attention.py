"""Correctness suite of kernels/sparse_attention.cu, run on the GPU machine:

  PYTHONUNBUFFERED=1 python3 tests/gpu/attention/test_attention.py

1. the GPU generator against internal/plan/testdata/vectors.json;
2. the GPU plan against plan_ref.py (a port of internal/plan), element for
   element, for every (sequence, head, query block) of a ragged batch;
3. the GPU work list (segments sorted by cost, tickets, counts);
4. attention on a ragged batch (lengths 1, b-1, b, b+1, (5+2r)b,
   (5+2r)b+1, 4096, 16384, 65536 and a few random ones, in one packed batch),
   fp16 and bf16, head dims 32, 64, 128, reading Q/K/V from the fused QKV
   layout [T, 3, H, D] and writing O as [T, H*D]: output poisoned with NaN
   beforehand and checked fully written and finite; error against a float64
   masked-dense reference within 2x PyTorch's own attention
   (scaled_dot_product_attention in the same 16-bit dtype, same mask);
5. determinism (bitwise) and batch invariance (bitwise);
6. schedule variants (no split, no cost order, 3 stages), separate Q/K/V
   layouts, r = 1, and a dense model;
7. RAPTOR_TEST_VARIANTS=name,... (sm_90a): each named wgmma kernel variant
   through all of the above, and bitwise against the wg kernel on its inputs
   (a name ending in "~": arithmetic that differs from wg, not compared bitwise).
Exit status 0 only if everything passed."""
import os
import random
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import plan_ref  # noqa: E402
import reference as ref  # noqa: E402
from sparse_attn import (MAX_LIST, NOSPLIT, RECORD_LAYERS, WS_CFG, Module, SparseAttention,  # noqa: E402
                         ws_seginfo_offset, ws_sem_offset)

OUT = os.environ.get("OUT", "/tmp")
LOG = open(os.path.join(OUT, "test_attention.log"), "w")
FAILS = []


def log(*a):
    s = " ".join(str(x) for x in a)
    print(s, flush=True)
    LOG.write(s + "\n")
    LOG.flush()


def check(cond, what):
    if not cond:
        FAILS.append(what)
        log("FAIL:", what)
    return cond


def cu_of(ls):
    cu = [0]
    for x in ls:
        cu.append(cu[-1] + x)
    return cu


def test_vectors(sa):
    v = plan_ref.check_plan_vectors()
    cases = []
    for c in v["draw"]:
        cases.append((int(c["seed"]), int(c["rseed"]), c["layer"], c["head"], c["block"], 0, 0))
    for c in v["random"]:
        cases.append((int(c["seed"]), int(c["rseed"]), c["layer"], c["head"], c["block"], c["nb"], c["r"]))
    out = sa.vectors(cases)
    bad = 0
    for c, o in zip(v["draw"], out[:len(v["draw"])]):
        bad += o[0] != int(c["key"]) or o[1:7] != c["draws"]
    for c, o in zip(v["random"], out[len(v["draw"]):]):
        got = [x for x in o[7:] if x != (1 << 64) - 1]
        bad += got != c["blocks"]
    check(bad == 0, f"generator vectors: {bad} mismatches")
    # key_blocks vectors (block size 64 only): one sequence per case length
    kb = [c for c in v["key_blocks"] if c["b"] == 64]
    for sparse in (True, False):
        cs = [c for c in kb if c["sparse"] == sparse]
        ls = sorted({c["n"] for c in cs})
        cu = cu_of(ls)
        seeds = torch.full((len(ls),), 5, dtype=torch.int64, device="cuda")
        plan, qb_base = sa.plan(cu, seeds, 99, 3, 3, 2, sparse=int(sparse))
        for c in cs:
            s = ls.index(c["n"])
            row = plan[qb_base[s] + c["block"], 1].tolist()
            L = row[0]
            got = list(range(L)) if row[1] == -1 else row[1:1 + L]
            bad += got != c["blocks"]
    check(bad == 0, f"key_blocks vectors: {bad} mismatches")
    log(f"generator: {len(cases)} draw/random vectors and {len(kb)} key_blocks vectors, {bad} mismatches")


def test_plan(sa, ls, seeds_host, H, seed, layer, r, sparse=1):
    cu = cu_of(ls)
    seeds = torch.tensor([x - (1 << 64) if x >= 1 << 63 else x for x in seeds_host], dtype=torch.int64,
                         device="cuda")
    t0 = time.time()
    plan, qb_base = sa.plan(cu, seeds, seed, layer, r, H, sparse)
    plan = plan.numpy()
    bad = rows = 0
    for s, n in enumerate(ls):
        nb = -(-n // 64)
        for i in range(nb):
            for h in range(H):
                want = plan_ref.key_blocks(n, r, sparse, seed, seeds_host[s], layer, h, i)
                row = plan[qb_base[s] + i, h]
                L = int(row[0])
                got = list(range(L)) if row[1] == -1 else row[1:1 + L].tolist()
                if row[1] != -1 and (row[1 + L:] != -1).any():
                    got = None
                bad += got != want
                rows += 1
    check(bad == 0, f"GPU plan vs plan_ref (r={r}, sparse={sparse}): {bad} of {rows} rows differ")
    log(f"GPU plan == CPU plan: {rows} (query block, head) rows, r={r}, sparse={sparse}, seed={seed}, layer={layer}: "
        f"{bad} differ ({time.time() - t0:.1f}s)")


def test_schedule(sa, ls, H, r, C, sort, expect_moved=False):
    cu = torch.tensor(cu_of(ls), dtype=torch.int32, device="cuda")
    srng = random.Random(len(ls) * 1000 + C % 997 + sort)
    seeds_host = [srng.getrandbits(64) for _ in ls]
    seeds = torch.tensor([x_ - (1 << 64) if x_ >= 1 << 63 else x_ for x_ in seeds_host], dtype=torch.int64,
                         device="cuda")
    x = torch.empty((1, H, 8), dtype=torch.float16, device="cuda")
    p = sa.params(x, x, x, x, cu, seeds, 0, 0, r, 1.0, 1, C, sort)
    sa.ws.fill_(-1)
    sa.schedule(p)
    torch.cuda.synchronize()
    check_schedule(sa.ws.cpu().numpy(), ls, H, r, C, sort, expect_moved, sa.m.nsm, seeds_host)


def check_schedule(ws, ls, H, r, C, sort, expect_moved=False, nsm=132, seeds_host=None):
    """The schedule kernel's workspace ws (int32 numpy) against the expected items and order (nsm: the
    device's multiprocessors, for sort 3's lead of nsm x 4 x C block steps)."""
    total, nseg = int(ws[1]), int(ws[2])
    segs = ws[16:16 + 4 * nseg].reshape(nseg, 4)
    # expected items
    thr = (5 + 2 * r) * 64
    want = 0
    for n in ls:
        nb = -(-n // 64)
        if n <= thr:
            want += nb
        else:
            nf, rem = nb // C, nb % C
            want += (nb - 2) + 2 * nf + (2 if rem else 0)
    want *= H
    ok = total == want and ws[0] == 0
    # the segments themselves: each (sequence, kind) with items exactly once, with its count per head
    want_segs = set()
    for s_, n in enumerate(ls):
        nb = -(-n // 64)
        if n <= thr:
            want_segs.add((s_, 0, nb))
        else:
            nf, rem = nb // C, nb % C
            want_segs |= {(s_, 1, nb - 4), (s_, 2, 2)} | ({(s_, 3, 2 * nf)} if nf else set()) | \
                ({(s_, 4, 2)} if rem else set())
    got_segs = [tuple(int(x) for x in sg[:3]) for sg in segs]
    ok &= len(got_segs) == len(set(got_segs)) and set(got_segs) == want_segs
    ok &= (segs[:, 3] == np.concatenate([[0], np.cumsum(segs[:, 2] * H)[:-1]])).all()
    ok &= int((segs[:, 2] * H).sum()) == total
    if seeds_host is not None:
        # each segment's info record: first token, length, request seed (low, high 32 bits)
        cu_h = cu_of(ls)
        off = ws_seginfo_offset(len(ls), H)
        info = ws[off:off + 4 * nseg].reshape(nseg, 4).astype(np.int64) & 0xFFFFFFFF
        want_info = np.array([[cu_h[s_], ls[s_], seeds_host[s_] & 0xFFFFFFFF, seeds_host[s_] >> 32]
                              for s_ in segs[:, 0]], dtype=np.int64).reshape(nseg, 4)
        ok &= bool((info == want_info).all())
    costs = []
    for s_, kind, cnt, _ in segs:
        n = ls[s_]
        nb = -(-n // 64)
        costs.append([nb, 5 + r, 4 + r, C, nb % C][kind])
    def length_bucket(nb):
        if nb < 48:
            return nb
        lg = nb.bit_length() - 1
        return min(63, 48 + 2 * (lg - 5) + ((nb >> (lg - 1)) & 1))

    if sort == 3:
        # mode 2's order (below) with the global-row chunks of its tail moved, in order, to one place P: rebuild
        # mode 2's order from the runs of the other segments and find a P that gives the GPU's order
        rows = [tuple(int(x) for x in sg[:3]) for sg in segs]
        cost_of = {row: c_ for row, c_ in zip(rows, costs)}
        seq_order = []
        for s_, kind, _ in rows:
            if kind not in (3, 4) and s_ not in seq_order:
                seq_order.append(s_)
        ok &= sorted(seq_order) == list(range(len(ls)))
        base = []
        for s_ in seq_order:
            mine = [row for row in rows if row[0] == s_]
            base += sorted(mine, key=lambda row: (-cost_of[row], row[1]))
        lb = [length_bucket(-(-ls[s_] // 64)) for s_ in seq_order]
        ok &= all(x >= y for x, y in zip(lb, lb[1:]))
        found = None
        for P in range(len(base) + 1):
            moved = [row for row in base[P:] if row[1] in (3, 4)]
            if base[:P] + moved + [row for row in base[P:] if row[1] not in (3, 4)] == rows:
                found = (P, len(moved))
                break
        ok &= found is not None
        if found:
            P, nmoved = found
            work = [cost_of[row] * row[2] * H for row in rows]
            after = sum(work[P + nmoved:])
            ok &= nmoved > 0 or not expect_moved
            # tail safety: the moved chunks and what follows them cover the lead, up to one segment's work
            lead = min(sum(work), int(0.9 * nsm * 4 * min(C, 1 << 16)))
            ok &= after + sum(work[P:P + nmoved]) >= lead - max(work)
            log(f"schedule C={C} sort=3: {nmoved} chunk segments moved to position {P} of {len(rows)}; "
                f"{after} block steps follow them ({after / max(1, sum(work)):.1%} of the work)")
    elif sort == 2:
        # one run of segments per sequence, cost-descending inside it, sequences by length bucket, longest first
        order = [int(x) for x in segs[:, 0]]
        runs = [order[0]] + [b_ for a_, b_ in zip(order, order[1:]) if a_ != b_]
        ok &= len(runs) == len(set(runs)) == len(ls)
        for i in range(1, len(order)):
            if order[i] == order[i - 1]:
                ok &= costs[i] <= costs[i - 1]
        lb = [length_bucket(-(-ls[s_] // 64)) for s_ in runs]
        ok &= all(x >= y for x, y in zip(lb, lb[1:]))
    elif sort:
        b = np.minimum(np.array(costs), 63)
        ok &= (np.diff(b) <= 0).all()
    check(ok, f"schedule (C={C}, sort={sort}): total {total} want {want}, or the order is wrong")
    log(f"schedule C={C} sort={sort}: {nseg} segments, {total} items (expected {want}), costs in order: "
        f"{costs[:6]}...{costs[-3:]}")


def make_qkv(T, H, D, dtype, gen):
    qkv = torch.randn((T, 3, H, D), generator=gen, device="cuda", dtype=torch.float32)
    qkv[:, 0] *= 1.5
    return qkv.to(dtype)


def run_case(sa, ls, seeds_host, H, D, dtype, seed, layer, r, gen, rng, sparse=1, split=64, sort=3, nst=2,
             layout="fused", label="", refs=None, qkv=None, check_ref=True, variant="auto", grid=None,
             schedule=True, records=True):
    cu_host = cu_of(ls)
    T = cu_host[-1]
    cu = torch.tensor(cu_host, dtype=torch.int32, device="cuda")
    seeds = torch.tensor([x - (1 << 64) if x >= 1 << 63 else x for x in seeds_host], dtype=torch.int64,
                         device="cuda")
    if qkv is None:
        qkv = make_qkv(T, H, D, dtype, gen)
    if layout == "fused":
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    else:
        q, k, v = (qkv[:, i].contiguous() for i in range(3))
    o2 = torch.empty((T, H * D), dtype=dtype, device="cuda")
    o2.view(torch.int16).fill_(-1)  # 0xFFFF: NaN in fp16 and bf16
    o = o2.view(T, H, D)
    sa.buffers(T, len(ls), H, D, split)
    sa.partial.fill_(float("nan"))
    torch.cuda.synchronize()
    t0 = time.time()
    sa(q, k, v, o, cu, seeds, seed=seed, layer=layer, r=r, sparse=sparse, split=split, sort=sort, nst=nst,
       variant=variant, grid=grid, schedule=schedule, records=records)
    torch.cuda.synchronize()
    tk = time.time() - t0
    finite = bool(torch.isfinite(o2).all())
    check(finite, f"{label}: output has NaN/unwritten elements ({int((~torch.isfinite(o2)).sum())})")
    res = dict(o=o, qkv=qkv, finite=finite, q=q, k=k, v=v, cu=cu_host)
    if not check_ref:
        return res
    if refs is None:
        sel = {s: ref.select_blocks(n, rng) for s, n in enumerate(ls)}
        refs = ref.references(q, k, v, cu_host, seeds_host, seed, layer, r, sparse, D ** -0.5, sel)
    ek, et, per = ref.errors(o, refs)
    res.update(refs=refs, ek=ek, et=et, per=per)
    floor = 2e-3 if dtype == torch.float16 else 1.6e-2
    worst = max(p[2] / max(2 * p[3], floor) for p in per)
    ok = ek <= 2 * et and worst <= 1.0
    check(ok, f"{label}: err {ek:.3e} vs torch {et:.3e}, worst per-seq ratio {worst:.2f}")
    log(f"{label:34s} err {ek:.3e}  torch-{str(dtype)[6:]} {et:.3e}  ratio {ek / et:.2f}  worst seq {worst:.2f}  "
        f"finite {finite}  ({tk * 1e3:.0f} ms incl. launch) {'PASS' if ok else 'FAIL'}")
    return res


def ws_idle(sa, nseq, H):
    """The workspace as a finished call must leave it: ticket counter, its CTA count and every split-row
    semaphore 0 (what lets the next call skip the schedule kernel)."""
    w = sa.ws.cpu()
    sem0 = ws_sem_offset(nseq)
    return int(w[0]) == 0 and int(w[3]) == 0 and not bool(w[sem0:sem0 + 2 * H * nseq].any())


def test_schedule_reuse(sa, ls, seeds_host, H, seed, layer, r, gen, rng, qkv, kname, variant):
    """The engine schedules once per forward: every later layer runs the attention kernel alone on the
    workspace the previous call left. Calls without the schedule kernel (other layers, other seeds, a grid of
    3 CTAs, split C=8 and no split) must give bitwise the outputs of scheduled calls."""
    ok = True
    for split, cases in ((32, ((layer + 1, seed, None), (layer, seed, 3), (0, seed ^ 0x5555, None))),
                         (8, ((layer, seed, None), (layer + 2, seed, 3))),
                         (NOSPLIT, ((layer + 1, seed, None),))):
        # a scheduled call with this split leaves its schedule in the workspace
        run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, layer, r, gen, rng, qkv=qkv, split=split,
                 check_ref=False, variant=variant, label="reuse: scheduled")
        torch.cuda.synchronize()
        ok &= check(ws_idle(sa, len(ls), H), f"{kname}: workspace not idle after a scheduled call (C={split})")
        for lay, sd, grid in cases:
            a = run_case(sa, ls, seeds_host, H, 64, torch.float16, sd, lay, r, gen, rng, qkv=qkv, split=split,
                         grid=grid, schedule=False, check_ref=False, variant=variant, label="reuse: no schedule")
            torch.cuda.synchronize()
            ok &= check(ws_idle(sa, len(ls), H), f"{kname}: workspace not idle after a call without schedule")
            oa = a["o"].clone()
            b = run_case(sa, ls, seeds_host, H, 64, torch.float16, sd, lay, r, gen, rng, qkv=qkv, split=split,
                         grid=grid, check_ref=False, variant=variant, label="reuse: scheduled")
            same = torch.equal(oa.view(torch.int16), b["o"].view(torch.int16))
            ok &= check(same, f"{kname}: C={split} layer {lay} grid {grid}: the call on the reused schedule "
                              f"differs from a scheduled call")
    # the engine's pattern: one scheduled call, then twelve layers in a row on the reused schedule
    run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, 0, r, gen, rng, qkv=qkv, check_ref=False,
             variant=variant, label="reuse: scheduled")
    chain = []
    for lay in range(12):
        a = run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, lay, r, gen, rng, qkv=qkv, schedule=False,
                     check_ref=False, variant=variant, label="reuse: chain")
        chain.append(a["o"].clone())
    torch.cuda.synchronize()
    ok &= check(ws_idle(sa, len(ls), H), f"{kname}: workspace not idle after 12 calls without schedule")
    for lay in (0, 5, 11):
        b = run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, lay, r, gen, rng, qkv=qkv, check_ref=False,
                     variant=variant, label="reuse: scheduled")
        ok &= check(torch.equal(chain[lay].view(torch.int16), b["o"].view(torch.int16)),
                    f"{kname}: layer {lay} of 12 consecutive calls on one schedule differs from a scheduled call")
    del chain
    log(f"{kname} schedule reuse: 6 calls without the schedule kernel (layers, seeds, grid 3, C=32/8/none) and 12 "
        f"in a row, bitwise equal to scheduled calls, workspace idle after each: {'PASS' if ok else 'FAIL'}")


def main():
    t_start = time.time()
    m = Module(log)
    sa = SparseAttention(m)
    log(f"device {torch.cuda.get_device_name()} ({m.arch}, {m.nsm} SMs), torch {torch.__version__}, module: {m.source}")
    rng = random.Random(12345)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(7)

    test_vectors(sa)
    ls = ref.ragged_lengths(rng, extra=[rng.randrange(1, 3000) for _ in range(4)])
    log("batch lengths:", ls, "T =", sum(ls))
    seeds_host = [rng.getrandbits(64) for _ in ls]
    H = 4
    test_plan(sa, ls, seeds_host, H, seed=0x9E3779B97F4A7C15, layer=7, r=3)
    test_plan(sa, ls, seeds_host, H, seed=1, layer=0, r=1)
    test_plan(sa, ls, seeds_host, 2, seed=3, layer=1, r=3, sparse=0)
    for C, sort in ((32, 1), (8, 1), (NOSPLIT, 0), (NOSPLIT, 1), (32, 2), (8, 2), (32, 3), (64, 3), (NOSPLIT, 3)):
        test_schedule(sa, ls, 12, 3, C, sort)
    for C in (32, 64):  # eight equal sequences: the tail's chunks must move
        test_schedule(sa, [4096] * 8, 12, 3, C, 3, expect_moved=True)

    seed, layer, r = 0xDEADBEEF12345678, 3, 3
    results = {}
    kinds = [("mma.sync", "")] + ([("wgmma", "wg")] if m.arch == "sm_90a" else [])
    numeric = set()
    if m.arch == "sm_90a":
        # a name ending in "~" is a variant whose arithmetic differs from wg (checked against the reference,
        # not bitwise against wg)
        named = [v_ for v_ in os.environ.get("RAPTOR_TEST_VARIANTS", "").split(",") if v_]
        kinds += [(f"wgmma {v_.rstrip('~')}", v_.rstrip("~")) for v_ in named]
        numeric = {v_.rstrip("~") for v_ in named if v_.endswith("~")}
    for kname, variant in kinds:
        for dtype in (torch.float16, torch.bfloat16):
            for D in (32, 64, 128):
                if variant.startswith(("wg", "ws")) and D == 32:
                    continue
                res = run_case(sa, ls, seeds_host, H, D, dtype, seed, layer, r, gen, rng, variant=variant,
                               label=f"{kname} {str(dtype)[6:]} D={D} H={H}")
                results[(variant, dtype, D)] = res
                # determinism: same inputs again, bitwise
                o1 = res["o"].clone()
                again = run_case(sa, ls, seeds_host, H, D, dtype, seed, layer, r, gen, rng, qkv=res["qkv"],
                                 check_ref=False, variant=variant, label=f"{kname} {dtype} D={D} rerun")
                check(torch.equal(o1.view(torch.int16), again["o"].view(torch.int16)),
                      f"{kname} {dtype} D={D}: not deterministic")
                if D != 64 or dtype != torch.float16:
                    del res["qkv"], res["refs"]
    for kname, variant in kinds:
        # batch invariance: a sub-batch alone gives bitwise the same rows
        res = results[(variant, torch.float16, 64)]
        sub = [i for i, n in enumerate(ls) if n in (705, 4096, 1, 65)]
        sub_ls = [ls[i] for i in sub]
        sub_qkv = torch.cat([res["qkv"][res["cu"][i]:res["cu"][i + 1]] for i in sub])
        alone = run_case(sa, sub_ls, [seeds_host[i] for i in sub], H, 64, torch.float16, seed, layer, r, gen, rng,
                         qkv=sub_qkv, check_ref=False, variant=variant, label="sub-batch")
        same = torch.equal(torch.cat([res["o"][res["cu"][i]:res["cu"][i + 1]] for i in sub]).view(torch.int16),
                           alone["o"].view(torch.int16))
        check(same, f"{kname}: batch invariance (sub-batch alone differs)")
        log(f"{kname} batch invariance: sequences {sub_ls} alone == in the batch, bitwise: {same}")
        if variant not in WS_CFG:  # the ws kernels do not leave the schedule ready (schedule per call)
            test_schedule_reuse(sa, ls, seeds_host, H, seed, layer, r, gen, rng, res["qkv"], kname, variant)
        # schedule variants, stages, a small persistent grid: each against the reference
        for split, sort, var, grid, lbl in ((NOSPLIT, 1, variant, None, "no split"),
                                            (32, 0, variant, None, "no cost order"),
                                            (32, 1, variant, None, "C=32, cost order"),
                                            (NOSPLIT, 0, variant, None, "no split, no order"),
                                            (8, 1, variant, None, "split C=8"),
                                            (32, 2, variant, None, "by sequence"),
                                            (32, 3, variant, None, "by sequence, tail moved, C=32"),
                                            (32, 1, variant, 3, "3 CTAs in all"),
                                            (32, 1, "wg3" if variant else "s3", None, "3 stages")):
            v = run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, layer, r, gen, rng, split=split, sort=sort,
                         variant=var, grid=grid, qkv=res["qkv"], refs=res["refs"], label=f"{kname} f16 D=64 {lbl}")
            d = (v["o"].float() - res["o"].float()).abs().max().item()
            log(f"    max |diff| vs default schedule: {d:.3e}")
    run_case(sa, ls, seeds_host, H, 128, torch.bfloat16, seed, layer, r, gen, rng, variant="s3",
             label="mma.sync bf16 D=128 3 stages")
    if m.arch == "sm_90a":
        wres = results[("wg", torch.float16, 64)]
        mm = run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, layer, r, gen, rng, qkv=wres["qkv"],
                      check_ref=False, variant="", label="mma.sync on the wgmma inputs")
        log(f"wgmma vs mma.sync, f16 D=64, same inputs: max |diff| "
            f"{(wres['o'].float() - mm['o'].float()).abs().max().item():.3e}")
        # the item records (built with the schedule) against the kernel's own decode and lists: the same bits,
        # for a sparse and a dense model
        for sp_, ls_, h_ in ((1, ls, H), (0, [1, 100, 700, 2000, 4100], 3)):
            sd_ = seeds_host[:len(ls_)]
            a_ = run_case(sa, ls_, sd_, h_, 64, torch.float16, seed, 5, r, gen, rng, sparse=sp_, check_ref=False,
                          variant="wg", qkv=wres["qkv"] if sp_ else None, label="wgmma with item records")
            sets_a = int(sa.ws[4].item())  # the records' validity: sets (0: none)
            b_ = run_case(sa, ls_, sd_, h_, 64, torch.float16, seed, 5, r, gen, rng, sparse=sp_, check_ref=False,
                          variant="wg", qkv=a_["qkv"], records=False, label="wgmma without item records")
            sets_b = int(sa.ws[4].item())
            check(sets_a == (RECORD_LAYERS if sp_ else 0x7FFFFFFF) and sets_b == 0,
                  f"wgmma (sparse={sp_}): record sets {sets_a} with records, {sets_b} without")
            same = torch.equal(a_["o"].view(torch.int16), b_["o"].view(torch.int16))
            check(same, f"wgmma (sparse={sp_}): item records and the kernel's own decode and lists differ")
            log(f"wgmma with and without item records (sparse={sp_}), same inputs: bitwise equal {same}")
        for kname, variant in kinds:
            if variant in ("", "wg"):
                continue
            vv = run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, layer, r, gen, rng, qkv=wres["qkv"],
                          check_ref=False, variant=variant, label=f"{kname} on the wgmma inputs")
            same = torch.equal(vv["o"].view(torch.int16), wres["o"].view(torch.int16))
            if variant not in numeric:
                check(same, f"{kname}: not bitwise equal to the wg kernel on the same inputs")
            log(f"{kname} vs wgmma, f16 D=64, same inputs: bitwise equal {same}, max |diff| "
                f"{(wres['o'].float() - vv['o'].float()).abs().max().item():.3e}")
    # separate contiguous Q/K/V, r = 1, dense model
    for kname, variant in kinds:
        run_case(sa, ls, seeds_host, H, 64, torch.bfloat16, seed, layer, r, gen, rng, layout="separate",
                 variant=variant, label=f"{kname} bf16 D=64 separate Q/K/V")
        run_case(sa, ls, seeds_host, 2, 128, torch.float16, seed, 11, 1, gen, rng, variant=variant,
                 label=f"{kname} f16 D=128 r=1")
        small = [1, 100, 700, 2000, 4100]
        run_case(sa, small, seeds_host[:len(small)], 3, 64, torch.float16, seed, layer, r, gen, rng, sparse=0,
                 variant=variant, label=f"{kname} f16 D=64 dense model")
    log(f"total {time.time() - t_start:.0f}s; {'ALL PASSED' if not FAILS else 'FAILED: ' + '; '.join(FAILS)}")
    return 0 if not FAILS else 1


if __name__ == "__main__":
    sys.exit(main())
