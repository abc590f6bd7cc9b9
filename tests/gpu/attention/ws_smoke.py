"""Quick device check of the warp-specialised variants (ws, ws4) before the full suite: a small ragged
batch, f16/bf16, D = 64/128, each variant against the wg kernel on the same inputs (bitwise, and max |diff|),
output poisoned beforehand. Run under `timeout`: a deadlocked kernel hangs here, not in the suite.

  python3 tests/gpu/attention/ws_smoke.py [variants, default ws,ws4]"""
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sparse_attn import Module, SparseAttention  # noqa: E402


def main():
    variants = (sys.argv[1] if len(sys.argv) > 1 else "ws,ws4").split(",")
    m = Module(print)
    sa = SparseAttention(m)
    print(f"device {torch.cuda.get_device_name()} module {m.source}", flush=True)
    ls = [1, 63, 64, 65, 705, 4096, 5000, 1500]
    cu_host = [0]
    for x in ls:
        cu_host.append(cu_host[-1] + x)
    T, H = cu_host[-1], 4
    cu = torch.tensor(cu_host, dtype=torch.int32, device="cuda")
    seeds = torch.arange(len(ls), dtype=torch.int64, device="cuda") * 7919 + 3
    ok = True
    for dt in (torch.float16, torch.bfloat16):
        for D in (64, 128):
            qkv = torch.randn((T, 3, H, D), device="cuda").to(dt)
            q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
            outs = {}
            for var in ["wg"] + variants:
                o = torch.empty((T, H, D), dtype=dt, device="cuda")
                o.view(torch.int16).fill_(-1)
                t0 = time.time()
                sa(q, k, v, o, cu, seeds, seed=5, layer=2, r=3, variant=var)
                torch.cuda.synchronize()
                outs[var] = o
                fin = bool(torch.isfinite(o).all())
                line = f"{str(dt)[6:]} D={D} {var:4s} finite {fin} ({(time.time() - t0) * 1e3:.0f} ms)"
                if var != "wg":
                    same = torch.equal(o.view(torch.int16), outs["wg"].view(torch.int16))
                    d = (o.float() - outs["wg"].float()).abs().nan_to_num(1e9).max().item()
                    line += f" bitwise==wg {same} max|diff| {d:.3e}"
                    ok = ok and fin and d < 1e-2
                print(line, flush=True)
    print("SMOKE", "PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
