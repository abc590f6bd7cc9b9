#!/usr/bin/env python3
"""Writes HF task-head checkpoints with random weights and their logits.

For each family (bert, roberta, bigbird with attention_type="original_full")
and each task (seq: *ForSequenceClassification, tok: *ForTokenClassification,
qa: *ForQuestionAnswering) it saves <out>/<family>_<task>/ with config.json
and model.safetensors (save_pretrained), plus expected.json: the packed batch
(tokens, cu_seqlens, token types) and HF's logits, row-major as raptor returns
them ([num_seqs, num_labels], [num_tokens, num_labels], or [num_tokens, 2] for
start/end). Each sequence runs through HF alone (batch of one, no padding).

  python3 engine/testdata/heads/make_heads.py               # tiny, committed
  python3 engine/testdata/heads/make_heads.py --size base --out DIR  # base widths

The Go test TestHeadsHFParity converts each checkpoint with loader/hf and
compares raptor's logits (tiny: committed here; base: generated at test time).
"""
import argparse
import json
import os
import shutil

import torch
import transformers
from transformers import (BertConfig, BertForQuestionAnswering, BertForSequenceClassification,
                          BertForTokenClassification, BigBirdConfig, BigBirdForQuestionAnswering,
                          BigBirdForSequenceClassification, BigBirdForTokenClassification,
                          RobertaConfig, RobertaForQuestionAnswering,
                          RobertaForSequenceClassification, RobertaForTokenClassification)

FAMILIES = {
    "bert": (BertConfig, {"seq": BertForSequenceClassification, "tok": BertForTokenClassification,
                          "qa": BertForQuestionAnswering}),
    "roberta": (RobertaConfig, {"seq": RobertaForSequenceClassification, "tok": RobertaForTokenClassification,
                                "qa": RobertaForQuestionAnswering}),
    "bigbird": (BigBirdConfig, {"seq": BigBirdForSequenceClassification, "tok": BigBirdForTokenClassification,
                                "qa": BigBirdForQuestionAnswering}),
}
SIZES = {
    "tiny": dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, max_position_embeddings=64),
    "base": dict(vocab_size=1000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512),
}
SEP = 3  # sep_token_id of every config; BigBird QA masks the question up to it


def make(family, task, size, seed):
    cfg_cls, tasks = FAMILIES[family]
    # tiny: a wide init so the logits are far from zero; base: HF's default
    # 0.02 (0.2 at width 768 saturates softmax and tanh).
    kw = dict(SIZES[size], initializer_range=0.2 if size == "tiny" else 0.02, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
              sep_token_id=SEP, bos_token_id=0, eos_token_id=2)
    if family == "roberta":
        kw.update(pad_token_id=1, type_vocab_size=1, max_position_embeddings=kw["max_position_embeddings"] + 2)
    else:
        kw.update(pad_token_id=0, type_vocab_size=2)
    if family == "bigbird":
        kw.update(attention_type="original_full")
    if task == "seq":
        kw.update(id2label={0: "negative", 1: "neutral", 2: "positive"},
                  label2id={"negative": 0, "neutral": 1, "positive": 2})
    elif task == "tok":
        names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
        kw.update(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(seed)
    model = tasks[task](cfg_cls(**kw)).eval()
    # Biases and LayerNorms start at 0 and 1: randomise them too.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias") or "LayerNorm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


def batch(model, family, task, lens, seed):
    g = torch.Generator().manual_seed(seed)
    V = model.config.vocab_size
    tokens, cu, types = [], [0], []
    for s, n in enumerate(lens):
        ids = torch.randint(4, V, (n,), generator=g)
        ids[0] = 0 if family != "roberta" else 0
        if task == "qa" and n > 4:
            ids[3] = SEP  # a 2-token question: positions 1, 2 (and 3, the SEP) masked by BigBird
        if family == "roberta":
            tt = torch.zeros(n, dtype=torch.long)
        else:
            tt = torch.randint(0, 2, (n,), generator=g)
        tokens += ids.tolist()
        types += tt.tolist()
        cu.append(len(tokens))
    return tokens, cu, types


def logits_of(model, task, tokens, cu, types):
    rows = []
    with torch.no_grad():
        for s in range(len(cu) - 1):
            ids = torch.tensor([tokens[cu[s]:cu[s + 1]]])
            tt = torch.tensor([types[cu[s]:cu[s + 1]]])
            out = model(input_ids=ids, token_type_ids=tt, attention_mask=torch.ones_like(ids))
            if task == "qa":
                rows.append(torch.stack([out.start_logits[0], out.end_logits[0]], dim=-1).double())
            else:
                rows.append(out.logits[0].double().reshape(-1, out.logits.shape[-1]))
    return torch.cat(rows).reshape(-1).tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--only", default="", help="comma-separated family_task names (default: all)")
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    lens = [9, 1, 23] if a.size == "tiny" else [37, 5]
    only = set(filter(None, a.only.split(",")))
    seed = 0
    for family in FAMILIES:
        for task in ("seq", "tok", "qa"):
            seed += 1
            name = f"{family}_{task}"
            if only and name not in only:
                continue
            model = make(family, task, a.size, seed)
            tokens, cu, types = batch(model, family, task, lens, seed)
            d = os.path.join(a.out, name)
            shutil.rmtree(d, ignore_errors=True)
            model.save_pretrained(d, safe_serialization=True)
            exp = dict(transformers=transformers.__version__, torch=torch.__version__,
                       architecture=type(model).__name__, tokens=tokens, cu_seqlens=cu, token_types=types,
                       logits=logits_of(model, task, tokens, cu, types))
            with open(os.path.join(d, "expected.json"), "w") as f:
                json.dump(exp, f)
            print(name, type(model).__name__, len(exp["logits"]), "logits")


if __name__ == "__main__":
    main()
