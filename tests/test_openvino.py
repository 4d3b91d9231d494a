"""OpenVINO as an export target and a backend, on tiny random models: `distil export --openvino` writes the fp32 IR
and the NNCF int8 IR, each checked against torch before it is published; the fp32 IR gives torch's logits and
embeddings, int8 agrees on most labels, a failing check publishes nothing, `auto` loads what export.json names,
predict and serve run with --backend openvino-int8. No timings are asserted."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

pytest.importorskip("openvino", reason="openvino is not installed: `pip install 'distilkit[openvino]'` to test the "
                                       "OpenVINO export and backends")
pytest.importorskip("nncf", reason="nncf is not installed: `pip install 'distilkit[openvino]'` to test the OpenVINO "
                                   "int8 export")

from distilkit.cli import app  # noqa: E402
from distilkit.data.task import load_task_data  # noqa: E402
from distilkit.deploy.backends import (BackendError, auto_backend, available_backends, load_backend, pad_tokens,  # noqa: E402
                                       predict_all, results)
from distilkit.deploy.export import ExportCheckError, export_onnx  # noqa: E402
from distilkit.deploy.serve import create_app  # noqa: E402
from distilkit.hardware import cpu_bf16  # noqa: E402

from .conftest import sentences  # noqa: E402
from .deploy_fixtures import SST2_LABELS, dev_texts, make_classifier, make_embedding_teacher  # noqa: E402,F401

runner = CliRunner()
OV_FILES = ("model.ov.xml", "model.ov.bin", "model.int8.ov.xml", "model.int8.ov.bin")
TEXTS = ["a good film", "the plot was very dull", "not a great actor"]


@pytest.fixture(scope="module")
def ov_classifier(tiny_glue, tmp_path_factory):
    """A tiny DistilBERT SST-2 classifier exported by `distil export --openvino`, checked on the tiny SST-2 dev set
    (32 examples: a tolerance of 10 points, as one flipped label is 3.1) and calibrated on its training texts."""
    folder = make_classifier(tmp_path_factory.mktemp("openvino") / "student")
    result = runner.invoke(app, ["export", str(folder), "--data", str(tiny_glue), "--tolerance", "10", "--openvino"])
    assert result.exit_code == 0, result.output
    return folder, json.loads((folder / "export.json").read_text()), result.output


@pytest.fixture(scope="module")
def embedding_sentences() -> list[str]:
    return list(dict.fromkeys(s for s, _ in sentences(120, seed=11)))


@pytest.fixture(scope="module")
def ov_embedding(tmp_path_factory, embedding_sentences):
    """A tiny sentence-embedding model exported to an ONNX + OpenVINO folder without safetensors, checked on
    sentences (dev data only: int8 is calibrated on part of them)."""
    root = tmp_path_factory.mktemp("openvino_embed")
    model = make_embedding_teacher(root / "model")
    info = export_onnx(model, root / "exported", data=embedding_sentences, sentences_source="test sentences",
                       min_cosine=0.9, openvino=True)
    return model, root / "exported", info


def test_export_writes_checked_ir_files_and_records_them(ov_classifier):
    folder, info, output = ov_classifier
    assert all((folder / name).exists() for name in OV_FILES)
    assert set(OV_FILES) <= set(info["files"]) and info["passed"] and info["failed"] == []
    results = info["check"]["results"]
    assert {"onnx", "onnx-int8", "openvino", "openvino-int8"} <= set(results)
    assert results["openvino"]["label_agreement"] == 1.0 and results["openvino"]["max_abs_logit_diff"] < 1e-4
    assert results["openvino-int8"]["score_drop_points"] <= 10
    calibration = info["openvino"]["int8"]["calibration"]  # the training texts of the task, not its dev set
    assert calibration["split"] == "train" and calibration["examples"] == 96 and calibration["overlaps_check"] is False
    assert info["openvino"]["weights"] == "fp32" and info["files"]["model.int8.ov.bin"] < info["files"]["model.ov.bin"]
    timing = info["timing"]
    assert timing["fastest"] in timing["results"] and set(info["check"]["results"]) - {"torch"} >= set(timing["results"])
    assert all(r["batch1_ms"] > 0 and r["batch_ms"] > 0 for r in timing["results"].values())
    batch = timing["method"]["batch"]
    assert batch == 32 and all(r["ms_per_text"] == r["batch_ms"] / batch for r in timing["results"].values())
    assert "openvino-int8" in output and "fastest checked backend" in output and "calibrated on 96 train texts" in output
    assert not list(folder.glob(".export-*"))


def test_openvino_fp32_logits_equal_torch(ov_classifier, dev_texts):
    folder, _, _ = ov_classifier
    torch_model, ov_model = load_backend(folder, "torch"), load_backend(folder, "openvino")
    assert ov_model.name == "openvino" and ov_model.packs  # a DistilBERT classifier: the packed graph
    packing = json.loads((folder / "export.json").read_text())["openvino"]["packed"]
    assert packing["inputs"][:4] == ["input_ids", "position_ids", "text_index", "first_token"]
    for batch in (1, 3, 16, 40):  # one text, several to a row, more rows than one call takes
        texts = dev_texts[:batch] + ["good " * 20]
        np.testing.assert_allclose(ov_model(texts), torch_model(texts), atol=1e-4)


def test_openvino_int8_agrees_on_most_labels(ov_classifier, dev_texts):
    folder, _, _ = ov_classifier
    ref = predict_all(load_backend(folder, "torch"), dev_texts).argmax(-1)
    int8 = predict_all(load_backend(folder, "openvino-int8"), dev_texts).argmax(-1)
    assert 0 < ref.mean() < 1  # both labels occur
    assert (ref == int8).mean() >= 0.85


@pytest.mark.parametrize("hint", ["openvino-bf16"])
def test_bf16_hint_backends_are_offered_and_checked_only_on_a_cpu_with_bf16(ov_classifier, dev_texts, hint):
    folder, info, _ = ov_classifier
    assert (hint in available_backends(folder)) == cpu_bf16()
    assert (hint in info["check"]["results"]) == cpu_bf16()
    if not cpu_bf16():
        pytest.skip(f"this CPU has no AVX-512 BF16 or AMX: {hint} is not offered")
    assert info["check"][hint.replace("-", "_")] == "passed: auto may pick it"
    backend = load_backend(folder, hint)
    assert backend.name == hint and backend.bf16
    ref = predict_all(load_backend(folder, "torch"), dev_texts)
    assert (predict_all(backend, dev_texts).argmax(-1) == ref.argmax(-1)).mean() >= 0.85


def test_auto_loads_the_backend_export_json_names(ov_classifier, tmp_path, monkeypatch):
    folder, info, _ = ov_classifier
    assert load_backend(folder).name == info["timing"]["fastest"]
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    record = json.loads((copy / "export.json").read_text())
    for fastest in ("openvino-int8", "openvino", "onnx"):
        record["timing"]["fastest"] = fastest
        (copy / "export.json").write_text(json.dumps(record))
        assert auto_backend(copy) == fastest and load_backend(copy).name == fastest
    record["timing"]["fastest"] = "openvino-int8"
    (copy / "export.json").write_text(json.dumps(record))
    monkeypatch.setitem(sys.modules, "openvino", None)  # an install without openvino: the ONNX fallback
    assert "openvino-int8" not in available_backends(copy) and auto_backend(copy) == "onnx-int8"
    with pytest.raises(BackendError, match=r"distilkit\[openvino\]"):
        load_backend(copy, "openvino-int8")
    monkeypatch.undo()
    (copy / "model.int8.ov.xml").unlink()  # the named file is gone: the fallback again
    assert auto_backend(copy) == "onnx-int8"
    del record["timing"]
    (copy / "export.json").write_text(json.dumps(record))
    assert auto_backend(copy) == "onnx-int8"


def test_a_failing_check_publishes_no_openvino_file(tiny_glue, tmp_path):
    folder = make_classifier(tmp_path / "student")
    info = export_onnx(folder, openvino=True)  # unchecked: the fp32 IR only (nothing to calibrate int8 on)
    assert (folder / "model.ov.xml").exists() and not (folder / "model.int8.ov.xml").exists()
    assert "skipped" in info["openvino"]["int8"] and "timing" not in info
    assert auto_backend(folder) == "onnx-int8"  # no timing recorded: the fallback order
    with pytest.raises(ExportCheckError, match=r"model\.ov\.xml .*model\.int8\.ov\.xml|model\.int8\.ov\.xml"):
        export_onnx(folder, data=load_task_data("sst2", tiny_glue), tolerance=-100, openvino=True)
    assert not any((folder / name).exists() for name in (*OV_FILES, "model.onnx", "model.int8.onnx"))
    record = json.loads((folder / "export.json").read_text())
    assert record["passed"] is False and {"openvino", "openvino-int8"} <= set(record["failed"])
    assert "timing" not in record and "openvino" in record["check"]["results"]


def test_export_without_openvino_removes_earlier_ir_files(ov_classifier, tmp_path):
    folder, _, _ = ov_classifier
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    export_onnx(copy, quantize=False)
    assert not any((copy / name).exists() for name in OV_FILES)
    assert available_backends(copy) == ["torch", "torch-bf16", "onnx"]


def test_openvino_embeddings_equal_torch(ov_embedding, embedding_sentences):
    model, exported, info = ov_embedding
    assert not list(exported.glob("*.safetensors")) and all((exported / name).exists() for name in OV_FILES)
    results = info["check"]["results"]
    assert results["openvino"]["min_cosine"] > 0.9999 and results["openvino-int8"]["mean_cosine"] > 0.9
    calibration = info["openvino"]["int8"]["calibration"]  # dev data only: part of it, said so
    assert calibration["split"] == "check sentences" and calibration["overlaps_check"] is True
    assert calibration["examples"] == len(embedding_sentences[::2])
    assert info["openvino"]["packed"]["pooling"] == "mean" and load_backend(exported, "openvino").packs
    ref = load_backend(model, "torch")(embedding_sentences[:20])
    got = load_backend(exported, "openvino")(embedding_sentences[:20])  # 20 sentences, several to a row
    cos = (ref * got).sum(-1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1))
    assert got.shape == ref.shape and cos.min() > 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1, atol=1e-5)  # the pooling's normalisation


def test_predict_and_serve_with_openvino_int8(ov_classifier, ov_embedding):
    folder, _, _ = ov_classifier
    backend = load_backend(folder, "openvino-int8")
    ref = results(backend(TEXTS), backend.id2label, backend.regression)
    run = runner.invoke(app, ["predict", str(folder), *TEXTS, "--backend", "openvino-int8"])
    assert run.exit_code == 0, run.output
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert [r["label"] for r in rows] == [r["label"] for r in ref] and {r["label"] for r in rows} <= set(
        SST2_LABELS.values())
    np.testing.assert_allclose([r["score"] for r in rows], [r["score"] for r in ref], atol=1e-5)

    with TestClient(create_app(folder, "openvino-int8")) as client:
        r = client.post("/v1/classify", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        assert [row["label"] for row in r.json()["results"]] == [row["label"] for row in ref]
        assert client.get("/health").json()["backend"] == "openvino-int8"

    _, exported, _ = ov_embedding
    with TestClient(create_app(exported, "openvino-int8")) as client:
        r = client.post("/v1/embed", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["embeddings"]), load_backend(exported, "openvino-int8")(TEXTS),
                                   atol=1e-5)


def test_bench_runs_the_openvino_backends(ov_classifier, tmp_path):
    folder, _, _ = ov_classifier
    result = runner.invoke(app, ["bench", "--student", str(folder), "--seq", "8", "--batch", "2", "--repeats", "1",
                                 "--rounds", "1", "--peak-size", "64", "--backends", "onnx,openvino,openvino-int8",
                                 "--out", str(tmp_path / "bench")])
    assert result.exit_code == 0, result.output
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert {r["backend"] for r in bench["results"]} == {"onnx", "openvino", "openvino-int8"}
    assert {r["precision"] for r in bench["results"]} == {"fp32", "int8"}
    assert "model.int8.ov.bin" in bench["models"]["student"]["files"] and bench["hardware"]["openvino"]
    assert "OpenVINO int8 (NNCF)" in (tmp_path / "bench" / "bench.md").read_text()


def test_openvino_export_without_openvino_installed_says_what_to_install(tmp_path, monkeypatch):
    folder = make_classifier(tmp_path / "student")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendError, match=r"pip install 'distilkit\[openvino\]'"):
        export_onnx(folder, openvino=True)
    assert not (folder / "model.onnx").exists()  # refused before any work


def test_pad_tokens_rounds_the_token_axis_up_within_max_length():
    enc = {"input_ids": np.array([[101, 7, 102], [101, 102, 0]]), "attention_mask": np.array([[1, 1, 1], [1, 1, 0]])}
    padded = pad_tokens(enc, 16, 128, pad_id=0)
    assert padded["input_ids"].shape == (2, 16) and padded["attention_mask"][:, 3:].sum() == 0
    np.testing.assert_array_equal(padded["input_ids"][:, :3], enc["input_ids"])
    assert pad_tokens(enc, 16, 10, pad_id=0)["input_ids"].shape == (2, 10)  # never beyond max_length
    left = pad_tokens(enc, 4, 128, pad_id=5, left=True)
    np.testing.assert_array_equal(left["input_ids"][:, 0], [5, 5])
    np.testing.assert_array_equal(left["attention_mask"][:, 0], [0, 0])
    full = {k: np.zeros((1, 16), dtype=np.int64) for k in enc}
    assert pad_tokens(full, 16, 128, pad_id=0) is full


@pytest.mark.parametrize("name", ["openvino", "openvino-int8"])
def test_openvino_pads_to_length_buckets_without_changing_outputs(ov_classifier, dev_texts, name):
    folder, _, _ = ov_classifier
    bucketed = load_backend(folder, name)
    assert bucketed.length_multiple == 16
    assert bucketed.encode(["a good film"])["input_ids"].shape[1] % 16 == 0
    exact = load_backend(folder, name)
    exact.length_multiple = None  # padded to the longest text only
    np.testing.assert_allclose(predict_all(bucketed, dev_texts), predict_all(exact, dev_texts), atol=1e-4)


def test_serve_warms_up_every_openvino_shape_it_will_run(ov_classifier):
    folder, _, _ = ov_classifier
    backend = load_backend(folder, "openvino-int8", max_length=40)
    seen = []
    forward = backend.forward
    backend.forward = lambda inputs: seen.append(inputs["input_ids"].shape) or forward(inputs)
    with TestClient(create_app(folder, backend, sub_batch=3, max_batch=8)) as client:
        assert client.get("/health").json()["warm_up"]["shapes"] == 3 * 3  # lengths 16, 32, 40 x batch 1..3
        warmed = set(seen)
        assert warmed == {(b, n) for b in (1, 2, 3) for n in (16, 32, 40)}
        texts = ["word " * k for k in range(1, 40, 3)]
        assert client.post("/v1/classify", json={"texts": texts}).status_code == 200
    assert set(seen[len(warmed):]) <= warmed  # every call of the request ran a warmed shape


def test_openvino_backend_takes_a_thread_count(ov_classifier):
    folder, _, _ = ov_classifier
    assert load_backend(folder, "openvino-int8", threads=1).compiled.get_property("INFERENCE_NUM_THREADS") == 1
