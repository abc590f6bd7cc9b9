#!/usr/bin/env python3
"""PyTorch side of bench/loadbench.

  hf_load.py make DIR       save a random-weight BigBird-base (BigBirdConfig()
                            defaults: 12 layers, hidden 768, vocab 50358,
                            4096 positions, ~128M parameters) to DIR with
                            save_pretrained (model.safetensors, float32)
  hf_load.py time DIR REPS  time BigBirdModel.from_pretrained(DIR) from a warm
                            page cache: one untimed warm-up, then REPS timed
                            loads; prints JSON
"""
import json
import statistics
import sys
import time


def make(d):
    import torch
    from transformers import BigBirdConfig, BigBirdModel
    torch.manual_seed(0)
    model = BigBirdModel(BigBirdConfig()).eval()
    model.save_pretrained(d, safe_serialization=True)
    print(json.dumps({"params": sum(p.numel() for p in model.parameters())}))


def time_load(d, reps):
    import torch
    import transformers
    from transformers import BigBirdModel
    torch.set_num_threads(2)
    import transformers.utils.logging as hf_logging
    hf_logging.disable_progress_bar()
    BigBirdModel.from_pretrained(d)  # warm-up: page cache, imports, lazy init
    times, cpu, touched = [], 0.0, []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        m = BigBirdModel.from_pretrained(d)
        times.append(time.perf_counter() - t)
        cpu += time.process_time() - c
        # from_pretrained may leave weights as lazily paged views of the
        # mapped file; reading every weight once is what "ready" costs.
        with torch.no_grad():
            for p in m.parameters():
                p.sum()
        touched.append(time.perf_counter() - t)
        del m
    print(json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
                      "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
                      "cpu_s": cpu / reps, "touched_median_s": statistics.median(touched)}))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "time":
        time_load(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
