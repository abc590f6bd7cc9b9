"""raptor vs PyTorch peers on BigBird-base (12 layers, hidden 768, 12 heads) and BigBird-large
(24 layers, hidden 1024, 16 heads), fp16, random weights (the model of each workload is named in
RAPTOR_JSON).

Usage (on the GPU machine, through tests/gpu/run.sh or directly):
    python3 bench/peers.py RAPTOR_JSON [--md OUT.md] [--json OUT.json]

RAPTOR_JSON is written by the Go test TestGPUBenchE2E (engine/gpu_e2e_test.go,
RAPTOR_BENCH_OUT=...): raptor's device time (CUDA events, first to last kernel
of a batch: embeddings, 12 layers, fp32 output conversion) and its workloads'
exact lengths, which the peers below use too. Peers (ARCHITECTURE.md, "Peers,
measured"), each a full encoder forward on the same lengths:
  hf_bigbird    HF BigBirdModel(attention_type="block_sparse"), padded batch + attention mask
  fa2_padded    dense FlashAttention-2 (SDPA flash backend) on the padded batch, no mask
  fa2_varlen    aten._flash_attention_forward on the packed batch, elementwise ops torch.compile'd
  flex_bigbird  FlexAttention with a BigBird block mask (64x64 blocks: global first/last,
                window 3, 3 random), compiled; with and without the per-batch mask build
HF BigBird runs length-sorted micro-batches of at most 65,536 padded tokens (one padded batch
of 64 sequences up to 8k would not fit in memory); its time is the sum over the micro-batches.
Times: CUDA events, warm-up, median of N. Peak device memory: torch.cuda.max_memory_allocated
during the timed loop (weights included; raptor: its caching pool's peak, weights included).
Compute floor: real tokens' GEMM FLOPs + attended-pair FLOPs (raptor's plan sizes) at the
GEMM rate measured here on this model's shapes.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_timing import bench  # noqa: E402

H, L, NH, D, I = 768, 12, 12, 64, 3072
BLOCK, R = 64, 3


def set_dims(h, l, nh, inter):
    global H, L, NH, D, I
    H, L, NH, D, I = h, l, nh, h // nh, inter


def cuda_time(fn, warm=3, iters=10):
    """Median ms of iters calls, each timed alone as the host issues it (launch overhead included)."""
    return bench(fn, inner=1, reps=iters, warm=warm, sleep=False)[0]


def peak_of(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def attended_pairs(lens):
    """Query-key pairs raptor's plan attends (dense n <= (5+2r)*64; else block-sparse)."""
    tot = 0
    for n in lens:
        if n <= (5 + 2 * R) * BLOCK:
            tot += n * n
            continue
        nb = (n + BLOCK - 1) // BLOCK
        tot += 2 * BLOCK * n  # global rows
        tot += (nb - 2) * BLOCK * (5 + R) * BLOCK  # middle rows (approx. full blocks)
    return tot


def floor_ms(lens, rate):
    T = sum(lens)
    gemm = 2 * T * (4 * H * H + 2 * H * I) * L
    attn = 4 * attended_pairs(lens) * D * NH * L
    return (gemm + attn) / rate * 1e3


def gemm_rate():
    """fp16 TFLOP/s of the current model's GEMM shapes at T=32768 (torch, cuBLAS)."""
    x = torch.randn(32768, H, device="cuda", dtype=torch.float16)
    w1 = torch.randn(I, H, device="cuda", dtype=torch.float16)
    w2 = torch.randn(H, I, device="cuda", dtype=torch.float16)
    wq = torch.randn(3 * H, H, device="cuda", dtype=torch.float16)
    wo = torch.randn(H, H, device="cuda", dtype=torch.float16)
    y = torch.empty(32768, I, device="cuda", dtype=torch.float16)

    def f():
        F.linear(x, wq)
        F.linear(x, wo)
        torch.matmul(x, w1.t(), out=y)
        F.linear(y, w2)

    ms = cuda_time(f, 3, 20)
    return 2 * 32768 * (4 * H * H + 2 * H * I) / (ms * 1e-3)


