"""ONNX export on tiny random classifiers: logits match torch, int8 agrees, the dev-set check, failures."""

import json
import platform

import numpy as np
import pytest
from typer.testing import CliRunner

from distilkit.deploy.backends import load_backend, predict_all
from distilkit.cli import app
from distilkit.data.task import load_task_data
from distilkit.deploy.bench import time_blocks
from distilkit.deploy.export import ExportCheckError, export_onnx
from distilkit.hardware import MALLOC

from .deploy_fixtures import dev_texts, make_classifier, tiny_student  # noqa: F401

runner = CliRunner()


@pytest.fixture(scope="module", params=["distilbert", "bert"])
def exported(request, tmp_path_factory):
    """A tiny classifier of each kind, exported (fp32 + int8) without a check."""
    task = "mrpc" if request.param == "bert" else "sst2"  # BERT as a pair model: token_type_ids matter
    folder = make_classifier(tmp_path_factory.mktemp("export") / request.param, request.param, task)
    info = export_onnx(folder)
    return folder, info, task == "mrpc"


def test_onnx_fp32_logits_equal_torch(exported, dev_texts):
    folder, info, pair = exported
    assert info["fused_operators"].get("Attention") == 2  # both layers fused
    torch_model, onnx_model = load_backend(folder, "torch"), load_backend(folder, "onnx")
    pairs = dev_texts[::-1] if pair else None
    for batch in (1, 3, 16):  # dynamic batch and sequence axes: other shapes than the traced sample
        texts = dev_texts[:batch] + ["good " * 20]  # one long text pads the rest
        p = pairs[: batch + 1] if pair else None
        np.testing.assert_allclose(onnx_model(texts, p), torch_model(texts, p), atol=1e-4)


def test_int8_agrees_on_most_labels(exported, dev_texts):
    folder, info, pair = exported
    assert info["files"]["model.int8.onnx"] < 0.8 * info["files"]["model.onnx"]
    pairs = dev_texts[::-1] if pair else None
    ref = predict_all(load_backend(folder, "torch"), dev_texts, pairs).argmax(-1)
    int8 = predict_all(load_backend(folder, "onnx-int8"), dev_texts, pairs).argmax(-1)
    assert 0 < ref.mean() < 1  # both labels occur, so agreement means something
    assert (ref == int8).mean() >= 0.85


def test_auto_backend_is_the_fastest_exported(exported, tmp_path):
    folder, _, _ = exported
    assert load_backend(folder).name == "onnx-int8"
    plain = make_classifier(tmp_path / "plain")
    assert load_backend(plain).name == "torch"


def test_check_writes_export_json(tiny_glue, tmp_path):
    folder = make_classifier(tmp_path / "student")
    data = load_task_data("sst2", tiny_glue)
    info = export_onnx(folder, data=data, tolerance=10)  # 32 dev examples: one flipped label is 3.1 points
    on_disk = json.loads((folder / "export.json").read_text())
    assert on_disk["passed"] and on_disk["is_pair"] is False and on_disk == json.loads(json.dumps(info))
    results = on_disk["check"]["results"]
    assert set(results) == {"torch", "onnx", "onnx-int8"} and on_disk["check"]["dev_examples"] == 32
    assert results["onnx"]["label_agreement"] == 1.0 and results["onnx"]["max_abs_logit_diff"] < 1e-4
    assert results["onnx"]["score_drop_points"] == pytest.approx(0.0)
    assert results["onnx-int8"]["label_agreement"] >= 0.8
    assert (folder / "model.onnx").exists() and (folder / "model.int8.onnx").exists()
    assert not list(folder.glob(".export-*"))  # temporary files gone


def test_export_to_another_folder_runs_on_its_own(tiny_student, tmp_path):
    out = tmp_path / "onnx"
    export_onnx(tiny_student, out, quantize=False)
    assert not (out / "model.int8.onnx").exists() and not (out / "model.safetensors").exists()
    backend = load_backend(out)
    assert backend.name == "onnx" and backend.max_length == 32  # distil.json came along
    np.testing.assert_allclose(backend(["good film"]), load_backend(tiny_student, "torch")(["good film"]), atol=1e-4)


def test_tolerance_failure_raises_and_publishes_nothing(tiny_glue, tmp_path):
    folder = make_classifier(tmp_path / "student")
    export_onnx(folder)  # an earlier export, which the failing one must not leave behind
    with pytest.raises(ExportCheckError, match=r"drops the sst2 dev score .*\(tolerance -100"):
        export_onnx(folder, data=load_task_data("sst2", tiny_glue), tolerance=-100)
    assert not (folder / "model.onnx").exists() and not (folder / "model.int8.onnx").exists()
    info = json.loads((folder / "export.json").read_text())
    assert info["passed"] is False and info["failed"] == ["onnx", "onnx-int8"]


