"""Kernel-alone benchmark of raptor's fused block-sparse attention
(kernels/sparse_attention.cu) against FlexAttention (compiled, BlockMask from
the same plan) and dense FlashAttention-2 varlen, on the same packed batches.
Run on the GPU machine:

  PYTHONUNBUFFERED=1 python3 bench/attention_bench.py [--quick]

BigBird-base attention: H=12, D=64, fp16, b=64, r=3. Workloads: 8 x 4096;
64 lengths uniform in [512, 4096]; long tail (128 sequences, 90% <= 1024,
10% up to 16384); one sequence of 65536. Times are CUDA-event medians of
loops of back-to-back calls after warm-up; TFLOP/s count 4*D flops per
attended (query, key) pair; the tensor-core peak is a measured 8192^3
matmul. The timed configuration is checked against a float64 reference."""
import argparse
import json
import os
import random
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "gpu", "attention"))
import plan_ref  # noqa: E402
import reference as ref  # noqa: E402
from sparse_attn import NOSPLIT, RECORD_LAYERS, WS_CFG, Module, SparseAttention  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_timing import bench, sm_clock, tee_log  # noqa: E402

OUT = os.environ.get("OUT", "/tmp")
log = print  # main() opens the log file (importing this module writes nothing)
H, D, R, BLK = 12, 64, 3, 64
DT = torch.float16
DEV = "cuda"
SCALE = D ** -0.5


