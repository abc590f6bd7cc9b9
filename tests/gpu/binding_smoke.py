"""Python binding smoke on the GPU (tests/gpu/run.sh --on-device).

A CUDA engine through the ctypes binding: backend() is "cuda", the real
all-MiniLM-L6-v2 (f16 raptor file, argv[1]) encodes sentences, sync and
async, and the embeddings match a CPU engine's on the same file (cosine >=
0.999). Prints one line per check and exits nonzero on a failure.

Usage: RAPTOR_LIB=.../libraptor.so python3 tests/gpu/binding_smoke.py MODEL
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bindings", "python"))
import numpy as np  # noqa: E402
import raptor  # noqa: E402

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "raptor runs transformer encoders on packed variable-length batches.",
    "A GPU fault must cost one request a clear error, never the host process.",
    "short",
    " ".join(["long input"] * 200),
]


def main():
    path = sys.argv[1]
    fails = 0
    with raptor.Engine(backend="cuda") as g, raptor.Engine(backend="cpu") as c:
        print(f"binding: version {raptor.version()}, GPU engine backend {g.backend!r}, CPU engine backend {c.backend!r}")
        if g.backend != "cuda":
            print("FAIL: the GPU engine does not report cuda")
            fails += 1
        mg, mc = g.load(path), c.load(path)
        eg = np.asarray(mg.encode(SENTENCES, normalize=True))
        ec = np.asarray(mc.encode(SENTENCES, normalize=True))
        ea = np.asarray(mg.submit(SENTENCES, normalize=True).result(timeout=60))
        cos = (eg * ec).sum(1) / (np.linalg.norm(eg, axis=1) * np.linalg.norm(ec, axis=1))
        print(f"binding: {len(SENTENCES)} sentences, GPU fp16 vs CPU fp32 cosine min {cos.min():.6f}")
        if not np.all(cos >= 0.999):
            print("FAIL: cosine < 0.999")
            fails += 1
        d = float(np.abs(ea - eg).max())
        print(f"binding: async (submit) vs sync on the GPU: max abs diff {d:.3g}")
        if d > 1e-5:
            print("FAIL: async differs from sync")
            fails += 1
        mg.close()
        mc.close()
    print("binding smoke:", "FAIL" if fails else "PASS")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
