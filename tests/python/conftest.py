"""Shared fixtures of the Python tests: the binding from bindings/python, the
library ($RAPTOR_LIB or build/libraptor.so) and the default model
($RAPTOR_MODEL or build/models/all-MiniLM-L6-v2.raptor). Tests that need a
missing piece skip and say which; ./build.sh builds both."""
import json
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))

LIB = os.environ.get("RAPTOR_LIB") or os.path.join(ROOT, "build", "libraptor.so")
MODEL = os.environ.get("RAPTOR_MODEL") or os.path.join(ROOT, "build", "models", "all-MiniLM-L6-v2.raptor")
EXAMPLES = os.path.join(ROOT, "examples")


def read_ids(path=os.path.join(EXAMPLES, "ids.jsonl")):
    seqs = []
    with open(path) as f:
        for line in f:
            if line.strip():
                v = json.loads(line)
                seqs.append(v["ids"] if isinstance(v, dict) else v)
    return seqs


def read_sentences(path=os.path.join(EXAMPLES, "sentences.txt")):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


@pytest.fixture(scope="session")
def lib_path():
    if not os.path.exists(LIB):
        pytest.skip("libraptor.so not built (%s): run ./build.sh" % LIB)
    os.environ["RAPTOR_LIB"] = LIB
    return LIB


@pytest.fixture(scope="session")
def model_path(lib_path):
    if not os.path.exists(MODEL):
        pytest.skip("default model not converted (%s): run ./build.sh" % MODEL)
    return MODEL


@pytest.fixture(scope="session")
def raptor(lib_path):
    import raptor as r
    return r


@pytest.fixture(scope="module")
def engine(raptor):
    with raptor.Engine(backend="cpu") as e:
        yield e


@pytest.fixture(scope="module")
def model(engine, model_path):
    m = engine.load(model_path)
    yield m
    m.close()


@pytest.fixture(scope="session")
def ids():
    return read_ids()


@pytest.fixture(scope="session")
def sentences():
    return read_sentences()