def peak_extra(fn):
    """Peak device memory fn allocates beyond what is allocated before, MiB."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def workloads(rng, fixed=False):
    w = {"8x4096": [4096] * 8,
         "64 x U[512,4096]": [rng.randint(512, 4096) for _ in range(64)]}
    lt = [rng.randint(16, 1024) for _ in range(115)] + [rng.randint(1025, 16384) for _ in range(13)]
    rng.shuffle(lt)
    w["long tail (128 seqs)"] = lt
    w["1x65536"] = [65536]
    if fixed:
        w["1x64 (fixed cost)"] = [64]  # one item per head: a call's fixed cost (launch, start, end)
    return w


def attended_pairs(ls, seed, seeds, layer):
    """Exact attended (query, key) pairs summed over heads, dense pairs, and
    the K/V rows the kernel copies into shared memory per call with 64-row
    work items (each item its own key blocks) and with 128-row items (pairs
    of query blocks over the union of their lists: the variant measured and
    removed on 2026-11-25, kernels/NOTES-attention.md). Rows past a
    sequence's end are zero-filled, not read."""
    pairs = dense = rows64 = rows128 = 0
    thr = (5 + 2 * R) * BLK
    for s, n in enumerate(ls):
        dense += n * n * H
        nb = -(-n // BLK)
        if n <= thr:
            pairs += n * n * H
            rows64 += H * nb * n
            rows128 += H * ((nb + 1) // 2) * n
            continue
        last = n - (nb - 1) * BLK
        size = lambda j: last if j == nb - 1 else BLK  # noqa: E731
        pairs += H * (size(0) + size(nb - 1)) * n  # the global rows attend all n keys
        rows64 += H * 2 * n
        rows128 += H * n
        for h in range(H):
            prev = None
            for i in range(1, nb - 1):
                kb = plan_ref.key_blocks(n, R, 1, seed, seeds[s], layer, h, i)
                rows = sum(size(j) for j in kb)
                pairs += BLK * rows
                rows64 += rows
                if i % 2 == 1:  # rows (1, 2), (3, 4), ...; nb-2 alone when nb-2 is odd
                    prev = kb
                    if i == nb - 2:
                        rows128 += rows
                else:
                    rows128 += sum(size(j) for j in set(prev) | set(kb))
    return pairs, dense, rows64, rows128


def l2_probe(nsm):
    """L2 -> shared-memory copy rate of the kernels' K/V tile pattern
    (tests/gpu/attention/l2_probe.cu) on an L2-resident region (one
    4096-token sequence, fused QKV layout), and a device-to-device copy."""
    import ctypes
    pm = Module(log, name="l2_probe", src_dir=os.path.join(ROOT, "tests", "gpu", "attention"))
    T = 4096
    qkv = torch.randn((T, 3, H, D), device="cuda").to(DT)
    k, v = qkv[:, 1], qkv[:, 2]
    out = {}
    iters = 1500
    for nst, thr in ((2, 128), (3, 128), (4, 128), (2, 256)):
        name = f"l2_probe_s{nst}_t{thr}"
        smem = nst * 16384
        f = pm.func(name)
        pm.drv.check(pm.drv.lib.cuFuncSetAttribute(f, 8, smem), "cuFuncSetAttribute")
        occ = ctypes.c_int()
        pm.drv.check(pm.drv.lib.cuOccupancyMaxActiveBlocksPerMultiprocessor(ctypes.byref(occ), f, thr,
                                                                            ctypes.c_size_t(smem)), "occupancy")
        for cps in sorted({occ.value, min(occ.value, 4 if thr == 128 else 2)}):
            grid = nsm * cps
            args = [ctypes.c_void_p(k.data_ptr()), ctypes.c_void_p(v.data_ptr()), ctypes.c_int64(3 * H * D),
                    ctypes.c_int64(D), ctypes.c_int(T // BLK), ctypes.c_int(H), ctypes.c_int(iters)]
            ms, _, _ = bench(lambda: pm.launch(name, grid, thr, smem, args), inner=3, reps=7)
            tbs = grid * iters * 16384 / ms / 1e9
            out[f"{nst} stages, {thr} threads, {cps} CTAs/SM"] = tbs
            log(f"L2 probe: K/V tile pairs, {nst}-stage cp.async ring, {thr} threads, {cps} CTAs/SM "
                f"(grid {grid}): {tbs:.2f} TB/s L2 -> shared")
    del qkv
    a = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    ms, _, _ = bench(lambda: b.copy_(a), inner=3, reps=7)
    out["hbm copy"] = 2 * a.numel() * 4 / ms / 1e9
    log(f"device memory: 1 GiB device-to-device copy {out['hbm copy']:.2f} TB/s (read + write)")
    del a, b
    torch.cuda.empty_cache()
    return out


def flex_inputs(ls, seed, seeds, layer, qkv, cu):
    """Padded layout (each sequence starts on a 64-row boundary), BlockMask
    index tensors from the same plan: full blocks in full_kv_*, the partial
    last block of each sequence in kv_* with a mask_mod on key validity."""
    nbs = [-(-n // BLK) for n in ls]
    NQB = sum(nbs)
    Tp = NQB * BLK
    thr = (5 + 2 * R) * BLK
    full_num = np.zeros((1, H, NQB), np.int32)
    full_idx = np.zeros((1, H, NQB, NQB), np.int32)
    part_num = np.zeros((1, H, NQB), np.int32)
    part_idx = np.zeros((1, H, NQB, NQB), np.int32)
    valid = np.zeros(Tp, bool)
    rows = np.zeros(Tp, np.int64) - 1
    qb0 = 0
    for s, n in enumerate(ls):
        nb = nbs[s]
        valid[qb0 * BLK:qb0 * BLK + n] = True
        rows[qb0 * BLK:qb0 * BLK + n] = np.arange(cu[s], cu[s] + n)
        partial_last = n % BLK != 0
        allb = np.arange(nb)
        for h in range(H):
            for i in range(nb):
                kb = allb if (n <= thr or i in (0, nb - 1)) else np.array(
                    plan_ref.key_blocks(n, R, 1, seed, seeds[s], layer, h, i))
                if partial_last:
                    f = kb[kb != nb - 1]
                    p = kb[kb == nb - 1]
                else:
                    f, p = kb, kb[:0]
                full_num[0, h, qb0 + i] = len(f)
                full_idx[0, h, qb0 + i, :len(f)] = f + qb0
                part_num[0, h, qb0 + i] = len(p)
                part_idx[0, h, qb0 + i, :len(p)] = p + qb0
        qb0 += nb
    dev = DEV
    rows_t = torch.from_numpy(rows).to(dev)
    sel = rows_t >= 0
    qkvp = torch.zeros((Tp, 3, H, D), dtype=DT, device=dev)
    qkvp[sel] = qkv[rows_t[sel]]
    q, k, v = (qkvp[:, i].permute(1, 0, 2).unsqueeze(0).contiguous() for i in range(3))
    host = dict(full_num=full_num, full_idx=full_idx, part_num=part_num, part_idx=part_idx)
    return q, k, v, torch.from_numpy(valid).to(dev), host, rows_t, Tp


# --ab: schedule configurations compared in interleaved rounds, all on a reused schedule (sort 1: cost order,
# 2: by sequence, 3: by sequence with the tail's global-row chunks moved ahead)
AB_CONFIGS = [("C=32, cost order", dict(split=32, sort=1)), ("C=64, cost order", dict(split=64, sort=1)),
              ("no split, cost order", dict(split=NOSPLIT, sort=1)),
              ("C=32, by sequence, tail moved", dict(split=32, sort=3)),
              ("C=64, by sequence, tail moved", dict(split=64, sort=3)),
              ("C=64, by sequence", dict(split=64, sort=2))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--no-probe", action="store_true")
    ap.add_argument("--variant", default="auto", help="kernel of the headline numbers: auto (wgmma on sm_90a) or mma")
    ap.add_argument("--ab", type=int, default=0, metavar="ROUNDS",
                    help="also time the schedule configurations of AB_CONFIGS (schedule reused) interleaved, in "
                    "ROUNDS rounds with a rotating start, and report the median over rounds; and time raptor "
                    "(schedule reused) and Flex (mask built once) head to head, alternated in an even number of "
                    "rounds (at least ROUNDS), with the SM clock and power between rounds")
    ap.add_argument("--fixed", action="store_true",
                    help="add a workload of one 64-token sequence: what a call costs whatever its work")
    ap.add_argument("--extra", default="", help="comma-separated wgmma kernel variants timed beside the default "
                    "(sm_90a; kernels sparse_attention_d64_<name>_f16)")
    args = ap.parse_args()
    global log
    log = tee_log(os.path.join(OUT, "attention_bench.log"))
    t_start = time.time()
    m = Module(log)
    sa = SparseAttention(m)
    dev = torch.cuda.get_device_name()
    log(f"device {dev} ({m.arch}, {m.nsm} SMs), torch {torch.__version__}, module: {m.source}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
    extra = [x for x in args.extra.split(",") if x] if args.variant == "auto" and m.arch == "sm_90a" else []
    # --ab also compares each --extra kernel variant on the default schedule, in the same rounds (not the ws
    # kernels: they need the schedule kernel before every call)
    ab_configs = AB_CONFIGS + [(f"variant {x}", dict(variant=x)) for x in extra if x not in WS_CFG]
    for nst, var in (((2, "auto"), (2, "wg3"), (2, ""), (3, "")) + tuple((2, x) for x in extra)
                     if args.variant == "auto" else ((2, ""),)):
        name, smem, occ = m.attention_config(D, DT, nst, var)
        log(f"{name}: {smem} B shared, {occ} CTAs/SM resident -> persistent grid {occ * m.nsm}")
    probe = l2_probe(m.nsm) if m.arch == "sm_90a" and not args.no_probe else {}

    # measured tensor-core peak
    peak = {}
    for dt in (torch.float16, torch.bfloat16):
        a = torch.randn(8192, 8192, device="cuda", dtype=dt)
        b = torch.randn(8192, 8192, device="cuda", dtype=dt)
        ms, _, _ = bench(lambda: torch.matmul(a, b), inner=5, reps=10)
        peak[dt] = 2 * 8192 ** 3 / ms / 1e9
        del a, b
    log(f"matmul 8192^3: fp16 {peak[torch.float16]:.0f} TFLOP/s, bf16 {peak[torch.bfloat16]:.0f} TFLOP/s")
    P = peak[DT]

    rng = random.Random(2026)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(11)
    flex = None
    if not args.no_flex:
        try:
            from torch.nn.attention.flex_attention import BlockMask, flex_attention
            torch._dynamo.config.cache_size_limit = 64
            flex = torch.compile(flex_attention)
        except Exception as e:  # noqa: BLE001
            log("FlexAttention unavailable:", repr(e))
    results = []
    seed, layer = 0x243F6A8885A308D3, 5
    for wname, ls in workloads(rng, args.fixed).items():
        if args.quick and wname.startswith("long"):
            continue
        T = sum(ls)
        cu_host = [0]
        for x in ls:
            cu_host.append(cu_host[-1] + x)
        seeds_host = [rng.getrandbits(63) for _ in ls]
        cu = torch.tensor(cu_host, dtype=torch.int32, device="cuda")
        seeds = torch.tensor(seeds_host, dtype=torch.int64, device="cuda")
        qkv = torch.randn((T, 3, H, D), generator=gen, device="cuda", dtype=torch.float32).to(DT)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        o = torch.empty((T, H * D), dtype=DT, device="cuda")
        o3 = o.view(T, H, D)
        pairs, dense_pairs, rows64, rows128 = attended_pairs(ls, seed, seeds_host, layer)
        flop = 4 * D * pairs
        qo_bytes = 2 * T * H * D * 2
        bytes64 = rows64 * 2 * D * 2 + qo_bytes  # K and V rows, plus Q read and O written once
        bytes128 = rows128 * 2 * D * 2 + qo_bytes
        row = dict(workload=wname, nseq=len(ls), T=T, pairs=pairs, dense_pairs=dense_pairs, bytes64=bytes64,
                   bytes128=bytes128)
        log(f"\n== {wname}: {len(ls)} sequences, T={T}, attended pairs {pairs / 1e9:.3f} G "
            f"({pairs / dense_pairs:.1%} of dense)")
        log(f"  L2 -> shared bytes per call: {bytes64 / 1e9:.3f} GB (K/V of each item's key blocks, Q+O "
            f"{qo_bytes / 1e9:.3f} GB); 128-row items over the union of two lists would copy "
            f"{bytes128 / 1e9:.3f} GB ({bytes128 / bytes64 - 1:+.1%})")

        main_variant = "" if args.variant == "mma" else "auto"

        def mine(split=64, sort=3, nst=2, variant=main_variant, schedule=True):
            return lambda: sa(q, k, v, o3, cu, seeds, seed=seed, layer=layer, r=R, split=split, sort=sort, nst=nst,
                              variant=variant, schedule=schedule)

        # "schedule reused": the attention kernel alone on the schedule a scheduled call left in the workspace,
        # as the engine runs every layer after a forward's first (the schedule depends only on cu_seqlens)
        # (the default: C = 64, by sequence with the tail's chunks moved ahead, sort 3; "C=32, cost order" was
        # the default before 2026-12-04)
        variants = [("raptor", dict()), ("raptor, schedule reused", dict(schedule=False)),
                    ("raptor C=32 cost order, reused", dict(split=32, sort=1, schedule=False)),
                    ("raptor C=32 cost order", dict(split=32, sort=1)), ("raptor cost order", dict(sort=1)),
                    ("raptor C=16", dict(split=16)), ("raptor C=32", dict(split=32)),
                    ("raptor no split", dict(split=NOSPLIT)), ("raptor no cost order", dict(sort=0)),
                    ("raptor no split, no order", dict(split=NOSPLIT, sort=0)),
                    ("raptor wgmma 3 stages", dict(variant="wg3")),
                    ("mma.sync", dict(variant="")), ("mma.sync 3 stages", dict(variant="s3")),
                    ("mma.sync no split, no order", dict(variant="", split=NOSPLIT, sort=0))]
        if args.variant == "mma":
            variants = [v_ for v_ in variants if not v_[0].startswith(("raptor wgmma", "mma.sync"))]
        variants[1:1] = [(f"raptor {x}", dict(variant=x)) for x in extra]
        for vname, kw in variants:
            o.view(torch.int16).fill_(-1)
            if kw.get("schedule") is False:
                mine(**dict(kw, schedule=True))()  # leaves this configuration's schedule in the workspace
            ms, lo, hi = bench(mine(**kw))
            row[vname] = ms
            log(f"  {vname:28s} {ms * 1e3:9.1f} us  (min {lo * 1e3:.1f}, max {hi * 1e3:.1f})  "
                f"{flop / ms / 1e9:6.1f} TFLOP/s  {flop / ms / 1e9 / P:5.1%} of peak  "
                f"{bytes64 / ms / 1e9:5.2f} TB/s L2->smem")
        # interleaved rounds over the schedule configurations (each after one scheduled call of its own)
        if args.ab:
            got = {name: [] for name, _ in ab_configs}
            for rnd in range(args.ab):
                for j in range(len(ab_configs)):
                    name, kw = ab_configs[(j + rnd) % len(ab_configs)]
                    mine(**kw)()
                    got[name].append(bench(mine(schedule=False, **kw), reps=7)[0])
            # the outputs of every configuration with the default's C, bitwise against the default's (the order
            # of the items changes nothing in any item's arithmetic; another C splits rows differently)
            mine()()
            o_def = o3.clone()
            bad = []
            for name, kw in ab_configs:
                if kw.get("split", 64) != 64:
                    continue
                o.view(torch.int16).fill_(-1)
                mine(**kw)()
                torch.cuda.synchronize()
                if not torch.equal(o_def.view(torch.int16), o3.view(torch.int16)):
                    bad.append(name)
            del o_def
            row["ab bitwise"] = not bad
            log(f"  ab configurations with C = 64 bitwise equal to the default: {not bad}"
                + (f" (not: {bad})" if bad else ""))
            for name, _ in ab_configs:
                ts = got[name]
                row["ab " + name] = statistics.median(ts)
                log(f"  ab {name:32s} {statistics.median(ts) * 1e3:9.1f} us  (round medians {min(ts) * 1e3:.1f} .. "
                    f"{max(ts) * 1e3:.1f}, {len(ts)} rounds)")
        # the same configuration again, to show the spread between identical runs
        row["raptor (again)"], _, _ = bench(mine())
        log(f"  {'raptor (again)':28s} {row['raptor (again)'] * 1e3:9.1f} us")
        # the timed reuse configuration gives bitwise the scheduled call's outputs
        mine()()
        o_s = o3.clone()
        o.view(torch.int16).fill_(-1)
        mine(schedule=False)()
        torch.cuda.synchronize()
        row["reuse bitwise"] = bool(torch.equal(o_s.view(torch.int16), o3.view(torch.int16)))
        log(f"  schedule reused: outputs bitwise equal to the scheduled call: {row['reuse bitwise']}")
        del o_s
        # schedule kernel alone
        pp = sa.params(q, k, v, o3, cu, seeds, seed, layer, R, SCALE, 1, 32, 1)
        row["schedule kernel C=32 cost order"], _, _ = bench(lambda: sa.schedule(pp), inner=20)
        pp = sa.params(q, k, v, o3, cu, seeds, seed, layer, R, SCALE, 1, 64, 2)
        row["schedule kernel C=64 by sequence"], _, _ = bench(lambda: sa.schedule(pp), inner=20)
        pp = sa.params(q, k, v, o3, cu, seeds, seed, layer, R, SCALE, 1, 64, 3)
        row["schedule kernel"], _, _ = bench(lambda: sa.schedule(pp), inner=20)
        log(f"  {'(schedule kernel alone)':28s} {row['schedule kernel'] * 1e3:9.1f} us (C=32 in cost order: "
            f"{row['schedule kernel C=32 cost order'] * 1e3:.1f} us, C=64 by sequence, no move: "
            f"{row['schedule kernel C=64 by sequence'] * 1e3:.1f} us)")
        if main_variant == "auto" and m.arch == "sm_90a":
            # the item records the wgmma kernel reads, built with the schedule for RECORD_LAYERS layers (once per
            # forward, as the schedule: the per-call "raptor" row pays both, "schedule reused" neither)
            row["schedule + records"], _, _ = bench(lambda: (sa.schedule(pp), sa.items(pp, T, 64)), inner=20)
            rec_us = (row["schedule + records"] - row["schedule kernel"]) * 1e3
            log(f"  {'(schedule + item records)':28s} {row['schedule + records'] * 1e3:9.1f} us (the records of "
                f"{RECORD_LAYERS} layers, once per forward: {rec_us:.1f} us, {rec_us / RECORD_LAYERS:.2f} us per layer)")
        row["raptor ws MiB"] = (sa.ws.numel() + sa.partial.numel()) * 4 / 2 ** 20
        log(f"  {'(workspace + partials)':28s} {row['raptor ws MiB']:9.1f} MiB (allocated once, reused)")
        # correctness of the timed configuration (default), sampled rows
        o.view(torch.int16).fill_(-1)
        mine()()
        torch.cuda.synchronize()
        finite = bool(torch.isfinite(o).all())
        crng = random.Random(5)
        chk = sorted(crng.sample(range(len(ls)), min(3, len(ls))))
        sel = {s: ref.select_blocks(ls[s], crng, full_upto=1024, extra=6) for s in chk}
        refs = ref.references(q, k, v, cu_host, seeds_host, seed, layer, R, 1, SCALE, sel)
        ek, et, _ = ref.errors(o3, refs)
        row.update(err=ek, err_torch=et, finite=finite)
        log(f"  check: all {T * H * D} outputs finite: {finite}; rel err {ek:.2e} vs float64 "
            f"(torch fp16 masked-dense: {et:.2e}) on {sum(len(x[0]) for x in refs.values())} rows of seqs {chk}")

        # FA2 varlen, dense, on the same packed batch
        try:
            qc, kc, vc = q.contiguous(), k.contiguous(), v.contiguous()
            mx = max(ls)

            def fa2():
                return torch.ops.aten._flash_attention_forward(qc, kc, vc, cu, cu, mx, mx, 0.0, False, False,
                                                               scale=SCALE)
            ms, lo, hi = bench(fa2)
            row["fa2"] = ms
            row["fa2 mem MiB"] = peak_extra(fa2)
            log(f"  {'FA2 varlen (dense)':28s} {ms * 1e3:9.1f} us  dense {4 * D * dense_pairs / ms / 1e9:6.1f} "
                f"TFLOP/s; raptor speedup {ms / row['raptor']:.2f}x")
            del qc, kc, vc
        except Exception as e:  # noqa: BLE001
            log("  FA2 varlen failed:", repr(e))
        # FlexAttention
        if flex is not None:
            try:
                t0 = time.time()
                fq, fk, fv, valid, host, rows_t, Tp = flex_inputs(ls, seed, seeds_host, layer, qkv, cu_host)
                log(f"  flex inputs built on the host in {time.time() - t0:.1f}s (padded T {Tp})")
                mask_mod = lambda b, h, qi, ki: valid[ki]  # noqa: E731

                def upload():
                    return {k_: torch.from_numpy(v_).to("cuda", non_blocking=False) for k_, v_ in host.items()}

                def build(t):
                    kw = dict(BLOCK_SIZE=BLK, mask_mod=mask_mod, seq_lengths=(Tp, Tp))
                    try:
                        return BlockMask.from_kv_blocks(t["part_num"], t["part_idx"], t["full_num"], t["full_idx"],
                                                        compute_q_blocks=False, **kw)
                    except TypeError:
                        return BlockMask.from_kv_blocks(t["part_num"], t["part_idx"], t["full_num"], t["full_idx"],
                                                        **kw)
                dev_idx = upload()
                bm = build(dev_idx)
                opts = {"BLOCK_M": 64, "BLOCK_N": 64}
                t0 = time.time()
                fo = flex(fq, fk, fv, block_mask=bm, scale=SCALE, kernel_options=opts)
                torch.cuda.synchronize()
                log(f"  flex compile+first call {time.time() - t0:.1f}s")
                ms, lo, hi = bench(lambda: flex(fq, fk, fv, block_mask=bm, scale=SCALE, kernel_options=opts))
                row["flex"] = ms
                row["flex mem MiB"] = peak_extra(lambda: flex(fq, fk, fv, block_mask=bm, scale=SCALE,
                                                              kernel_options=opts))
                msb, _, _ = bench(lambda: flex(fq, fk, fv, block_mask=build(dev_idx), scale=SCALE,
                                               kernel_options=opts), inner=3, reps=7)
                msu, _, _ = bench(lambda: flex(fq, fk, fv, block_mask=build(upload()), scale=SCALE,
                                               kernel_options=opts), inner=3, reps=7)
                row["flex+build"] = msb
                row["flex+upload+build"] = msu
                log(f"  {'FlexAttention':28s} {ms * 1e3:9.1f} us  {flop / ms / 1e9:6.1f} TFLOP/s; "
                    f"raptor speedup {ms / row['raptor']:.2f}x")
                log(f"  {'Flex + from_kv_blocks':28s} {msb * 1e3:9.1f} us; raptor speedup {msb / row['raptor']:.2f}x")
                log(f"  {'Flex + upload + build':28s} {msu * 1e3:9.1f} us; raptor speedup {msu / row['raptor']:.2f}x")
                # Flex correctness on the same sampled rows
                fo = flex(fq, fk, fv, block_mask=bm, scale=SCALE, kernel_options=opts)[0].permute(1, 0, 2)
                back = torch.empty((T, H, D), dtype=DT, device="cuda")
                sel_ = rows_t >= 0
                back[rows_t[sel_]] = fo[sel_]
                fek, _, _ = ref.errors(back, refs)
                row["flex err"] = fek
                log(f"  flex rel err {fek:.2e} on the same rows")
                # head to head: raptor (schedule reused, as in every layer after the first) and Flex (mask built
                # once) alternated in the same rounds, who goes first alternating, so that the GPU's clock, which
                # falls as a workload's timings go on, weighs on both alike; the clock is sampled between rounds
                if args.ab:
                    hh = {"raptor": [], "flex": []}
                    clocks = []
                    for rnd in range(2 * max((args.ab + 1) // 2, 2)):  # even: each order equally often
                        for who in (("raptor", "flex") if rnd % 2 == 0 else ("flex", "raptor")):
                            if who == "raptor":
                                mine()()
                                hh[who].append(bench(mine(schedule=False), reps=7)[0])
                            else:
                                hh[who].append(bench(lambda: flex(fq, fk, fv, block_mask=bm, scale=SCALE,
                                                                  kernel_options=opts), reps=7)[0])
                        clocks.append(sm_clock())
                        log(f"    round {rnd} ({'raptor first' if rnd % 2 == 0 else 'Flex first'}): raptor "
                            f"{hh['raptor'][-1] * 1e3:.1f} us, Flex {hh['flex'][-1] * 1e3:.1f} us, Flex / raptor "
                            f"{hh['flex'][-1] / hh['raptor'][-1]:.3f}"
                            + (f"; then {clocks[-1][0]} MHz, {clocks[-1][1]:.0f} W" if clocks[-1] else ""))
                    ratios = [f_ / r_ for f_, r_ in zip(hh["flex"], hh["raptor"])]
                    row["h2h raptor"] = statistics.median(hh["raptor"])
                    row["h2h flex"] = statistics.median(hh["flex"])
                    row["h2h ratio"] = statistics.median(ratios)
                    row["h2h ratio range"] = (min(ratios), max(ratios))
                    row["h2h clocks"] = clocks
                    ck = [c_ for c_ in clocks if c_]
                    log(f"  head to head ({len(ratios)} rounds): raptor reused {row['h2h raptor'] * 1e3:.1f} us, "
                        f"Flex {row['h2h flex'] * 1e3:.1f} us, Flex / raptor {row['h2h ratio']:.3f} (ratio of the "
                        f"medians {row['h2h flex'] / row['h2h raptor']:.3f}; rounds "
                        f"{min(ratios):.3f} .. {max(ratios):.3f})"
                        + (f"; SM clock {min(c_[0] for c_ in ck)}-{max(c_[0] for c_ in ck)} MHz, "
                           f"{min(c_[1] for c_ in ck):.0f}-{max(c_[1] for c_ in ck):.0f} W between rounds"
                           if ck else ""))
                del fq, fk, fv, bm, dev_idx, fo, back
            except Exception as e:  # noqa: BLE001
                log("  FlexAttention failed:", repr(e)[:2000])
        row["tflops"] = flop / row["raptor"] / 1e9
        row["peak_share"] = row["tflops"] / P
        results.append(row)
        del qkv, q, k, v, o, o3
        torch.cuda.empty_cache()

    log(f"\n{dev}; fp16, H={H}, D={D}, b={BLK}, r={R}; matmul peak fp16 {P:.0f} TFLOP/s; medians, us")
    if probe:
        log("L2 probe (TB/s, L2 -> shared): " + "; ".join(f"{k_}: {v_:.2f}" for k_, v_ in probe.items()))
    hdr = ("workload", "raptor", "TFLOP/s", "%peak", "no split+order", "mma.sync", "Flex", "Flex+build", "FA2 dense",
           "vs Flex", "vs Flex+build", "vs FA2")
    log("| " + " | ".join(hdr) + " |")
    log("|" + "---|" * len(hdr))
    for r_ in results:
        f = r_.get("flex")
        fb = r_.get("flex+build")
        fa = r_.get("fa2")
        cells = [r_["workload"], f"{r_['raptor'] * 1e3:.0f}", f"{r_['tflops']:.0f}", f"{r_['peak_share']:.0%}",
                 f"{r_['raptor no split, no order'] * 1e3:.0f}",
                 f"{r_['mma.sync'] * 1e3:.0f}" if r_.get("mma.sync") else "-",
                 f"{f * 1e3:.0f}" if f else "-", f"{fb * 1e3:.0f}" if fb else "-", f"{fa * 1e3:.0f}" if fa else "-",
                 f"{f / r_['raptor']:.2f}x" if f else "-", f"{fb / r_['raptor']:.2f}x" if fb else "-",
                 f"{fa / r_['raptor']:.2f}x" if fa else "-"]
        log("| " + " | ".join(cells) + " |")
    log("Schedule reused (the engine's layers after the first; Flex without its mask build): " + "; ".join(
        f"{r_['workload']}: {r_['raptor, schedule reused'] * 1e3:.0f} us"
        + (f" ({r_['flex'] / r_['raptor, schedule reused']:.2f}x Flex)" if r_.get("flex") else "")
        + f"; before (C=32, cost order) {r_['raptor C=32 cost order, reused'] * 1e3:.0f} us"
        + (f" ({r_['flex'] / r_['raptor C=32 cost order, reused']:.2f}x)" if r_.get("flex") else "")
        for r_ in results))
    if args.ab and any(r_.get("h2h ratio") for r_ in results):
        log("Head to head, raptor (schedule reused) and Flex (mask built once) alternated in the same rounds "
            "(median us; Flex / raptor: median of the rounds' ratios, and their range):")
        log("| workload | raptor | Flex | Flex / raptor | ratio of the medians | rounds |")
        log("|---|---|---|---|---|---|")
        for r_ in results:
            if r_.get("h2h ratio"):
                lo_, hi_ = r_["h2h ratio range"]
                log(f"| {r_['workload']} | {r_['h2h raptor'] * 1e3:.1f} | {r_['h2h flex'] * 1e3:.1f} | "
                    f"{r_['h2h ratio']:.3f}x | {r_['h2h flex'] / r_['h2h raptor']:.3f}x | {lo_:.3f} .. {hi_:.3f} |")
    if args.ab:
        log("Schedule configurations, interleaved (" + str(args.ab) + " rounds; median us, vs Flex without its mask "
            "build):")
        log("| configuration | " + " | ".join(r_["workload"] for r_ in results) + " |")
        log("|---|" + "---|" * len(results))
        for name, _ in ab_configs:
            log(f"| {name} | " + " | ".join(
                f"{r_['ab ' + name] * 1e3:.0f}" + (f" ({r_['flex'] / r_['ab ' + name]:.2f}x)" if r_.get("flex") else "")
                for r_ in results) + " |")
    for x in extra:
        log(f"variant {x} vs the default (raptor / raptor again): " + "; ".join(
            f"{r_['workload']}: {r_['raptor ' + x] * 1e3:.0f} us ({r_['raptor ' + x] / r_['raptor'] - 1:+.1%} / "
            f"{r_['raptor ' + x] / r_['raptor (again)'] - 1:+.1%})" for r_ in results))
    json.dump(dict(device=dev, peak=P, probe=probe, results=results),
              open(os.path.join(OUT, "attention_bench.json"), "w"), indent=1, default=str)
    log(f"bench total {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
