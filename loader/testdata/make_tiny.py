#!/usr/bin/env python3
"""Writes the tiny HuggingFace checkpoints under loader/testdata/hf.

Each is a random-weight model made by transformers and saved with
save_pretrained (safetensors), plus expected.json: for every tensor, its
canonical raptor name, shape and the SHA-256 of its bytes as float32, float16
and bfloat16 (cast by torch), so the Go tests check the converter against
torch without needing Python.

  bert/      BertModel, f32, with a WordPiece tokenizer (vocab.txt,
             tokenizer_config.json with AddedToken-style special tokens)
  roberta/   RobertaModel, f32, sharded (model.safetensors.index.json)
  bigbird/   BigBirdModel (block_sparse), saved in bfloat16; its pooler is a
             bare nn.Linear ("pooler.weight", not "pooler.dense.weight")

Run from the repository root: python3 loader/testdata/make_tiny.py
"""
import hashlib
import json
import os
import shutil

import torch
import transformers
from transformers import (BertConfig, BertModel, BigBirdConfig, BigBirdModel,
                          RobertaConfig, RobertaModel)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf")
COMMON = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, type_vocab_size=2)
SKIP = ("embeddings.position_ids", "embeddings.token_type_ids")


def sha(t):
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()


def save(name, model, dtype=torch.float32, **kw):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    model = model.to(dtype).eval()
    model.save_pretrained(d, safe_serialization=True, **kw)
    expected = {}
    for k, v in model.state_dict().items():
        if k in SKIP:
            continue
        v32 = v.float()
        expected[k] = {
            "shape": list(v.shape),
            "f32": sha(v32),
            "f16": sha(v32.half().view(torch.int16)),
            "bf16": sha(v32.bfloat16().view(torch.int16)),
        }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"transformers": transformers.__version__, "tensors": expected}, f, indent=1, sort_keys=True)
    return d


def main():
    torch.manual_seed(0)
    d = save("bert", BertModel(BertConfig(max_position_embeddings=64, hidden_act="gelu", **COMMON)))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"tok{i}" for i in range(90)] + ["##a", "élan", "x y", "[unused0]"]
    assert len(vocab) == 99
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({
            "tokenizer_class": "BertTokenizer", "do_lower_case": False, "strip_accents": True,
            "model_max_length": 48,
            "cls_token": {"content": "[CLS]", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False},
            "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]",
        }, f, indent=1)

    torch.manual_seed(1)
    save("roberta", RobertaModel(RobertaConfig(max_position_embeddings=66, pad_token_id=1, hidden_act="gelu_new",
                                               layer_norm_eps=1e-5, **{**COMMON, "type_vocab_size": 1})),
         max_shard_size="40KB")

    torch.manual_seed(2)
    save("bigbird", BigBirdModel(BigBirdConfig(max_position_embeddings=128, attention_type="block_sparse",
                                               block_size=4, num_random_blocks=2, hidden_act="gelu_fast", **COMMON)),
         dtype=torch.bfloat16)


if __name__ == "__main__":
    main()