class Weights:
    def __init__(self, hf):
        self.layers = []
        for lyr in hf.encoder.layer:
            a = lyr.attention
            wqkv = torch.cat([a.self.query.weight, a.self.key.weight, a.self.value.weight]).contiguous()
            bqkv = torch.cat([a.self.query.bias, a.self.key.bias, a.self.value.bias]).contiguous()
            self.layers.append(dict(
                wqkv=wqkv, bqkv=bqkv, wo=a.output.dense.weight, bo=a.output.dense.bias,
                ln1=(a.output.LayerNorm.weight, a.output.LayerNorm.bias),
                w1=lyr.intermediate.dense.weight, b1=lyr.intermediate.dense.bias,
                w2=lyr.output.dense.weight, b2=lyr.output.dense.bias,
                ln2=(lyr.output.LayerNorm.weight, lyr.output.LayerNorm.bias)))


def add_ln(x, r, b, w, bias):
    return F.layer_norm(x + r + b, (H,), w, bias, 1e-12)


def bias_gelu(x, b):
    return F.gelu(x + b)


def encoder(x, W, attend, add_ln_f, gelu_f):
    """x [T or B*S, H]; attend(qkv) -> [.., H]."""
    for l in W.layers:
        qkv = F.linear(x, l["wqkv"], l["bqkv"])
        o = attend(qkv)
        a = F.linear(o, l["wo"])
        x = add_ln_f(a, x, l["bo"], *l["ln1"])
        h = gelu_f(F.linear(x, l["w1"]), l["b1"])
        f = F.linear(h, l["w2"])
        x = add_ln_f(f, x, l["b2"], *l["ln2"])
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raptor_json")
    ap.add_argument("--md")
    ap.add_argument("--json")
    ap.add_argument("--skip", default="", help="comma-separated peers to skip")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    raptor = json.load(open(args.raptor_json))
    from transformers import BigBirdConfig, BigBirdModel

    torch.manual_seed(0)
    dev = torch.device("cuda")
    print("device:", torch.cuda.get_device_name(), "torch", torch.__version__, flush=True)
    add_ln_c = torch.compile(add_ln, dynamic=True)
    gelu_c = torch.compile(bias_gelu, dynamic=True)
    cur = None
    rows = []
    for wl in raptor:
        if wl.get("error"):
            print(f"== {wl.get('model')} {wl['name']}: raptor failed: {wl['error']}", flush=True)
            continue
        key = (wl.get("model", "BigBird-base"), wl.get("hidden", 768), wl.get("layers", 12), wl.get("heads", 12), wl.get("intermediate", 3072))
        if key != cur:
            cur = key
            hf = W = None
            torch.cuda.empty_cache()
            set_dims(*key[1:])
            rate = gemm_rate()
            print(f"== {key[0]}: GEMM rate on its shapes: {rate / 1e12:.0f} TFLOP/s", flush=True)
            maxpos = max(4096, max(max(w["lengths"]) for w in raptor if w.get("model", "BigBird-base") == key[0]))
            cfg = BigBirdConfig(hidden_size=H, num_hidden_layers=L, num_attention_heads=NH, intermediate_size=I,
                                max_position_embeddings=maxpos, attention_type="block_sparse", block_size=BLOCK,
                                num_random_blocks=R, hidden_act="gelu_new")
            cfg._attn_implementation = "eager"
            hf = BigBirdModel(cfg, add_pooling_layer=False).to(dev, torch.float16).eval()
            W = Weights(hf)
            scale = 1 / math.sqrt(D)
        lens = wl["lengths"]
        T, B, S = sum(lens), len(lens), max(lens)
        big = T > 65536 or B * S > 262144
        it = dict(warm=2, iters=5) if big else {}
        row = {"model": key[0], "workload": wl["name"], "raptor_devout_ms": wl.get("devout_ms_median"), "tokens": T, "raptor_ms": wl["device_ms_median"],
               "raptor_encode_ms": wl["encode_ms_median"], "raptor_peak_gib": wl["peak_pool_bytes"] / 2**30,
               "floor_ms": floor_ms(lens, rate)}
        print(f"== {wl['name']}: {B} sequences, {T} tokens, max {S}", flush=True)
        cu = torch.tensor([0] + list(torch.cumsum(torch.tensor(lens), 0)), dtype=torch.int32, device=dev)
        x = torch.randn(T, H, device=dev, dtype=torch.float16)
        with torch.inference_mode():
            # FA2 varlen, compiled elementwise
            def varlen(qkv):
                q, k, v = qkv.view(T, 3, NH, D).unbind(1)
                o = torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, S, S, 0.0, False, False, scale=scale)[0]
                return o.reshape(T, H)
            f_var = lambda: encoder(x, W, varlen, add_ln_c, gelu_c)
            row["fa2_varlen_ms"] = cuda_time(f_var, **it)
            row["fa2_varlen_peak_gib"] = peak_of(f_var) / 2**30
            print(f"fa2_varlen {row['fa2_varlen_ms']:.1f} ms", flush=True)
            # dense FA2 on the padded batch
            xp = torch.randn(B * S, H, device=dev, dtype=torch.float16)

            def padded(qkv):
                q, k, v = qkv.view(B, S, 3, NH, D).permute(2, 0, 3, 1, 4).unbind(0)
                with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                    o = F.scaled_dot_product_attention(q, k, v, scale=scale)
                return o.transpose(1, 2).reshape(B * S, H)
            f_pad = lambda: encoder(xp, W, padded, add_ln, bias_gelu)
            row["fa2_padded_ms"] = cuda_time(f_pad, **it)
            row["fa2_padded_peak_gib"] = peak_of(f_pad) / 2**30
            print(f"fa2_padded {row['fa2_padded_ms']:.1f} ms", flush=True)
            del xp
            # FlexAttention BigBird
            if "flex" not in skip:
                try:
                    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
                    flex = torch.compile(flex_attention, dynamic=False)
                    Tp = (T + 127) // 128 * 128
                    nbt = Tp // BLOCK
                    seq_id = torch.full((Tp,), -1, dtype=torch.int32, device=dev)
                    start = torch.zeros(Tp, dtype=torch.int32, device=dev)
                    for s, n in enumerate(lens):
                        seq_id[int(cu[s]):int(cu[s]) + n] = s
                        start[int(cu[s]):int(cu[s]) + n] = int(cu[s])
                    g = torch.Generator(device="cpu").manual_seed(1)

                    def build_allowed():
                        # block-level plan per head: rows of (global key block) allowed, relative to each
                        # sequence's blocks (sequences start anywhere, so work per token block pair)
                        allow = torch.zeros(NH, nbt, nbt, dtype=torch.bool)
                        for s, n in enumerate(lens):
                            a0 = int(cu[s])
                            b0, b1 = a0 // BLOCK, (a0 + n - 1) // BLOCK
                            nb = (n + BLOCK - 1) // BLOCK
                            if n <= (5 + 2 * R) * BLOCK:
                                allow[:, b0:b1 + 1, b0:b1 + 1] = True
                                continue
                            allow[:, b0:b0 + 2, b0:b1 + 1] = True
                            allow[:, b1 - 1:b1 + 1, b0:b1 + 1] = True
                            for i in range(nb):
                                lo, hi = max(0, i - 1), min(nb - 1, i + 1)
                                allow[:, b0 + i, b0 + lo:b0 + hi + 2] = True
                                allow[:, b0 + i, [b0, min(b1, b0 + nb - 1)]] = True
                            rnd = torch.randint(1, max(2, nb - 1), (NH, nb, R), generator=g)
                            for h in range(NH):
                                allow[h, torch.arange(b0, b0 + nb).repeat_interleave(R), (b0 + rnd[h]).flatten().clamp(max=b1)] = True
                        return allow.to(dev)
                    allowed = build_allowed()

                    def mask_mod(b, h, qi, ki):
                        return (allowed[h, qi // BLOCK, ki // BLOCK]) & (seq_id[qi] == seq_id[ki]) & (seq_id[qi] >= 0)

                    def make_mask():
                        return create_block_mask(mask_mod, 1, NH, Tp, Tp, device=dev, BLOCK_SIZE=BLOCK, _compile=True)
                    bm = make_mask()
                    xf = torch.randn(T, H, device=dev, dtype=torch.float16)

                    def flex_attend(qkv, bm_get):
                        q, k, v = qkv.view(T, 3, NH, D).unbind(1)
                        pad = Tp - T
                        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)).transpose(0, 1).unsqueeze(0) for t in (q, k, v))
                        o = flex(q, k, v, block_mask=bm_get(), scale=scale,
                                 kernel_options={"BLOCK_M": 64, "BLOCK_N": 64})
                        return o[0].transpose(0, 1)[:T].reshape(T, H)
                    f_flex = lambda: encoder(xf, W, lambda qkv: flex_attend(qkv, lambda: bm), add_ln_c, gelu_c)
                    row["flex_ms"] = cuda_time(f_flex, **it)
                    row["flex_peak_gib"] = peak_of(f_flex) / 2**30
                    row["flex_mask_ms"] = cuda_time(make_mask, 1, 3 if big else 5)
                    row["flex_with_mask_ms"] = row["flex_ms"] + row["flex_mask_ms"]
                    print(f"flex {row['flex_ms']:.1f} ms (+ mask build {row['flex_mask_ms']:.1f} ms)", flush=True)
                    del allowed, bm
                except Exception as e:  # report, do not hide
                    print(f"flex failed: {type(e).__name__}: {e}", flush=True)
                    row["flex_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            # HF BigBird block_sparse (padded batch + mask)
            if "hf" not in skip:
                # length-sorted micro-batches of <= 65,536 padded tokens
                order = sorted(range(B), key=lambda i: lens[i])
                chunks, curc = [], []
                for i in order:
                    if curc and (len(curc) + 1) * lens[i] > 65536:
                        chunks.append(curc)
                        curc = []
                    curc.append(i)
                chunks.append(curc)
                inputs = []
                for c in chunks:
                    Sc = max(lens[i] for i in c)
                    ids = torch.randint(0, cfg.vocab_size, (len(c), Sc), device=dev)
                    mask = torch.zeros(len(c), Sc, dtype=torch.long, device=dev)
                    for j, i in enumerate(c):
                        mask[j, :lens[i]] = 1
                    inputs.append((ids, mask))

                def f_hf():
                    for ids, mask in inputs:
                        # HF switches the model to original_full for a short batch (and keeps it so)
                        if getattr(hf, "attention_type", "block_sparse") != "block_sparse":
                            hf.set_attention_type("block_sparse")
                        hf(input_ids=ids, attention_mask=mask)
                try:
                    row["hf_ms"] = cuda_time(f_hf, 1, 3)
                    row["hf_peak_gib"] = peak_of(f_hf) / 2**30
                    row["hf_microbatches"] = len(chunks)
                    print(f"hf_bigbird {row['hf_ms']:.1f} ms ({len(chunks)} micro-batches)", flush=True)
                except Exception as e:
                    print(f"hf failed: {type(e).__name__}: {e}", flush=True)
                    row["hf_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                del inputs
            # correctness of a timed config: FA2 varlen vs per-sequence SDPA on the first sequence
            qkv = torch.randn(T, 3 * H, device=dev, dtype=torch.float16)
            o = varlen(qkv)[: lens[0]].float()
            q, k, v = qkv[: lens[0]].view(lens[0], 3, NH, D).permute(1, 2, 0, 3).float().unbind(0)
            ref = F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(0, 1).reshape(lens[0], H)
            row["fa2_varlen_check_maxabs"] = (o - ref).abs().max().item()
        torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row), flush=True)

    def fmt(r, k):
        v = r.get(k)
        return "n/a" if v is None else f"{v:.1f}"
    md = ["| model | workload | tokens | raptor (device) | raptor fwd, device fp32 out (wall) | raptor Encode, host fp32 out (wall) | HF BigBird block_sparse | dense FA2 padded | FA2 varlen + compiled | Flex BigBird (compiled) | Flex + mask build | compute floor | vs HF | vs FA2 varlen | vs Flex / Flex+mask | raptor / floor | peak GiB raptor / FA2 varlen / Flex / HF |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = lambda k: f"{r[k] / r['raptor_ms']:.2f}x" if r.get(k) else "n/a"
        md.append(f"| {r['model']} | {r['workload']} | {r['tokens']:,} | {r['raptor_ms']:.1f} | {fmt(r, 'raptor_devout_ms')} | {r['raptor_encode_ms']:.1f} | {fmt(r, 'hf_ms')} | "
                  f"{fmt(r, 'fa2_padded_ms')} | {fmt(r, 'fa2_varlen_ms')} | {fmt(r, 'flex_ms')} | {fmt(r, 'flex_with_mask_ms')} | "
                  f"{r['floor_ms']:.1f} | {sp('hf_ms')} | {sp('fa2_varlen_ms')} | {sp('flex_ms')} / {sp('flex_with_mask_ms')} | {r['raptor_ms'] / r['floor_ms']:.2f} | "
                  f"{r['raptor_peak_gib']:.2f} / {r.get('fa2_varlen_peak_gib', 0):.2f} / {r.get('flex_peak_gib', 0):.2f} / {r.get('hf_peak_gib', 0):.2f} |")
    table = "\n".join(md)
    print(table)
    if args.md:
        open(args.md, "w").write(table + "\n")
    if args.json:
        json.dump(rows, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
