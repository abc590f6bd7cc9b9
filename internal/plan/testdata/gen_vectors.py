#!/usr/bin/env python3
"""Independent reimplementation of raptor's attention-plan generator.

Writes vectors.json, the fixed vectors internal/plan is tested against. It
follows the algorithm as the package doc of internal/plan states it, written
from that text (not translated from the Go code), with Python integers masked
to 64 bits. Run: python3 gen_vectors.py > vectors.json
"""
import json
import math

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
START = 0x243F6A8885A308D3


def mix(z):
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def key(seed, rseed, layer, head, block):
    k = START
    for w in (seed, rseed, layer, head, block):
        k = mix(((k ^ w) + GAMMA) & M64)
    return k


def draw(k, j):
    return mix((k + (j + 1) * GAMMA) & M64) >> 32


def random_blocks(k, i, nb, r):
    cands = [c for c in range(1, nb - 1) if c not in (i - 1, i, i + 1)]
    m = len(cands)
    assert r <= m
    picks = []
    for step, t in enumerate(range(m - r, m)):
        x = (draw(k, step) * (t + 1)) >> 32
        picks.append(t if x in picks else x)
    return sorted(cands[p] for p in picks)


def key_blocks(n, b, r, sparse, seed, rseed, layer, head, i):
    nb = -(-n // b)
    if not sparse or n <= (5 + 2 * r) * b or i in (0, nb - 1):
        return list(range(nb))
    s = {0, nb - 1} | {j for j in (i - 1, i, i + 1)}
    s |= set(random_blocks(key(seed, rseed, layer, head, i), i, nb, r))
    return sorted(s)


def main():
    out = {"mix": [], "draw": [], "random": [], "key_blocks": []}
    for z in [0, 1, 2, GAMMA, M64, 0x0123456789ABCDEF, 1 << 63]:
        out["mix"].append({"z": str(z), "out": str(mix(z))})
    for seed, rseed, l, h, i in [(0, 0, 0, 0, 0), (1, 0, 0, 0, 1), (0, 1, 0, 0, 1), (42, 7, 11, 3, 60),
                                 (M64, M64, 23, 15, 255), (0xDEADBEEF, 12345, 5, 9, 17)]:
        k = key(seed, rseed, l, h, i)
        out["draw"].append({"seed": str(seed), "rseed": str(rseed), "layer": l, "head": h, "block": i,
                            "key": str(k), "draws": [draw(k, j) for j in range(6)]})
    cases = []
    for nb, r in [(12, 3), (10, 2), (6, 1), (64, 3), (256, 3), (100, 5), (8, 3), (7, 2)]:
        for i in sorted({1, 2, nb // 2, nb - 3, nb - 2}):
            if 1 <= i <= nb - 2:
                cases.append((nb, r, i))
    for idx, (nb, r, i) in enumerate(cases):
        seed, rseed, l, h = idx * 1000003, (idx * 7919) ^ 0x5555, idx % 12, idx % 16
        k = key(seed, rseed, l, h, i)
        out["random"].append({"seed": str(seed), "rseed": str(rseed), "layer": l, "head": h, "block": i,
                              "nb": nb, "r": r, "blocks": random_blocks(k, i, nb, r)})
    for n, b, r, sparse in [(704, 64, 3, True), (705, 64, 3, True), (4096, 64, 3, True), (1000, 16, 2, True),
                            (150, 16, 2, True), (300, 64, 3, False), (16384, 64, 3, True)]:
        nb = -(-n // b)
        for i in sorted({0, 1, nb // 3, nb - 2, nb - 1}):
            out["key_blocks"].append({"n": n, "b": b, "r": r, "sparse": sparse, "seed": "99", "rseed": "5",
                                      "layer": 3, "head": 1, "block": i,
                                      "blocks": key_blocks(n, b, r, sparse, 99, 5, 3, 1, i)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
