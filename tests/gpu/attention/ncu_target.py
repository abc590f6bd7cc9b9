"""Target program for Nsight Compute (tests/gpu/attention/profile_device.sh):
runs one attention implementation on one benchmark workload a few times, so
that ncu can pick one launch with -k/--launch-skip/--launch-count.

  python3 tests/gpu/attention/ncu_target.py raptor 8x4096 [variant] [calls]
  python3 tests/gpu/attention/ncu_target.py flex 8x4096 [calls]

Workloads, lengths, request seeds and inputs are drawn as in
bench/attention_bench.py (same generators, same order), so a profiled launch
is the benchmark's launch. raptor: the schedule kernel then the attention
kernel (sparse_attention_d64_<variant>_f16; variant 'auto' = wg on sm_90a)
per call. flex: the compiled FlexAttention forward (Triton template kernel
triton_tem_*) with the same BlockMask and 64x64 tiles."""
import os
import random
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
os.environ["OUT"] = tempfile.mkdtemp()  # attention_bench opens its log under $OUT at import
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, HERE)
import torch  # noqa: E402

import attention_bench as ab  # noqa: E402


def setup(wanted):
    rng = random.Random(2026)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(11)
    for wname, ls in ab.workloads(rng).items():
        T = sum(ls)
        cu_host = [0]
        for x in ls:
            cu_host.append(cu_host[-1] + x)
        seeds_host = [rng.getrandbits(63) for _ in ls]
        qkv = torch.randn((T, 3, ab.H, ab.D), generator=gen, device="cuda", dtype=torch.float32).to(ab.DT)
        if wname.split()[0] == wanted or wname == wanted:
            return wname, ls, cu_host, seeds_host, qkv
        del qkv
    raise SystemExit(f"no workload {wanted}")


def main():
    what, wanted = sys.argv[1], sys.argv[2]
    seed, layer = 0x243F6A8885A308D3, 5
    wname, ls, cu_host, seeds_host, qkv = setup(wanted)
    T = sum(ls)
    if what == "raptor":
        variant = sys.argv[3] if len(sys.argv) > 3 else "auto"
        calls = int(sys.argv[4]) if len(sys.argv) > 4 else 4
        m = ab.Module(print)
        sa = ab.SparseAttention(m)
        cu = torch.tensor(cu_host, dtype=torch.int32, device="cuda")
        seeds = torch.tensor(seeds_host, dtype=torch.int64, device="cuda")
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        o = torch.empty((T, ab.H, ab.D), dtype=ab.DT, device="cuda")
        name, smem, occ = m.attention_config(ab.D, ab.DT, 2, variant)
        print(f"{wname}: {name}, {smem} B shared, {occ} CTAs/SM, grid {occ * m.nsm}; module {m.source}")
        for _ in range(calls):
            sa(q, k, v, o, cu, seeds, seed=seed, layer=layer, r=ab.R, variant=variant)
        torch.cuda.synchronize()
        print("finite:", bool(torch.isfinite(o).all()))
    elif what == "flex":
        calls = int(sys.argv[3]) if len(sys.argv) > 3 else 4
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
        flex = torch.compile(flex_attention)
        fq, fk, fv, valid, host, rows_t, Tp = ab.flex_inputs(ls, seed, seeds_host, layer, qkv, cu_host)
        t = {k_: torch.from_numpy(v_).to("cuda") for k_, v_ in host.items()}
        kw = dict(BLOCK_SIZE=ab.BLK, mask_mod=lambda b, h, qi, ki: valid[ki], seq_lengths=(Tp, Tp))
        try:
            bm = BlockMask.from_kv_blocks(t["part_num"], t["part_idx"], t["full_num"], t["full_idx"],
                                          compute_q_blocks=False, **kw)
        except TypeError:
            bm = BlockMask.from_kv_blocks(t["part_num"], t["part_idx"], t["full_num"], t["full_idx"], **kw)
        opts = {"BLOCK_M": 64, "BLOCK_N": 64}
        for _ in range(calls):
            fo = flex(fq, fk, fv, block_mask=bm, scale=ab.SCALE, kernel_options=opts)
        torch.cuda.synchronize()
        print(f"{wname}: flex padded T {Tp}, finite: {bool(torch.isfinite(fo).all())}")
    else:
        raise SystemExit("raptor|flex")


if __name__ == "__main__":
    main()
