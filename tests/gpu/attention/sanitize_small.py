"""The attention kernels (kernels/sparse_attention.cu) on small shapes, for
compute-sanitizer (tests/gpu/run.sh --sanitize runs this under memcheck and
racecheck, filtered to the sparse_attention* kernels):

  compute-sanitizer --tool racecheck --kernel-name kns=sparse_attention \\
      python3 tests/gpu/attention/sanitize_small.py

The same checks as test_attention.py (the plan and the work list against the
Python port, outputs against the float64 reference, fully written and finite)
on one ragged batch of short sequences (1, b-1, b, b+1, 3b+7 and two past the
sparse threshold (5+2r)b), for mma.sync (and wgmma on sm_90a), fp16 D=64,
bf16 D=128 and fp16 D=32, the 3-stage variant, a dense model. Exit status 0
only if everything passed."""
import os
import random
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_attention as ta  # noqa: E402
from reference import BLOCK  # noqa: E402


def main():
    m = ta.Module(ta.log)
    sa = ta.SparseAttention(m)
    ta.log(f"device {torch.cuda.get_device_name()} ({m.arch}), module: {m.source}")
    rng = random.Random(99)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(3)
    b, r = BLOCK, 3
    thr = (5 + 2 * r) * b
    ls = [1, b - 1, b, b + 1, 3 * b + 7, thr + 1, thr + b + 3]
    rng.shuffle(ls)
    seeds_host = [rng.getrandbits(64) for _ in ls]
    ta.log("batch lengths:", ls, "T =", sum(ls))
    H = 2
    ta.test_vectors(sa)
    ta.test_plan(sa, ls, seeds_host, H, seed=0x9E3779B97F4A7C15, layer=7, r=r)
    ta.test_schedule(sa, ls, H, r, 32, 1)
    seed, layer = 0xDEADBEEF12345678, 3
    kinds = [("mma.sync", "")] + ([("wgmma", "wg")] if m.arch == "sm_90a" else [])
    for kname, variant in kinds:
        for dtype, D in ((torch.float16, 64), (torch.bfloat16, 128), (torch.float16, 32)):
            if variant == "wg" and D == 32:
                continue
            ta.run_case(sa, ls, seeds_host, H, D, dtype, seed, layer, r, gen, rng, variant=variant,
                        label=f"{kname} {str(dtype)[6:]} D={D} H={H}")
        ta.run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, layer, r, gen, rng,
                    variant="wg3" if variant else "s3", label=f"{kname} f16 D=64 3 stages")
        ta.run_case(sa, ls, seeds_host, H, 64, torch.float16, seed, layer, r, gen, rng, sparse=0,
                    variant=variant, label=f"{kname} f16 D=64 dense model")
    ta.log("sanitize_small:", "ALL PASSED" if not ta.FAILS else "FAILED: " + "; ".join(ta.FAILS))
    return 0 if not ta.FAILS else 1


if __name__ == "__main__":
    sys.exit(main())
