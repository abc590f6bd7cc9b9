"""Where a call of the wgmma kernel spends its time (issue 6): a trace of one
call per workload from the trace variant wgtr (the default kernel plus
globaltimer stamps, kernels/sparse_attention.cu, TR = 1): when each CTA
starts and leaves, and when each work item's block steps end.

Per workload (bench/attention_bench.py's, fp16, 12 heads, D = 64, r = 3, the
default schedule reused) it reports, over 5 traced calls (medians):
  - the span (first CTA start to last CTA end) and the launch ramp (last CTA
    start - first);
  - the tail: how long before the span's end CTAs leave (mean, and what the
    span would be if every CTA left at the mean end time), and per SM, when
    its first and its last CTA leave;
  - item durations (end of an item's steps - end of the CTA's previous item, or
    its start) by key-block count L, per block step, in the first 80% of the
    span and after it;
  - active CTAs over the span in 10 slices.
and times wgtr against wg (the trace's own cost).

    OUT=/tmp python3 bench/attention_trace.py     (on the GPU machine)
"""
import argparse
import ctypes
import os
import random
import statistics
import sys

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "gpu", "attention"))
from sparse_attn import Module, SparseAttention  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from attention_bench import workloads  # noqa: E402
from gpu_timing import bench, tee_log  # noqa: E402

H, D, R = 12, 64, 3
CTAS, TICKETS = 4096, 1 << 17  # kTraceCtas, kTraceTickets
OUT = os.environ.get("OUT", "/tmp")
log = tee_log(os.path.join(OUT, "attention_trace.log"))


class Trace:
    """The module's g_sa_trace: cleared before a call, read after it."""

    def __init__(self, m):
        self.m = m
        self.ptr, size = ctypes.c_uint64(), ctypes.c_size_t()
        # raptor::sparse::g_sa_trace, by its mangled name
        m.drv.check(m.drv.lib.cuModuleGetGlobal_v2(ctypes.byref(self.ptr), ctypes.byref(size), m.mod,
                                                    b"_ZN6raptor6sparse10g_sa_traceE"), "cuModuleGetGlobal g_sa_trace")
        self.n = size.value // 8
        assert self.n == CTAS * 4 + TICKETS * 8, self.n
        self.buf = (ctypes.c_uint64 * self.n)()

    def clear(self):
        self.m.drv.check(self.m.drv.lib.cuMemsetD8_v2(self.ptr, 0, ctypes.c_size_t(self.n * 8)), "cuMemsetD8")
        torch.cuda.synchronize()

    def read(self, ncta, ntk):
        torch.cuda.synchronize()
        self.m.drv.check(self.m.drv.lib.cuMemcpyDtoH_v2(ctypes.byref(self.buf), self.ptr,
                                                         ctypes.c_size_t(self.n * 8)), "cuMemcpyDtoH")
        b = self.buf
        ctas = [(b[4 * c], b[4 * c + 1], b[4 * c + 2] & 0xFFFF, b[4 * c + 2] >> 16, b[4 * c + 3]) for c in range(ncta)]
        base = CTAS * 4
        items = [(b[base + 8 * t], b[base + 8 * t + 1], b[base + 8 * t + 2], b[base + 8 * t + 3] & 0xFFFF,
                  b[base + 8 * t + 3] >> 16, b[base + 8 * t + 4], b[base + 8 * t + 5]) for t in range(ntk)]
        return ctas, items


def analyse(ctas, items):
    """One call's numbers (us) from its trace."""
    t0 = min(c[0] for c in ctas)
    t1 = max(c[1] for c in ctas)
    span = (t1 - t0) / 1e3
    ramp = (max(c[0] for c in ctas) - t0) / 1e3
    ends = [(c[1] - t0) / 1e3 for c in ctas]
    mean_end = statistics.mean(ends)
    per_sm = {}
    for c in ctas:
        per_sm.setdefault(c[2], []).append((c[1] - t0) / 1e3)
    sm_first = statistics.mean(min(v) for v in per_sm.values())
    sm_last = statistics.mean(max(v) for v in per_sm.values())
    # per item: its whole time per block step (its begin to the next item's begin, or the CTA's end), and
    # its parts: the first block's wait (the previous item's epilogue runs in it), the block steps, and the
    # boundary (warp 0's decode and list of the next item, the barrier)
    by_cta = {}
    for ta, tb, tc, cta, L, td, tl in items:
        if ta:
            by_cta.setdefault(cta, []).append((ta, tb, tc, L, td, tl))
    dur, parts = {}, {}
    for cta, lst in by_cta.items():
        lst.sort()
        for i, (ta, tb, tc, L, td, tl) in enumerate(lst):
            if i + 1 == len(lst):
                continue  # the CTA's last item: no next item's boundary
            nxt = lst[i + 1][0]
            late = (tc - t0) / 1e3 > 0.8 * span
            dur.setdefault((L, late), []).append((nxt - ta) / 1e3 / max(L, 1))
            p = [(tb - ta) / 1e3, (tc - tb) / 1e3 / max(L, 1), (nxt - tc) / 1e3]
            if td and tl:  # the boundary's parts: decode, list, barrier
                p += [(td - tc) / 1e3, (tl - td) / 1e3, (nxt - tl) / 1e3]
            parts.setdefault((L, late), []).append(p)
    # active CTAs in 10 slices of the span
    act = []
    for k in range(10):
        a, b = t0 + (t1 - t0) * k / 10, t0 + (t1 - t0) * (k + 1) / 10
        act.append(sum(max(0, min(b, c[1]) - max(a, c[0])) for c in ctas) / (b - a))
    stamps = sorted({c[1] for c in ctas} | {c[0] for c in ctas})
    gran = min((y - x for x, y in zip(stamps, stamps[1:]) if y > x), default=0)
    return dict(span=span, ramp=ramp, mean_end=mean_end, tail=span - mean_end, sm_first=sm_first, sm_last=sm_last,
                dur=dur, parts=parts, act=act, gran=gran, items=sum(c[3] for c in ctas), steps=sum(c[4] for c in ctas))


