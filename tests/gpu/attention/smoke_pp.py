"""Quick guard for the ping-pong kernel (sparse_attention_d{64,128}_pp_*) before
the full suite: one ragged batch, fp16, D = 64 and 128, against the wgmma
kernel on the same inputs. Exit 0 only if the outputs are finite and close.
Run with a timeout (a barrier mismatch would hang): timeout 60 python3 smoke_pp.py"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sparse_attn import Module, SparseAttention  # noqa: E402


def main():
    m = Module()
    sa = SparseAttention(m)
    if m.arch != "sm_90a":
        print("smoke_pp: not sm_90a, skipped")
        return 1
    ls = [1, 63, 64, 65, 704, 705, 4096, 16384, 3001]
    cu = [0]
    for x in ls:
        cu.append(cu[-1] + x)
    T, H = cu[-1], 4
    cut = torch.tensor(cu, dtype=torch.int32, device="cuda")
    seeds = torch.arange(len(ls), dtype=torch.int64, device="cuda")
    ok = True
    for D in (64, 128):
        qkv = torch.randn((T, 3, H, D), device="cuda").to(torch.float16)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        outs = {}
        for var in ("wg", "pp"):
            o = torch.empty((T, H, D), dtype=torch.float16, device="cuda")
            o.view(torch.int16).fill_(-1)
            sa(q, k, v, o, cut, seeds, seed=5, layer=1, r=3, variant=var)
            torch.cuda.synchronize()
            outs[var] = o
        fin = bool(torch.isfinite(outs["pp"]).all())
        d = (outs["pp"].float() - outs["wg"].float()).abs().max().item()
        good = fin and d < 2e-2
        ok &= good
        print(f"smoke_pp D={D}: finite {fin}, max |pp - wg| {d:.2e}: {'ok' if good else 'BAD'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
