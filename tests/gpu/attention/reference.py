"""References for the sparse attention kernel: float64 masked-dense attention
built from raptor's plan (plan_ref.py), and PyTorch's own attention
(scaled_dot_product_attention with the same boolean mask) in the kernel's
16-bit dtype, both on a chosen subset of query blocks per sequence, computed
in row chunks so nothing n^2 is ever materialised for long sequences."""
import random

import numpy as np
import torch
import torch.nn.functional as F

import plan_ref

BLOCK = 64


def block_mask(n, qblocks, H, r, sparse, seed, rseed, layer):
    """bool [H, len(qblocks), nb]: key blocks attended by each query block."""
    nb = -(-n // BLOCK)
    m = np.zeros((H, len(qblocks), nb), dtype=bool)
    for h in range(H):
        for a, i in enumerate(qblocks):
            m[h, a, plan_ref.key_blocks(n, r, sparse, seed, rseed, layer, h, i)] = True
    return m


def token_mask(n, qblocks, bm, device):
    """Expand a block mask to tokens: bool [H, rows, n] and the row offsets."""
    rows = np.concatenate([np.arange(i * BLOCK, min(n, (i + 1) * BLOCK)) for i in qblocks])
    rep = np.array([min(n, (i + 1) * BLOCK) - i * BLOCK for i in qblocks])
    t = torch.from_numpy(bm).to(device)
    t = torch.repeat_interleave(t, torch.from_numpy(rep).to(device), dim=1)
    t = torch.repeat_interleave(t, BLOCK, dim=2)[:, :, :n]
    return t, rows


def select_blocks(n, rng, full_upto=4096, extra=16):
    nb = -(-n // BLOCK)
    if n <= full_upto:
        return list(range(nb))
    s = {0, 1, 2, 3, nb // 2, nb - 4, nb - 3, nb - 2, nb - 1}
    while len(s) < 9 + extra:
        s.add(rng.randrange(nb))
    return sorted(s)


def references(q, k, v, cu, seeds, seed, layer, r, sparse, scale, sel, ref16=True, budget=1 << 29):
    """q, k, v: [T, H, D] (any strides) on the GPU. sel: {seq: [query blocks]}.
    Returns {seq: (token rows (absolute), ref64 [R, H, D] float64, ref16 [R, H, D] or None)}."""
    out = {}
    H, D = q.shape[1], q.shape[2]
    for s, qbs in sel.items():
        tok0, n = cu[s], cu[s + 1] - cu[s]
        if n == 0 or not qbs:
            continue
        k64 = k[tok0:tok0 + n].permute(1, 0, 2).double()
        v64 = v[tok0:tok0 + n].permute(1, 0, 2).double()
        k16 = k[tok0:tok0 + n].permute(1, 0, 2).contiguous()
        v16 = v[tok0:tok0 + n].permute(1, 0, 2).contiguous()
        per = max(1, budget // (n * H * 8 * BLOCK))  # query blocks per chunk
        rows_all, r64, r16 = [], [], []
        for c in range(0, len(qbs), per):
            chunk = qbs[c:c + per]
            bm = block_mask(n, chunk, H, r, sparse, seed, seeds[s], layer)
            tm, rows = token_mask(n, chunk, bm, q.device)
            idx = torch.from_numpy(rows + tok0).to(q.device)
            qq = q[idx].permute(1, 0, 2)
            sc = torch.matmul(qq.double(), k64.transpose(1, 2)) * scale
            sc.masked_fill_(~tm, float("-inf"))
            o64 = torch.matmul(torch.softmax(sc, dim=-1), v64)
            del sc
            r64.append(o64.permute(1, 0, 2))
            if ref16:
                o16 = F.scaled_dot_product_attention(qq.contiguous()[None], k16[None], v16[None], attn_mask=tm[None],
                                                     scale=scale)[0]
                r16.append(o16.permute(1, 0, 2))
            rows_all.append(rows + tok0)
        out[s] = (np.concatenate(rows_all), torch.cat(r64), torch.cat(r16) if ref16 else None)
    return out


def rel_err(a, b):
    a = a.double()
    b = b.double()
    return (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()


def errors(o, refs):
    """o: kernel output [T, H, D]. Returns (batch err kernel, batch err torch16, per-seq list)."""
    num_k = num_t = den = 0.0
    per = []
    for s, (rows, r64, r16) in refs.items():
        idx = torch.from_numpy(rows).to(o.device)
        ok = o[idx].double()
        dk = torch.linalg.vector_norm(ok - r64).item() ** 2
        dd = torch.linalg.vector_norm(r64).item() ** 2
        dt = torch.linalg.vector_norm(r16.double() - r64).item() ** 2 if r16 is not None else float("nan")
        num_k += dk
        num_t += dt
        den += dd
        per.append((s, len(rows), (dk / dd) ** 0.5, (dt / dd) ** 0.5))
    return (num_k / den) ** 0.5, (num_t / den) ** 0.5, per


def ragged_lengths(rng, extra=()):
    b, r = BLOCK, 3
    thr = (5 + 2 * r) * b
    ls = [1, b - 1, b, b + 1, thr, thr + 1, 4096, 16384, 65536] + list(extra)
    rng.shuffle(ls)
    return ls


def _selftest():
    """CPU check of the reference against a naive per-row loop (no GPU)."""
    rng = random.Random(0)
    torch.manual_seed(0)
    ls = [1, 63, 705, 900]
    cu = [0]
    for x in ls:
        cu.append(cu[-1] + x)
    T, H, D = cu[-1], 2, 16
    q, k, v = (torch.randn(T, H, D, dtype=torch.float32) for _ in range(3))
    seeds = [rng.getrandbits(64) for _ in ls]
    sel = {s: select_blocks(n, rng, full_upto=800, extra=2) for s, n in enumerate(ls)}
    refs = references(q, k, v, cu, seeds, 5, 2, 3, 1, D ** -0.5, sel, ref16=True, budget=1 << 16)
    for s, (rows, r64, _) in refs.items():
        n, tok0 = ls[s], cu[s]
        for a, t in enumerate(rows):
            i = (t - tok0) // 64
            for h in range(H):
                kb = plan_ref.key_blocks(n, 3, 1, 5, seeds[s], 2, h, i)
                keys = [j for b_ in kb for j in range(b_ * 64, min(n, b_ * 64 + 64))]
                sc = (q[t, h].double() @ k[tok0 + np.array(keys), h].double().T) * D ** -0.5
                o = torch.softmax(sc, 0) @ v[tok0 + np.array(keys), h].double()
                assert torch.allclose(o, r64[a, h], atol=1e-12), (s, t, h)
    print("reference self-test ok:", {s: len(x[0]) for s, x in refs.items()})


if __name__ == "__main__":
    _selftest()