def report(wname, ls, T, ncta, tv, res, t_wg, t_tr):
    """Logs one traced variant's numbers on one workload; returns its table row."""
    med = lambda key: statistics.median(r[key] for r in res)  # noqa: E731
    r0 = res[len(res) // 2]
    log(f"\n== {wname} ({tv}): {len(ls)} sequences, T={T}; {ncta} CTAs, {r0['items']} items, {r0['steps']} block "
        f"steps ({r0['steps'] / ncta:.1f} per CTA); globaltimer step seen {r0['gran']} ns")
    log(f"  timed (CUDA events): wg {t_wg:.1f} us, {tv} {t_tr:.1f} us ({(t_tr / t_wg - 1) * 100:+.1f}%)")
    log(f"  span {med('span'):.1f} us (traced calls {min(r['span'] for r in res):.1f} .. "
        f"{max(r['span'] for r in res):.1f}); launch ramp {med('ramp'):.2f} us")
    log(f"  CTAs leave at {med('mean_end'):.1f} us on average: the tail costs {med('tail'):.1f} us "
        f"({med('tail') / med('span') * 100:.1f}% of the span); per SM, the first CTA leaves at "
        f"{med('sm_first'):.1f}, the last at {med('sm_last'):.1f}")
    keys = sorted({k for r in res for k in r["dur"]})
    log("  per item length L ('late': ends in the last 20% of the span), medians in us: the item's whole time per "
        "block step | its parts: first block's wait (with the previous item's epilogue) / per block step / "
        "boundary (the next item's decode and list, the barrier) [= decode + list + barrier]")
    for L, late in keys:
        xs = [x for r in res for x in r["dur"].get((L, late), [])]
        ps = [x for r in res for x in r["parts"].get((L, late), [])]
        if len(xs) >= 5 * len(res) or L >= 64:
            line = (f"    L={L}{' late' if late else ''} (n={len(xs) // len(res)}): {statistics.median(xs):.3f} | "
                    + " / ".join(f"{statistics.median(x[i] for x in ps):.3f}" for i in range(3)))
            if all(len(x) == 6 for x in ps):
                line += " [" + " + ".join(f"{statistics.median(x[i] for x in ps):.3f}" for i in range(3, 6)) + "]"
            log(line)
    log("  active CTAs per tenth of the span: " + " ".join(f"{statistics.median(r['act'][i] for r in res):.0f}"
                                                        for i in range(10)))
    return (wname, tv, med("span"), med("tail"), t_wg, t_tr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="wgtr", help="comma-separated trace variants (kernels "
                    "sparse_attention_d64_<name>_f16): wgtr (wg traced), wgeltr (wgel traced)")
    args = ap.parse_args()
    m = Module(log)
    sa = SparseAttention(m)
    tr = Trace(m)
    log(f"device {torch.cuda.get_device_name()} ({m.arch}, {m.nsm} SMs); fp16, H={H}, D={D}, r={R}")
    gen = torch.Generator(device="cuda").manual_seed(11)
    rows = []
    for wname, ls in workloads(random.Random(2026)).items():
        T = sum(ls)
        qkv = torch.randn((T, 3, H, D), generator=gen, device="cuda", dtype=torch.float32).half()
        o = torch.empty((T, H, D), dtype=torch.float16, device="cuda")
        cu = torch.tensor([0] + [sum(ls[:i + 1]) for i in range(len(ls))], dtype=torch.int32, device="cuda")
        seeds = torch.arange(1, len(ls) + 1, dtype=torch.int64, device="cuda")
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        call = dict(seed=5, layer=2, r=R)
        sa(q, k, v, o, cu, seeds, **call)  # leaves the schedule
        ref = o.clone()
        for tv in args.variants.split(","):
            sa(q, k, v, o, cu, seeds, variant=tv, **call)  # leaves the schedule (and a record variant's records)
            _, _, occ = m.attention_config(D, torch.float16, 2, tv)
            ncta = m.nsm * occ
            res = []
            for rep in range(6):
                for _ in range(3):
                    sa(q, k, v, o, cu, seeds, schedule=False, variant=tv, **call)
                tr.clear()
                sa(q, k, v, o, cu, seeds, schedule=False, variant=tv, **call)
                torch.cuda.synchronize()
                if rep == 0:
                    assert torch.equal(o, ref), f"{tv}'s outputs differ from wg's"
                ctas, items = tr.read(ncta, int(sa.ws[1].item()))  # the schedule's tickets
                res.append(analyse(ctas, items))
            # interleaved timing of wg and the traced variant
            tw, tt = [], []
            for _ in range(3):
                tw.append(bench(lambda: sa(q, k, v, o, cu, seeds, schedule=False, **call))[0] * 1e3)
                tt.append(bench(lambda: sa(q, k, v, o, cu, seeds, schedule=False, variant=tv, **call))[0] * 1e3)
            rows.append(report(wname, ls, T, ncta, tv, res, statistics.median(tw), statistics.median(tt)))
    log("\n| workload | traced | span us | tail us | tail % | wg us (events) | traced us (events) |")
    log("|---|---|---|---|---|---|---|")
    for wname, tv, span, tail, t_wg, t_tr in rows:
        log(f"| {wname} | {tv} | {span:.1f} | {tail:.1f} | {tail / span * 100:.1f}% | {t_wg:.1f} | {t_tr:.1f} |")


if __name__ == "__main__":
    main()
