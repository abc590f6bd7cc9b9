"""Summaries of Nsight Compute exports (profile_device.sh): kernel-level
metrics and warp-stall sample counts from `ncu -i R --page raw --csv`, and
the SASS instructions with the most stall samples from `--page source --csv`.

  python3 ncu_summary.py raw NAME.raw.csv
  python3 ncu_summary.py source NAME.source.csv [top]"""
import csv
import sys

KEYS = [
    "gpu__time_duration.sum", "sm__cycles_elapsed.avg", "smsp__cycles_active.avg",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_active",
    "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active",
    "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
    "smsp__issue_active.avg.pct_of_peak_sustained_active", "smsp__inst_executed.avg.per_cycle_active",
    "smsp__warps_active.avg.per_cycle_active", "smsp__warps_eligible.avg.per_cycle_active",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "smsp__average_warp_latency_per_inst_issued.ratio", "smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio",
    "lts__t_sector_hit_rate.pct", "lts__t_bytes.sum.per_second", "dram__bytes_read.sum",
    "l1tex__data_pipe_lsu_wavefronts_mem_shared.sum", "launch__registers_per_thread", "launch__grid_size",
    "launch__occupancy_limit_shared_mem", "launch__occupancy_limit_registers",
]


def rows(path):
    with open(path, newline="") as f:
        txt = [l for l in f if l.startswith('"')]
    return list(csv.reader(txt))


def raw(path):
    r = rows(path)
    hdr, units, vals = r[0], r[1], r[2:]
    for v in vals:
        d = dict(zip(hdr, v))
        u = dict(zip(hdr, units))
        print(f"## {d.get('Kernel Name', '?')} (ID {d.get('ID', '?')})")
        for k in KEYS:
            if k in d:
                print(f"  {k:78s} {d[k]:>16s} {u.get(k, '')}")
        for tag, end in (("smsp__pcsamp_warps_issue_stalled_", ""),
                         ("smsp__average_warps_issue_stalled_", "_per_issue_active.ratio")):
            st = []
            for k in hdr:
                if k.startswith(tag) and k.endswith(end) and "_not_issued" not in k:
                    try:
                        st.append((float(d[k].replace(",", "")), k))
                    except ValueError:
                        pass
            tot = sum(x for x, _ in st)
            if not st or tot <= 0:
                continue
            st.sort(reverse=True)
            what = "stall samples" if tag.startswith("smsp__pcsamp") else "warp-cycles per issued instruction"
            print(f"  {what} (total {tot:.6g}):")
            for x, k in st[:14]:
                print(f"    {k[len(tag):len(k) - len(end)]:42s} {x:12.6g}  {x / tot:6.1%}")


def source(path, top=30):
    r = rows(path)
    r = r[next(i for i, x in enumerate(r) if "Source" in x):]  # past the "Kernel Name" line
    hdr = r[0]
    col = None
    for name in ("Warp Stall Sampling (All Samples)", "Warp Stall Sampling (All Cycles)"):
        if name in hdr:
            col = hdr.index(name)
            break
    if col is None:
        col = next(i for i, h in enumerate(hdr) if "Stall Sampling" in h)
    src = next((i for i, h in enumerate(hdr) if h in ("Source", "# Source")), 1)
    addr = next((i for i, h in enumerate(hdr) if "Address" in h), 0)
    ex = next((i for i, h in enumerate(hdr) if h.startswith("Instructions Executed")), None)
    body = [x for x in r[1:] if len(x) == len(hdr)]

    def num(s):
        try:
            return float(s.replace(",", ""))
        except ValueError:
            return 0.0
    tot = sum(num(x[col]) for x in body)
    reasons = [(i, h[6:]) for i, h in enumerate(hdr) if h.startswith("stall_") and "(Not Issued)" not in h]
    print(f"{len(body)} SASS lines, {tot:.0f} stall samples ({hdr[col]})")

    def opcode(x):
        w = x[src].split()
        if w and w[0].startswith("@"):
            w = w[1:]
        return w[0].split(".")[0] if w else "?"
    by_op, ex_op, rs_op = {}, {}, {}
    for x in body:
        op = opcode(x)
        by_op[op] = by_op.get(op, 0.0) + num(x[col])
        if ex is not None:
            ex_op[op] = ex_op.get(op, 0.0) + num(x[ex])
        d = rs_op.setdefault(op, {})
        for i, rn in reasons:
            d[rn] = d.get(rn, 0.0) + num(x[i])
    tex = sum(ex_op.values())
    print(f"by opcode: stall samples at the instruction about to issue, top reasons there; warp-level "
          f"instructions executed ({tex:.4g} in all)")
    for op, v in sorted(by_op.items(), key=lambda t: -t[1])[:24]:
        top3 = ", ".join(f"{k} {w:.0f}" for k, w in sorted(rs_op[op].items(), key=lambda t: -t[1])[:3] if w > 0)
        print(f"  {op:14s} {v:8.0f} {v / max(tot, 1):6.1%}  exec {ex_op.get(op, 0):12.0f} "
              f"{ex_op.get(op, 0) / max(tex, 1):6.1%}   [{top3}]")
    print("executed instructions by opcode (top 24):")
    for op, v in sorted(ex_op.items(), key=lambda t: -t[1])[:24]:
        print(f"  {op:14s} {v:12.0f} {v / max(tex, 1):6.1%}")
    print(f"top {top} instructions by stall samples:")
    for x in sorted(body, key=lambda x: -num(x[col]))[:top]:
        top3 = ", ".join(f"{rn} {num(x[i]):.0f}" for i, rn in sorted(reasons, key=lambda t: -num(x[t[0]]))[:3]
                         if num(x[i]) > 0)
        extra = f" exec {x[ex]:>9s}" if ex is not None else ""
        print(f"  {x[addr]:>6s} {num(x[col]):6.0f} {num(x[col]) / max(tot, 1):6.1%}{extra}  {x[src][:60]:60s} [{top3}]")


if __name__ == "__main__":
    if sys.argv[1] == "raw":
        raw(sys.argv[2])
    else:
        source(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 30)