def test_cli_export_checks_and_fails_loudly(tiny_glue, tmp_path):
    folder = make_classifier(tmp_path / "student")
    export_onnx(folder)
    ok = runner.invoke(app, ["export", str(folder), "--data", str(tiny_glue), "--no-int8"])
    assert ok.exit_code == 0, ok.output
    assert "label agreement" in ok.output and (folder / "model.onnx").exists()
    assert not (folder / "model.int8.onnx").exists()  # the earlier int8 file is gone, not left stale
    bad = runner.invoke(app, ["export", str(folder), "--data", str(tiny_glue), "--tolerance", "-100"])
    assert bad.exit_code != 0 and "export check failed" in bad.output and "tolerance -100" in bad.output


def test_cli_export_of_a_missing_folder_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path / "missing"), "--no-check"])
    assert result.exit_code == 2 and "missing is not a folder" in result.output


def test_export_of_a_model_trained_on_user_files_checks_on_its_dev_file(tiny_teacher, tmp_path):
    from distilkit.stages.task import finetune_teacher
    from distilkit.train.common import TrainConfig

    from .conftest import sentences

    for split, n, seed in (("reviews", 96, 1), ("held_out", 40, 2)):
        lines = ["review,sentiment"] + [f"{s},{'pos' if y else 'neg'}" for s, y in sentences(n, seed)]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    data = load_task_data(train_file=tmp_path / "reviews.csv", dev_file=tmp_path / "held_out.csv",
                          text_column="review", label_column="sentiment")
    cfg = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-3, max_length=32, bf16=False)
    model = tmp_path / "model"
    finetune_teacher(str(tiny_teacher), data, cfg, model)

    result = runner.invoke(app, ["export", str(model)])
    assert result.exit_code == 0, result.output
    check = json.loads((model / "export.json").read_text())["check"]
    assert check["task"] == "reviews" and check["data"]["dev_file"] == str(tmp_path / "held_out.csv")
    assert check["dev_examples"] == 40 and check["results"]["onnx"]["label_agreement"] == 1.0
    predicted = runner.invoke(app, ["predict", str(model), "a good film", "a dull plot"])
    assert {json.loads(line)["label"] for line in predicted.output.splitlines()} <= {"neg", "pos"}
    from fastapi.testclient import TestClient

    from distilkit.deploy.serve import create_app

    with TestClient(create_app(model)) as client:
        answer = client.post("/v1/classify", json={"texts": ["a good film", "a dull plot"]}).json()["results"]
    assert [r["label"] for r in answer] == [json.loads(line)["label"] for line in predicted.output.splitlines()]
    assert set(answer[0]["scores"]) == {"neg", "pos"}

    scored = runner.invoke(app, ["eval", str(model)])  # eval too scores on the recorded dev file by default
    assert scored.exit_code == 0, scored.output
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["task"] == "reviews" and metrics["metrics"] == pytest.approx(check["results"]["torch"])

    # another dev file, with other columns and only some of the labels, given by --dev
    lines = ["text\ttag"] + [f"{s}\t{'pos' if y else 'neg'}" for s, y in sentences(12, 5)]
    (tmp_path / "other.tsv").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["export", str(model), "--dev", str(tmp_path / "other.tsv"), "--label-column", "tag"])
    assert result.exit_code == 0, result.output
    check = json.loads((model / "export.json").read_text())["check"]
    assert check["dev_examples"] == 12 and check["data"]["dev_file"] == str(tmp_path / "other.tsv")
    bad = runner.invoke(app, ["eval", str(model), "--dev", str(tmp_path / "other.tsv"), "--label-column", "label"])
    assert bad.exit_code == 2 and "'label'" in bad.output and "other.tsv" in bad.output

    from distilkit.stages.task import training_data

    again = training_data(str(model))  # what sweep distils on by default: the teacher's own files
    assert again.name == "reviews" and len(again.train) == 96 and again.label_names == ["neg", "pos"]


