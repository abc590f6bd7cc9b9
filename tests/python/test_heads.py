"""Task heads through the Python binding: Model.classify returns HF's logits
(the committed tiny fixtures of engine/testdata/heads, converted with
`raptor convert`) with the label names; a model without a head raises
UnsupportedError."""
import json
import os
import subprocess

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HEADS = os.path.join(ROOT, "engine", "testdata", "heads")
RAPTOR = os.path.join(ROOT, "build", "raptor")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not os.path.exists(RAPTOR):
        pytest.skip("build/raptor not built (./build.sh)")
    out = tmp_path_factory.mktemp("heads")
    paths = {}
    for name in ("bert_seq", "roberta_tok", "bigbird_qa"):
        p = str(out / (name + ".raptor"))
        subprocess.run([RAPTOR, "convert", os.path.join(HEADS, name), "-dtype", "f32", "-o", p], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        paths[name] = p
    return paths


@pytest.mark.parametrize("name,kind,labels", [
    ("bert_seq", "sequence_classification", ["negative", "neutral", "positive"]),
    ("roberta_tok", "token_classification", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
    ("bigbird_qa", "question_answering", ["LABEL_0", "LABEL_1"]),
])
def test_classify_matches_hf(engine, converted, name, kind, labels):
    with open(os.path.join(HEADS, name, "expected.json")) as f:
        exp = json.load(f)
    m = engine.load(converted[name])
    try:
        assert m.info.head_kind == kind and m.info.num_labels == len(labels)
        assert m.labels == labels
        cu = exp["cu_seqlens"]
        seqs = [exp["tokens"][cu[i]:cu[i + 1]] for i in range(len(cu) - 1)]
        types = [exp["token_types"][cu[i]:cu[i + 1]] for i in range(len(cu) - 1)]
        r = m.classify(seqs, token_type_ids=types)
        want = np.array(exp["logits"]).reshape(r.logits.shape)
        scale = np.abs(want[np.abs(want) < 1e5]).max()
        assert np.abs(r.logits - want).max() / scale <= 1e-4
        assert r.kind == kind and r.labels == labels and list(r.cu_seqlens) == cu
    finally:
        m.close()


def test_classify_without_head(raptor, model):
    assert model.info.head_kind == "none" and model.info.num_labels == 0 and model.labels == []
    with pytest.raises(raptor.UnsupportedError):
        model.classify([[101, 102]])
