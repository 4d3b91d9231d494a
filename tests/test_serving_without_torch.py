"""Serving an exported model needs no torch: `distil predict` (--backend onnx-int8 and auto) and the `distil serve`
app (/v1/classify, /v1/embed) on ONNX exports of a classifier and an embedding model, in a subprocess where
`import torch` fails (and datasets, scikit-learn, scipy, matplotlib and accelerate too: a serving-only install
has none of them). The models are built and exported here, with torch; the answers are checked against the
same backend in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distilkit

from .deploy_fixtures import SST2_LABELS, tiny_embedding_onnx, tiny_student  # noqa: F401

TEXTS = ["a good film", "the plot was very dull", "not a great actor"]
BLOCKED = ("torch", "datasets", "sklearn", "scipy", "matplotlib", "accelerate")
MARKER = "RESULT:"

# Runs in a fresh interpreter: argv = classifier folder, embedding folder, texts (JSON). Blocks the modules
# before anything is imported, so any import of them (at module level or in a function) raises ImportError.
SCRIPT = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
import json

classifier, embedder, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
try:
    import torch  # noqa: F401
    torch_importable = True
except ImportError:
    torch_importable = False

from fastapi.testclient import TestClient
from typer.testing import CliRunner

import distilkit
from distilkit.cli import app
from distilkit.deploy.serve import create_app

out = {{"torch_importable": torch_importable, "distilkit": distilkit.__file__}}
runner = CliRunner()
for key, args in (("predict_int8", [classifier, *texts, "--backend", "onnx-int8"]),
                  ("predict_auto", [classifier, *texts]),
                  ("predict_embed", [embedder, *texts, "--backend", "onnx-int8"]),
                  ("predict_embed_auto", [embedder, *texts]),
                  ("predict_torch", [classifier, *texts, "--backend", "torch"])):
    r = runner.invoke(app, ["predict", *args])
    out[key] = {{"exit_code": r.exit_code, "stdout": r.stdout, "output": r.output, "exception": repr(r.exception)}}
for key, folder, path in (("classify", classifier, "/v1/classify"), ("embed", embedder, "/v1/embed")):
    with TestClient(create_app(folder, "onnx-int8")) as client:  # with: the lifespan (the batcher) runs
        r = client.post(path, json={{"texts": texts}})
        out[key] = {{"status": r.status_code, "body": r.json(), "health": client.get("/health").json()}}
out["blocked_still_none"] = {{name: name in sys.modules and sys.modules[name] is None for name in {BLOCKED!r}}}
print({MARKER!r} + json.dumps(out))
"""


@pytest.fixture(scope="module")
def torchless(tiny_student, tiny_embedding_onnx) -> dict:
    """What the torch-free subprocess saw (one subprocess for all the checks: starting one costs seconds)."""
    src = str(Path(distilkit.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "DISTILKIT_QUIET": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_student), str(tiny_embedding_onnx), json.dumps(TEXTS)],
                          capture_output=True, text=True, env=env, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    assert proc.returncode == 0 and lines, f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    out = json.loads(lines[-1][len(MARKER):])
    out["stderr"] = proc.stderr
    assert Path(out["distilkit"]).resolve().is_relative_to(src), "the subprocess imported another distilkit"
    return out


def classifier_reference(folder) -> list[dict]:
    from distilkit.deploy.backends import load_backend, results

    backend = load_backend(folder, "onnx-int8")
    return results(backend(TEXTS), backend.id2label, backend.regression)


def embedding_reference(folder) -> np.ndarray:
    from distilkit.deploy.backends import load_backend

    return load_backend(folder, "onnx-int8")(TEXTS)


def jsonl(run: dict) -> list[dict]:
    assert run["exit_code"] == 0, f"{run['output']}\n{run['exception']}"
    return [json.loads(line) for line in run["stdout"].splitlines() if line.strip()]


def test_torch_and_the_training_libraries_cannot_be_imported_and_stay_unimported(torchless):
    assert torchless["torch_importable"] is False
    assert torchless["blocked_still_none"] == {name: True for name in BLOCKED}
    said = torchless["stderr"] + "".join(run["output"] for key, run in torchless.items() if key.startswith("predict"))
    assert "PyTorch was not found" not in said  # the CLI silences transformers' advice when torch is not installed


def test_the_torch_backend_without_torch_is_a_clear_error(torchless):
    run = torchless["predict_torch"]
    assert run["exit_code"] == 2 and "torch backend needs torch" in run["output"], run
    assert "distilkit[train]" in run["output"] and "Traceback" not in run["output"]


@pytest.mark.parametrize("key", ["predict_int8", "predict_auto"])
def test_predict_on_an_onnx_classifier_without_torch(torchless, tiny_student, key):
    rows = jsonl(torchless[key])
    assert len(rows) == len(TEXTS) and {r["label"] for r in rows} <= set(SST2_LABELS.values())
    ref = classifier_reference(tiny_student)
    assert [r["label"] for r in rows] == [r["label"] for r in ref]
    np.testing.assert_allclose([r["score"] for r in rows], [r["score"] for r in ref], atol=1e-5)


@pytest.mark.parametrize("key", ["predict_embed", "predict_embed_auto"])
def test_predict_on_an_onnx_embedding_model_without_torch(torchless, tiny_embedding_onnx, key):
    got = np.array([r["embedding"] for r in jsonl(torchless[key])])
    ref = embedding_reference(tiny_embedding_onnx)
    assert got.shape == ref.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert np.abs(ref[0] - ref[1]).max() > 1e-3, "the texts' embeddings should differ"


def test_serve_classify_without_torch(torchless, tiny_student):
    answer = torchless["classify"]
    assert answer["status"] == 200, answer["body"]
    rows = answer["body"]["results"]
    ref = classifier_reference(tiny_student)
    assert [r["label"] for r in rows] == [r["label"] for r in ref]
    np.testing.assert_allclose([r["score"] for r in rows], [r["score"] for r in ref], atol=1e-5)
    assert answer["health"]["backend"] == "onnx-int8"


def test_serve_embed_without_torch(torchless, tiny_embedding_onnx):
    answer = torchless["embed"]
    assert answer["status"] == 200, answer["body"]
    assert answer["body"]["dimension"] == 32 and answer["body"]["normalized"] is True
    np.testing.assert_allclose(np.array(answer["body"]["embeddings"]), embedding_reference(tiny_embedding_onnx),
                               atol=1e-4)
    assert answer["health"]["kind"] == "embedding"
