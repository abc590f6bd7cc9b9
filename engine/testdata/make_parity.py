#!/usr/bin/env python3
"""Parity fixtures for raptor's engine: HF transformers on the CPU.

For each model (random weights) it runs HF BertModel / RobertaModel /
BigBirdModel on a few ragged sequences, one sequence per forward, and writes
<out>/<name>.safetensors holding
  - the weights under raptor's canonical names (loader/names.go), F32;
  - input.tokens, input.cu_seqlens, input.token_types (I32), input.seeds (I64);
  - expected.hidden [T, hidden] and expected.pooler [nseq, hidden] (F32);
  - metadata: "config" (raptor's config as JSON) and "engine_seed".

BigBird block_sparse runs with raptor's own attention plan injected: HF's
random-block functions are replaced by ones returning R(i) from raptor's
generator (internal/plan/testdata/gen_vectors.py, the independent Python
implementation), so HF computes exactly the plan raptor computes.

Usage: make_parity.py --size tiny|base --out DIR
(tiny fixtures are committed in engine/testdata/parity; base ones are made
by the Go test in a temporary directory when torch is available.)
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "internal", "plan", "testdata"))
import gen_vectors as rplan  # noqa: E402

from transformers import (BertConfig, BertModel, BigBirdConfig, BigBirdModel,  # noqa: E402
                          RobertaConfig, RobertaModel)
from transformers.models.big_bird import modeling_big_bird as mbb  # noqa: E402

ENGINE_SEED = 1234


def randomize(model, gen, hidden):
    """Random weights with O(1) activations: linear std 1.5/sqrt(fan_in)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "embeddings" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / p.shape[1] ** 0.5))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def canonical(name):
    if name in ("pooler.weight", "pooler.bias"):  # BigBird's pooler is a bare Linear
        return "pooler.dense." + name.split(".")[1]
    return name


# --- raptor's plan injected into HF BigBird -------------------------------------------

def _plan_rows(layer, head, seeds, nb, r):
    """R(i) for i = 1 .. nb-2 as an [nb-2, r] int32 array."""
    rows = [rplan.random_blocks(rplan.key(seeds[0], seeds[1], layer, head, i), i, nb, r) for i in range(1, nb - 1)]
    return np.array(rows, dtype=np.int32).reshape(nb - 2, r)


def _with_head(self, from_seq_length, to_seq_length, from_block_size, to_block_size, num_heads,
               plan_from_length, plan_num_rand_blocks, *args, **kwargs):
    nb = from_seq_length // from_block_size
    return [_plan_rows(self._raptor_layer, h, self._raptor_seeds, nb, self.num_random_blocks) for h in range(num_heads)]


