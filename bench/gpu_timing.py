"""GPU timing helpers shared by the benchmarks (bench/attention_bench.py,
bench/attention_rate.py, bench/attention_trace.py, bench/peers.py): CUDA-event
medians after warm-up, and the SM clock and power sampled between timings."""
import statistics
import subprocess

import torch


def tee_log(path):
    """A log function that prints its arguments and appends them to the file path."""
    f = open(path, "w")

    def log(*a):
        s = " ".join(str(x) for x in a)
        print(s, flush=True)
        f.write(s + "\n")
        f.flush()
    return log


def bench(fn, inner=10, reps=15, warm=3, sleep=True):
    """Median ms per call over reps loops of inner back-to-back calls (and the min
    and max loop). A GPU sleep before each loop lets the host queue the calls
    ahead, so host launch overhead stays out of the device time; sleep=False
    times each loop as the host issues it (launch overhead included)."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if sleep:
            torch.cuda._sleep(2_000_000)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / inner)
    return statistics.median(ts), min(ts), max(ts)


def sm_clock():
    """The GPU's current SM clock (MHz) and power draw (W) from nvidia-smi, or None:
    sample it between timings, never inside one (the call idles the GPU briefly)."""
    try:
        out = subprocess.run(["nvidia-smi", "-i", str(torch.cuda.current_device()),
                              "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.strip().split(",")
        return int(float(out[0])), float(out[1])
    except Exception:  # noqa: BLE001
        return None
