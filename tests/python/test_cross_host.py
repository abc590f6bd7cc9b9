"""C, C++, Python and Go hosts, and the CLI, encode examples/ids.jsonl with the
same model on the CPU and produce bit-identical outputs.

Each host writes the mean-pooled outputs [n, h] and the hidden states [T, h]
as raw float32: the C and C++ hosts are tests/crosshost/host.c compiled as C
and as C++ against include/raptor.h; the Go host is the purego binding's
TestCrossHostDump; the Python host is this process. `raptor encode` (the CLI,
which runs the engine in Go directly, not through the C ABI) writes the pooled
outputs as .npy.
"""
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import EXAMPLES, ROOT

IDS = os.path.join(EXAMPLES, "ids.jsonl")
SENTENCES = os.path.join(EXAMPLES, "sentences.txt")
CLI = os.path.join(ROOT, "build", "raptor")


@pytest.fixture(scope="module")
def python_bytes(model, ids):
    enc = model.encode(ids, hidden=True)
    return enc.pooled.tobytes() + enc.packed.tobytes()


def run(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=600, **kw)
    assert p.returncode == 0, "%s failed (%d):\n%s\n%s" % (cmd[0], p.returncode, p.stdout[-4000:], p.stderr[-4000:])
    return p


@pytest.mark.parametrize("compiler,flags", [("gcc", ["-std=c99"]), ("g++", ["-x", "c++", "-std=c++17"])])
def test_c_and_cpp_hosts(compiler, flags, lib_path, model_path, python_bytes, tmp_path):
    if shutil.which(compiler) is None:
        pytest.skip("%s is not installed" % compiler)
    exe = tmp_path / "host"
    libdir = os.path.dirname(os.path.abspath(lib_path))
    run([compiler] + flags + ["-O1", "-Wall", "-Werror", "-I", os.path.join(ROOT, "include"),
                              os.path.join(ROOT, "tests", "crosshost", "host.c"), "-o", str(exe),
                              "-x", "none", os.path.abspath(lib_path), "-Wl,-rpath," + libdir])
    out = tmp_path / "out.bin"
    run([str(exe), model_path, IDS, str(out)])
    assert out.read_bytes() == python_bytes


def test_go_host(lib_path, model_path, python_bytes, tmp_path):
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed")
    out = tmp_path / "go.bin"
    env = dict(os.environ, CGO_ENABLED="0", RAPTOR_LIB=os.path.abspath(lib_path), RAPTOR_MODEL=model_path,
               RAPTOR_CROSSHOST_OUT=str(out))
    run([go, "test", "-count=1", "-run", "^TestCrossHostDump$", "./bindings/go/raptor"], cwd=ROOT, env=env)
    assert out.read_bytes() == python_bytes


def cli(args, tmp_path, name):
    if not os.path.exists(CLI):
        pytest.skip("build/raptor not built: run ./build.sh")
    out = tmp_path / name
    run([CLI, "encode", "--backend", "cpu", "-o", str(out)] + args)
    return out


def test_cli_ids(model_path, model, ids, tmp_path):
    out = cli(["--model", model_path, "--ids", IDS], tmp_path, "ids.npy")
    got = np.load(out)
    want = model.encode(ids)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert got.tobytes() == want.tobytes()


def test_cli_text_normalized(model_path, model, sentences, tmp_path):
    out = cli(["--model", model_path, "--normalize", "--pooling", "mean", SENTENCES], tmp_path, "s.npy")
    assert np.load(out).tobytes() == model.encode(sentences, normalize=True).tobytes()


def test_cli_jsonl_cls(model_path, model, sentences, tmp_path):
    import json
    out = cli(["--model", model_path, "--pooling", "cls", "--format", "jsonl", SENTENCES], tmp_path, "s.jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    want = model.encode(sentences, pooling="cls")
    assert [r["index"] for r in rows] == list(range(len(sentences)))
    assert [r["tokens"] for r in rows] == [len(model.tokenize(s)) for s in sentences]
    # JSONL floats are the shortest text that reads back as the same float32.
    assert np.array([r["embedding"] for r in rows], dtype=np.float32).tobytes() == want.tobytes()