def _no_head(self, from_seq_length, to_seq_length, from_block_size, to_block_size, num_rand_blocks, last_idx=-1):
    # Called once per head for lengths 1024/3072/4096, with the model's max
    # length; the caller keeps the first nb-2 rows for the real length.
    h = self._raptor_head % self.num_attention_heads
    self._raptor_head += 1
    nb_real = self._raptor_nb
    rows = _plan_rows(self._raptor_layer, h, self._raptor_seeds, nb_real, num_rand_blocks)
    out = np.zeros((from_seq_length // from_block_size - 2, num_rand_blocks), dtype=np.int32)
    out[: nb_real - 2] = rows
    return out


mbb.BigBirdBlockSparseAttention._bigbird_block_rand_mask_with_head = _with_head
mbb.BigBirdBlockSparseAttention._bigbird_block_rand_mask = _no_head


def prepare_bigbird(model, n, seed):
    model.set_attention_type("block_sparse")  # HF switches to full on short inputs
    b = model.config.block_size
    for l, layer in enumerate(model.encoder.layer):
        att = layer.attention.self
        if isinstance(att, mbb.BigBirdBlockSparseAttention):
            att._raptor_layer = l
            att._raptor_seeds = (ENGINE_SEED, seed)
            att._raptor_head = 0
            att._raptor_nb = -(-n // b)


# --- models ---------------------------------------------------------------------------

def specs(size):
    if size == "tiny":
        dims = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        vocab = 60
        lens = [1, 5, 17, 40]
        sparse_lens = [150, 3, 161, 200]
        b, r, maxpos_sparse = 16, 2, 208
    else:
        dims = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
        vocab = 1000
        lens = [1, 9, 130, 512]
        sparse_lens = [1024, 3, 900]
        b, r, maxpos_sparse = 64, 3, 1024
    common = dict(vocab_size=vocab, **dims)
    return [
        ("bert", "bert", BertModel, BertConfig(max_position_embeddings=512 if size == "base" else 64, type_vocab_size=2,
                                               hidden_act="gelu", **common), lens, "gelu", "dense", 0),
        ("roberta", "roberta", RobertaModel, RobertaConfig(max_position_embeddings=(512 if size == "base" else 64) + 2,
                                                           type_vocab_size=1, pad_token_id=1, hidden_act="gelu", **common),
         lens, "gelu", "dense", 2),
        ("bigbird_full", "bigbird", BigBirdModel, BigBirdConfig(max_position_embeddings=512 if size == "base" else 64,
                                                                attention_type="original_full", hidden_act="gelu_new",
                                                                type_vocab_size=2, **common), lens, "gelu_tanh", "dense", 0),
        ("bigbird_sparse", "bigbird", BigBirdModel, BigBirdConfig(max_position_embeddings=maxpos_sparse,
                                                                  attention_type="block_sparse", block_size=b,
                                                                  num_random_blocks=r, hidden_act="gelu_new",
                                                                  type_vocab_size=2, **common),
         sparse_lens, "gelu_tanh", "block_sparse", 0),
    ]


def make(name, family, cls, cfg, lens, act, attention, offset, out_dir, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg.hidden_dropout_prob = 0.0
    cfg.attention_probs_dropout_prob = 0.0
    model = cls(cfg).eval()
    randomize(model, gen, cfg.hidden_size)
    rng = np.random.default_rng(seed)
    tensors = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids") or k.endswith("token_type_ids"):
            continue
        tensors[canonical(k)] = v.detach().numpy().astype(np.float32)
    tokens, types, cu, seeds, hidden, pooler = [], [], [0], [], [], []
    for s, n in enumerate(lens):
        ids = rng.integers(2, cfg.vocab_size, size=n)  # never the pad id (0 or 1)
        tt = rng.integers(0, cfg.type_vocab_size, size=n)
        rseed = 1000 + 7 * s
        if attention == "block_sparse":
            prepare_bigbird(model, n, rseed)
        with torch.no_grad():
            o = model(input_ids=torch.tensor(ids[None]), token_type_ids=torch.tensor(tt[None]),
                      attention_mask=torch.ones(1, n, dtype=torch.long))
        tokens.append(ids)
        types.append(tt)
        cu.append(cu[-1] + n)
        seeds.append(rseed)
        hidden.append(o.last_hidden_state[0].numpy())
        pooler.append(o.pooler_output[0].numpy())
    tensors["input.tokens"] = np.concatenate(tokens).astype(np.int32)
    tensors["input.token_types"] = np.concatenate(types).astype(np.int32)
    tensors["input.cu_seqlens"] = np.array(cu, dtype=np.int32)
    tensors["input.seeds"] = np.array(seeds, dtype=np.int64)
    tensors["expected.hidden"] = np.concatenate(hidden).astype(np.float32)
    tensors["expected.pooler"] = np.stack(pooler).astype(np.float32)
    config = dict(family=family, vocab_size=cfg.vocab_size, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                  heads=cfg.num_attention_heads, intermediate=cfg.intermediate_size,
                  max_positions=cfg.max_position_embeddings, type_vocab_size=cfg.type_vocab_size,
                  layer_norm_eps=cfg.layer_norm_eps, activation=act, position_offset=offset,
                  pad_token_id=cfg.pad_token_id, attention=attention,
                  block_size=getattr(cfg, "block_size", 0) if attention == "block_sparse" else 0,
                  random_blocks=getattr(cfg, "num_random_blocks", 0) if attention == "block_sparse" else 0,
                  pooler=True)
    meta = {"config": json.dumps(config), "engine_seed": str(ENGINE_SEED),
            "generator": f"make_parity.py torch {torch.__version__}"}
    import transformers
    meta["generator"] += f" transformers {transformers.__version__}"
    path = os.path.join(out_dir, name + ".safetensors")
    save_file(tensors, path, metadata=meta)
    print(f"{path}: lengths {lens}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default="", help="comma-separated model names")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    only = set(filter(None, a.only.split(",")))
    for i, spec in enumerate(specs(a.size)):
        if only and spec[0] not in only:
            continue
        make(*spec, a.out, seed=17 + i)


if __name__ == "__main__":
    main()
