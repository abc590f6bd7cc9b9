#!/usr/bin/env python3
"""Times torch.nn.functional.linear on the shapes raptor's GEMM benchmark
(bench/gemm) measured, in the same run on the same GPU, and prints both side
by side.

Usage: gemm_torch.py RAPTOR_JSON [--md OUT.md] [--json OUT.json]

Same method as the Go side: random operands in the same ranges, four input
sets rotated, warm-up, CUDA events around each repetition, median with the
10th and 90th percentiles. For FFN1 (raptor: cuBLASLt GELU+bias epilogue) it
also times F.gelu(F.linear(...), approximate="tanh"), the unfused
equivalent. The 'vs torch' column is torch linear time / raptor time (> 1:
raptor faster).
"""
import argparse
import datetime
import json
import statistics
import sys

import torch
import torch.nn.functional as F

SETS = 4
# --cpu-dry-run checks this script on a machine without a GPU: tiny shapes on
# the CPU, wall-clock timing. Its numbers mean nothing.
DRY = "--cpu-dry-run" in sys.argv
DEVICE = "cpu" if DRY else "cuda"


def time_it(fn, warm, reps):
    if DRY:
        import time
        times = []
        for i in range(reps):
            t0 = time.perf_counter()
            fn(i)
            times.append((time.perf_counter() - t0) * 1e3)
        times.sort()
        return times[len(times) // 2], times[0], times[-1]
    for i in range(warm):
        fn(i)
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(reps):
        start.record()
        fn(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    q = lambda p: times[int(p * (len(times) - 1) + 0.5)]
    return q(0.5), q(0.1), q(0.9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raptor_json", nargs="?")
    ap.add_argument("--torch-json", help="render from an earlier run's --json output instead of timing torch again")
    ap.add_argument("--md")
    ap.add_argument("--json")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--cpu-dry-run", action="store_true")
    ap.add_argument("--extra", action="append", default=[], metavar="LABEL=FILE",
                    help="another raptor JSON (a repeat, another cuBLASLt, -autotune) shown as its own column")
    a = ap.parse_args()
    if a.torch_json:
        rows = []
    else:
        rows = [json.loads(l) for l in open(a.raptor_json) if l.strip()]
    extras = []  # (label, {(dtype, hidden, name, m): row})
    for spec in a.extra:
        label, _, path = spec.partition("=")
        tab = {}
        for l in open(path):
            if l.strip():
                t = json.loads(l)
                if t["kind"] == "gemm":
                    tab[(t["dtype"], t["hidden"], t["name"], t["m"])] = t
        extras.append((label, tab))
    dev = None if a.torch_json else "cpu (dry run)" if DRY else torch.cuda.get_device_name()
    dtypes = {"f16": torch.float16, "bf16": torch.bfloat16}
    gen = None if a.torch_json else torch.Generator(device=DEVICE).manual_seed(0)

    def rand(shape, lo, hi, dt):
        if DRY:
            shape = tuple(max(1, s // 64) for s in shape)
        return (torch.rand(shape, device=DEVICE, generator=gen, dtype=torch.float32) * (hi - lo) + lo).to(dt)

    out = []
    ceilings = {}
    for r in rows:
        if r["kind"] == "ceiling":
            dt = dtypes[r["dtype"]]
            x = rand((8192, 8192), -1, 1, dt)
            w = rand((8192, 8192), -1 / 16, 1 / 16, dt)
            med, p10, p90 = time_it(lambda i: torch.matmul(x, w.t()), a.warmup, a.reps)
            fl = 2.0 * 8192**3
            ceilings[r["dtype"]] = fl / (med * 1e-3)
            out.append(dict(r, torch_ms=med, torch_p10=p10, torch_p90=p90, torch_tflops=fl / med / 1e9))
            del x, w
    for r in rows:
        if r["kind"] != "gemm":
            continue
        dt = dtypes[r["dtype"]]
        m, n, k = r["m"], r["n"], r["k"]
        xs = [rand((m, k), -1, 1, dt) for _ in range(SETS)]
        w = rand((n, k), -1 / 16, 1 / 16, dt)
        b = rand((n,), -1, 1, dt)
        med, p10, p90 = time_it(lambda i: F.linear(xs[i % SETS], w, b), a.warmup, a.reps)
        res = dict(r, torch_ms=med, torch_p10=p10, torch_p90=p90, torch_tflops=r["flops"] / med / 1e9)
        if r["epilogue"] == "gelu_bias":
            g, _, _ = time_it(lambda i: F.gelu(F.linear(xs[i % SETS], w, b), approximate="tanh"), a.warmup, a.reps)
            res["torch_gelu_ms"] = g
            # torch's own fused form: cuBLASLt's GELU+bias epilogue, as raptor uses.
            try:
                wt = w.t()
                f, _, _ = time_it(lambda i: torch._addmm_activation(b, xs[i % SETS], wt, use_gelu=True), a.warmup, a.reps)
                res["torch_fused_gelu_ms"] = f
            except (RuntimeError, AttributeError) as e:
                print("torch._addmm_activation unavailable:", e, file=sys.stderr)
        out.append(res)
        del xs, w, b
        if not DRY:
            torch.cuda.empty_cache()
    for r in rows:
        if r["kind"] != "elementwise":
            continue
        dt = dtypes[r["dtype"]]
        m, h = r["m"], r["hidden"]
        if r["name"].startswith("add_ln"):
            xs = [rand((m, h), -2, 2, dt) for _ in range(SETS)]
            g, b = rand((h,), 0.5, 1.5, dt), rand((h,), -0.5, 0.5, dt)
            fn = lambda i: F.layer_norm(xs[i % SETS] + xs[(i + 1) % SETS], (xs[0].shape[-1],), g, b, 1e-12)
        else:
            xs = [rand((m, 4 * h), -2, 2, dt) for _ in range(SETS)]
            b = rand((4 * h,), -1, 1, dt)
            fn = lambda i: F.gelu(xs[i % SETS] + b)
        med, p10, p90 = time_it(fn, a.warmup, a.reps)
        out.append(dict(r, torch_ms=med, torch_p10=p10, torch_p90=p90))
        del xs
        if not DRY:
            torch.cuda.empty_cache()
    if a.torch_json:
        out = [json.loads(l) for l in open(a.torch_json) if l.strip()]
        rows = [r for r in out if r["kind"] == "copy"]
        dev = out[0].get("device", "?") if out else "?"
    else:
        out += [r for r in rows if r["kind"] == "copy"]
        for r in out:
            r["device"] = dev
    copy = [r for r in rows if r["kind"] == "copy"]

    lines = []
    lines.append(f"Device: {dev}; torch {torch.__version__}; measured "
                 f"{datetime.date.today().isoformat()}; warm-up {a.warmup}, {a.reps} timed reps, median "
                 f"[p10, p90] ms, CUDA events, 4 rotated input sets, random operands.")
    for r in copy:
        lines.append(f"Device-to-device copy: {r['gbs']:.0f} GB/s (read + write).")
    for r in out:
        if r["kind"] == "ceiling":
            lines.append(f"Ceiling {r['dtype']} 8192^3: raptor/cuBLASLt {r['median_ms']:.3f} ms = {r['tflops']:.0f} TFLOP/s; "
                         f"torch.matmul {r['torch_ms']:.3f} ms = {r['torch_tflops']:.0f} TFLOP/s. "
                         f"Floors below use the raptor rate.")
    lines.append("")
    lines.append("| dtype | hidden | GEMM | M | N | K | epilogue | raptor ms [p10, p90] | torch F.linear ms [p10, p90] | vs torch | raptor TFLOP/s | torch TFLOP/s | floor ms | torch linear+gelu ms | torch fused addmm+gelu ms |" +
                 "".join(f" raptor {lab} ms (vs torch) |" for lab, _ in extras))
    lines.append("|---" * (15 + len(extras)) + "|")
    ratios, fratios = [], []
    xratios = [[] for _ in extras]
    for r in out:
        if r["kind"] != "gemm":
            continue
        ratio = r["torch_ms"] / r["median_ms"]
        ratios.append(ratio)
        gelu = f"{r['torch_gelu_ms']:.3f}" if "torch_gelu_ms" in r else ""
        fused = f"{r['torch_fused_gelu_ms']:.3f}" if "torch_fused_gelu_ms" in r else ""
        if fused:
            fratios.append(r["torch_fused_gelu_ms"] / r["median_ms"])
        tcol = ""
        for j, (lab, tab) in enumerate(extras):
            t = tab.get((r["dtype"], r["hidden"], r["name"], r["m"]))
            if t:
                xratios[j].append(r["torch_ms"] / t["median_ms"])
                tcol += f" {t['median_ms']:.3f} ({xratios[j][-1]:.3f}) |"
                r[f"raptor_{lab}_ms"] = t["median_ms"]
            else:
                tcol += " |"
        lines.append(f"| {r['dtype']} | {r['hidden']} | {r['name']} | {r['m']} | {r['n']} | {r['k']} | {r['epilogue']} | "
                     f"{r['median_ms']:.3f} [{r['p10_ms']:.3f}, {r['p90_ms']:.3f}] | "
                     f"{r['torch_ms']:.3f} [{r['torch_p10']:.3f}, {r['torch_p90']:.3f}] | {ratio:.3f} | "
                     f"{r['tflops']:.0f} | {r['torch_tflops']:.0f} | {r['floor_ms']:.3f} | {gelu} | {fused} |{tcol}")
    if ratios:
        lines.append("")
        lines.append(f"vs torch (torch ms / raptor ms): geometric mean {statistics.geometric_mean(ratios):.3f}, "
                     f"min {min(ratios):.3f}, max {max(ratios):.3f}; {sum(1 for x in ratios if x >= 0.95)} of "
                     f"{len(ratios)} shapes within 5% of torch or faster.")
    if fratios:
        lines.append(f"FFN1 (GELU+bias epilogue) vs torch's fused addmm+gelu (torch ms / raptor ms): geometric mean "
                     f"{statistics.geometric_mean(fratios):.3f}, min {min(fratios):.3f}, max {max(fratios):.3f}.")
    for (lab, _), xr in zip(extras, xratios):
        if xr:
            lines.append(f"raptor {lab} vs torch: geometric mean {statistics.geometric_mean(xr):.3f}, "
                         f"min {min(xr):.3f}, max {max(xr):.3f}; {sum(1 for x in xr if x >= 0.95)} of "
                         f"{len(xr)} shapes within 5% of torch or faster.")
    ew = [r for r in out if r["kind"] == "elementwise"]
    if ew:
        lines.append("")
        lines.append("| dtype | hidden | kernel | M | raptor ms | GB/s | torch eager ms |")
        lines.append("|---|---|---|---|---|---|---|")
        for r in ew:
            lines.append(f"| {r['dtype']} | {r['hidden']} | {r['name']} | {r['m']} | {r['median_ms']:.3f} | {r['gbs']:.0f} | {r['torch_ms']:.3f} |")
    text = "\n".join(lines)
    print(text)
    if a.md:
        open(a.md, "w").write(text + "\n")
    if a.json:
        with open(a.json, "w") as f:
            for r in out:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    sys.exit(main())
