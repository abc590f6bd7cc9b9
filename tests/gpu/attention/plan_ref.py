"""Python port of raptor's attention plan (internal/plan, ARCHITECTURE.md "The
attention plan"), written from the package doc. Checked against
internal/plan/testdata/vectors.json by check_plan_vectors(); the GPU plan is
checked against it element for element (test_attention.py)."""
import json
import os

M64 = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
START = 0x243F6A8885A308D3
BLOCK = 64
VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "internal", "plan",
                       "testdata", "vectors.json")


def mix(z):
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def key(seed, rseed, layer, head, block):
    k = START
    for w in (seed, rseed, layer, head, block):
        k = mix(((k ^ (int(w) & M64)) + GAMMA) & M64)
    return k


def draw(k, j):
    return mix((k + (j + 1) * GAMMA) & M64) >> 32


def random_blocks(k, i, nb, r):
    lo, hi = max(1, i - 1), min(nb - 2, i + 1)
    width = hi - lo + 1
    m = (nb - 2) - width
    assert r <= m, (r, m)
    picks = []
    for step in range(r):
        t = m - r + step
        x = (draw(k, step) * (t + 1)) >> 32
        picks.append(t if x in picks else x)
    return sorted(1 + c + (width if 1 + c >= lo else 0) for c in picks)


def is_sparse(n, sparse, r, b=BLOCK):
    return bool(sparse) and n > (5 + 2 * r) * b


def key_blocks(n, r, sparse, seed, rseed, layer, head, i, b=BLOCK):
    nb = -(-n // b)
    if not is_sparse(n, sparse, r, b) or i in (0, nb - 1):
        return list(range(nb))
    s = {0, nb - 1} | {j for j in (i - 1, i, i + 1) if 0 < j < nb - 1}
    s |= set(random_blocks(key(seed, rseed, layer, head, i), i, nb, r))
    return sorted(s)


def check_plan_vectors():
    v = json.load(open(VECTORS))
    for c in v["mix"]:
        assert mix(int(c["z"])) == int(c["out"])
    for c in v["draw"]:
        k = key(int(c["seed"]), int(c["rseed"]), c["layer"], c["head"], c["block"])
        assert k == int(c["key"]) and [draw(k, j) for j in range(6)] == c["draws"]
    for c in v["random"]:
        k = key(int(c["seed"]), int(c["rseed"]), c["layer"], c["head"], c["block"])
        assert random_blocks(k, c["block"], c["nb"], c["r"]) == c["blocks"]
    for c in v["key_blocks"]:
        assert key_blocks(c["n"], c["r"], c["sparse"], int(c["seed"]), int(c["rseed"]), c["layer"], c["head"],
                          c["block"], b=c["b"]) == c["blocks"], c
    return v


if __name__ == "__main__":
    v = check_plan_vectors()
    print("plan_ref matches vectors.json:", {k: len(x) for k, x in v.items()})
