"""`distil predict` and `distil serve` give the labels `distil eval` scores; inputs from arguments,
stdin, text files and JSONL; bad input names its line."""

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from distilkit.cli import app
from distilkit.data.task import load_task_data
from distilkit.metrics import predictions
from distilkit.models.folders import load_tokenizer
from distilkit.models.loading import load_classifier
from distilkit.deploy.serve import create_app
from distilkit.train.common import encode, predict_logits

from .deploy_fixtures import tiny_pair_model, tiny_student  # noqa: F401

runner = CliRunner()


def _predict(args, stdin=None):
    result = runner.invoke(app, ["predict", *map(str, args)], input=stdin)
    return result, [json.loads(line) for line in result.stdout.splitlines()] if result.exit_code == 0 else None


@pytest.fixture(scope="module")
def dev(tiny_glue):
    return load_task_data("sst2", tiny_glue).dev["dev"]


@pytest.fixture(scope="module")
def eval_labels(tiny_student, dev):
    """Labels the way `distil eval` computes them (encode + predict_logits on the torch model)."""
    model, tokenizer = load_classifier(str(tiny_student)), load_tokenizer(str(tiny_student))
    ids = predictions(predict_logits(model, encode(dev, tokenizer, 128), tokenizer), regression=False)
    return [model.config.id2label[int(i)] for i in ids]


@pytest.mark.parametrize("backend", ["torch", "onnx", "auto"])
def test_predict_file_gives_eval_labels(tiny_student, dev, eval_labels, backend, tmp_path):
    path = tmp_path / "dev.txt"
    path.write_text("\n".join(dev["text"]) + "\n")
    result, rows = _predict([tiny_student, "--file", path, "--backend", backend, "--batch-size", 5])
    assert result.exit_code == 0, result.output
    labels = [r["label"] for r in rows]
    if backend == "auto":  # int8: most labels
        assert np.mean([a == b for a, b in zip(labels, eval_labels)]) >= 0.85
    else:
        assert labels == eval_labels
    assert all(0.5 <= r["score"] <= 1 for r in rows)


def test_predict_accuracy_equals_distil_eval(tiny_student, tiny_glue, dev, tmp_path):
    result = runner.invoke(app, ["eval", str(tiny_student), "--data", str(tiny_glue), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    accuracy = json.loads((tmp_path / "m.json").read_text())["metrics"]["accuracy"]
    _, rows = _predict([tiny_student, "--backend", "torch"], stdin="\n".join(dev["text"]))
    ids = [{"negative": 0, "positive": 1}[r["label"]] for r in rows]
    assert np.mean(np.array(ids) == np.array(dev["label"])) == pytest.approx(accuracy)


def test_serve_gives_eval_labels(tiny_student, dev, eval_labels):
    for backend in ("torch", "onnx"):
        with TestClient(create_app(tiny_student, backend, max_texts=64)) as client:
            r = client.post("/v1/classify", json={"texts": list(dev["text"])})
            assert [row["label"] for row in r.json()["results"]] == eval_labels


def test_arguments_stdin_and_jsonl_agree(tiny_student, tmp_path):
    texts = ["a good film", "very bad plot", "the story was dull"]
    _, from_args = _predict([tiny_student, *texts])
    _, from_stdin = _predict([tiny_student], stdin="\n".join(texts) + "\n\n")  # blank lines skipped
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    _, from_jsonl = _predict([tiny_student, "--file", jsonl])
    _, jsonl_stdin = _predict([tiny_student], stdin=jsonl.read_text())  # detected by its first "{"
    assert len(from_args) == 3 and from_args == from_stdin == from_jsonl == jsonl_stdin
    assert set(from_args[0]) == {"label", "score"}


def test_jsonl_pairs_for_a_pair_model(tiny_pair_model, tmp_path):
    rows = [{"text": "good film", "text_pair": "a nice movie"}, {"text": "bad plot", "text_pair": "the actor"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    result, out = _predict([tiny_pair_model, "--file", path])
    assert result.exit_code == 0, result.output
    assert [r["label"] in ("equivalent", "not_equivalent") for r in out] == [True, True]
    with TestClient(create_app(tiny_pair_model, "torch")) as client:
        served = client.post("/v1/classify", json={"texts": [r["text"] for r in rows],
                                                   "text_pairs": [r["text_pair"] for r in rows]}).json()["results"]
    assert [r["label"] for r in served] == [r["label"] for r in out]
    result, _ = _predict([tiny_pair_model, "good film"])
    assert result.exit_code != 0 and "text pairs" in result.output


@pytest.mark.parametrize("content,message", [
    ('{"text": "good"}\n{"text": "bad"\n', "line 2: invalid JSON"),
    ('{"text": "good"}\n\n{"txt": "bad"}\n', 'line 3: expected an object with a "text" string'),
    ('{"text": "good"}\n{"text": 5}\n', 'line 2: expected an object with a "text" string'),
    ('{"text": "good", "text_pair": "fine"}\n{"text": "bad"}\n', 'line 2: no "text_pair"'),
    ('{"text": "good", "text_pair": 1}\n', 'line 1: "text_pair" must be a string'),
])
def test_bad_jsonl_names_the_line(tiny_student, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    result, _ = _predict([tiny_student, "--file", path])
    assert result.exit_code == 2 and message in result.output and "bad.jsonl" in result.output


def test_bad_input_errors(tiny_student, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("good film\ncafé bad\n".encode("latin-1"))
    result, _ = _predict([tiny_student, "--file", path])
    assert result.exit_code == 2 and "line 2: not valid UTF-8" in result.output
    result, _ = _predict([tiny_student, "--file", tmp_path / "nope.txt"])
    assert result.exit_code == 2 and "no such file" in result.output
    result, _ = _predict([tiny_student, "good", "--backend", "tensorrt"])
    assert result.exit_code == 2 and "unknown backend 'tensorrt'" in result.output


def test_torch_bf16_backend_runs_bf16_weights_close_to_fp32(tiny_student):
    from distilkit.deploy.backends import load_backend

    fp32, bf16 = load_backend(tiny_student, "torch"), load_backend(tiny_student, "torch-bf16")
    assert {p.dtype for p in bf16.model.parameters()} == {bf16.torch.bfloat16}  # cast once, not per call
    texts = ["a good film", "the plot was very dull", "fine", "not bad at all, a nice story"]
    got, ref = bf16(texts), fp32(texts)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=0.1 * np.abs(ref).max())  # bf16 keeps ~3 significant digits