def test_bench_times_each_backend_alone_in_blocks(tiny_student, tmp_path):  # noqa: F811
    result = runner.invoke(app, ["bench", "--student", str(tiny_student), "--seq", "8,16", "--batch", "4",
                                 "--repeats", "3", "--rounds", "2", "--peak-size", "64", "--backends", "torch,onnx-int8",
                                 "--out", str(tmp_path / "bench")])
    assert result.exit_code == 0, result.output
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert bench["method"]["rounds"] == 2 and bench["method"]["repeats_per_block"] == 3
    assert [(r["name"], r["backend"]) for r in bench["results"]] == [
        (name, backend) for name in ("latency b1 s8", "latency b1 s16", "throughput b4 s16")
        for backend in ("torch", "onnx-int8")]
    for r in bench["results"]:
        assert len(r["block_medians_ms"]) == 2
        assert r["median_ms"] == pytest.approx(float(np.median(r["block_medians_ms"])))
        assert r["spread_pct"] == pytest.approx(
            (max(r["block_medians_ms"]) - min(r["block_medians_ms"])) / r["median_ms"] * 100)
    assert {"cpu", "isa", "load_average_at_start", "load_average_at_end", "busy_cores_at_start"} <= set(bench["hardware"])
    busy = bench["hardware"]["busy_cores_at_start"]
    assert busy is None or 0 <= busy <= bench["hardware"]["cores"]
    if platform.libc_ver()[0] == "glibc":  # malloc keeps freed activations: timings do not depend on what ran before
        assert bench["hardware"]["malloc"] == MALLOC
    assert "| spread |" in (tmp_path / "bench" / "bench.md").read_text()


def test_bench_times_more_models_given_by_name(tiny_student, tmp_path):  # noqa: F811
    args = ["bench", "--student", str(tiny_student), "--seq", "8", "--batch", "2", "--repeats", "1", "--rounds", "1",
            "--peak-size", "64", "--backends", "onnx-int8", "--out", str(tmp_path / "bench")]
    result = runner.invoke(app, [*args, "--model", f"narrow={tiny_student}"])
    assert result.exit_code == 0, result.output
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert {r["model"] for r in bench["results"]} == {"student", "narrow"} and set(bench["models"]) == {"student", "narrow"}
    bad = runner.invoke(app, [*args, "--model", f"student={tiny_student}"])
    assert bad.exit_code == 2 and "--model" in bad.output


def test_each_bench_block_warms_up_for_a_number_of_calls_and_a_time():
    calls = []
    block = time_blocks(lambda: calls.append(1), repeats=2, warmup=1, warmup_s=0.05)
    assert len(block) == 2 and len(calls) > 10  # a no-op is called far more than once in 50 ms before timing
    calls.clear()
    time_blocks(lambda: calls.append(1), repeats=2, warmup=5, warmup_s=0.0)
    assert len(calls) == 7


def test_threads_reach_every_runtime_and_bench_records_them(tiny_student, tmp_path):  # noqa: F811
    import torch

    before = torch.get_num_threads()
    try:
        assert load_backend(tiny_student, "onnx", threads=1).session.get_session_options().intra_op_num_threads == 1
        load_backend(tiny_student, "torch", threads=1)
        assert torch.get_num_threads() == 1  # torch's setting is the process's
        torch.set_num_threads(before)
        result = runner.invoke(app, ["bench", "--student", str(tiny_student), "--seq", "8", "--batch", "2",
                                     "--repeats", "1", "--rounds", "1", "--peak-size", "64", "--backends",
                                     "torch,onnx", "--threads", "1", "--out", str(tmp_path / "bench")])
        assert result.exit_code == 0, result.output
        hw = json.loads((tmp_path / "bench" / "bench.json").read_text())["hardware"]
        assert hw["ort_threads"] == 1 and hw["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)
    bad = runner.invoke(app, ["predict", str(tiny_student), "good", "--threads", "0"])
    assert bad.exit_code == 2 and "--threads 0: expected a number >= 1" in bad.output


def test_bench_counts_the_parameters_of_an_export_only_folder(tiny_student, tmp_path):  # noqa: F811
    """A folder of exported files without safetensors weights (`distil export --out`) is benched on its files; its
    parameters come from its config (the model built on the meta device), the same count as the weights give."""
    from distilkit.deploy.bench import model_facts
    from distilkit.deploy.export import export_onnx

    exported = tmp_path / "onnx"
    export_onnx(tiny_student, exported, quantize=False)
    assert not list(exported.glob("*.safetensors"))
    facts, weights = model_facts(exported, {}), model_facts(tiny_student, {})
    assert facts["parameters"] == weights["parameters"] and facts["parameters"]["total"] > 0
    assert "model.onnx" in facts["files"] and facts["layers"] == weights["layers"]
