"""Multi-label classification (tags): the loss, the metrics, the threshold, bad input, and the whole path on tiny
random models (run → eval → task with augmented rows → export checked → predict → serve)."""

import json
import math
import random

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sklearn.metrics import accuracy_score, f1_score
from typer.testing import CliRunner

from distilkit.cli import app
from distilkit.data.errors import DataError
from distilkit.data.task import load_task_data
from distilkit.deploy.backends import results
from distilkit.errors import ConfigError
from distilkit.losses import multilabel_distillation
from distilkit.metrics import compute_metrics, predictions

from .conftest import POSITIVE, WORDS

runner = CliRunner()
TAGS = ["plot", "positive"]


def _bce(logit: float, target: float) -> float:
    """Binary cross-entropy of one logit against one target probability, written out."""
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_loss_matches_hand_computation():
    student = torch.tensor([[2.0, -1.0], [0.5, 1.5]])
    teacher = torch.tensor([[4.0, 0.0], [-2.0, 2.0]])
    targets = torch.tensor([[1.0, 0.0], [math.nan, math.nan]])  # second row: an augmented copy, no gold
    alpha, t = 0.3, 2.0
    soft = [[1 / (1 + math.exp(-x / t)) for x in row] for row in teacher.tolist()]
    kd = t * t * sum(_bce(s / t, p) for srow, prow in zip(student.tolist(), soft) for s, p in zip(srow, prow)) / 4
    bce = (_bce(2.0, 1.0) + _bce(-1.0, 0.0)) / 2  # the first row only
    out = multilabel_distillation(student, teacher, targets, alpha, t)
    assert set(out) == {"loss", "kd", "bce"}
    assert out["kd"].item() == pytest.approx(kd, rel=1e-5)
    assert out["bce"].item() == pytest.approx(bce, rel=1e-5)
    assert out["loss"].item() == pytest.approx(alpha * kd + (1 - alpha) * bce, rel=1e-5)


def test_loss_without_gold_is_the_teacher_term_and_has_gradients():
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    out = multilabel_distillation(student, torch.zeros(1, 2), torch.full((1, 2), math.nan), 0.5, 2.0)
    assert out["bce"].item() == 0.0
    assert out["kd"].item() == pytest.approx(4 * math.log(2), rel=1e-6)  # T²·BCE(0.5, 0.5) = 4·ln 2
    assert out["loss"].item() == pytest.approx(0.5 * 4 * math.log(2), rel=1e-6)
    out["loss"].backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_loss_gradient_vanishes_when_the_student_matches_the_teacher():
    teacher = torch.tensor([[1.0, -3.0, 0.5]])
    student = teacher.clone().requires_grad_(True)
    multilabel_distillation(student, teacher, torch.full((1, 3), math.nan), 1.0, 3.0)["loss"].backward()
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-6)


def test_metrics_against_sklearn():
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 2, size=(50, 4))
    preds = np.where(rng.random((50, 4)) < 0.2, 1 - refs, refs)
    got = compute_metrics(("micro_f1", "macro_f1", "subset_accuracy"), preds, refs)
    assert got["micro_f1"] == pytest.approx(f1_score(refs, preds, average="micro"))
    assert got["macro_f1"] == pytest.approx(f1_score(refs, preds, average="macro"))
    assert got["subset_accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert 0 < got["subset_accuracy"] < got["micro_f1"] < 1
    with pytest.raises(ValueError, match="indicator arrays"):
        compute_metrics(("micro_f1",), preds[:, 0], refs[:, 0])


def test_predictions_and_results_keep_exactly_the_labels_over_the_threshold():
    probs = np.array([[0.9, 0.2, 0.65], [0.1, 0.3, 0.5]])
    logits = np.log(probs / (1 - probs))
    names = {0: "a", 1: "b", 2: "c"}
    assert predictions(logits, False, multi_label=True).tolist() == [[1, 0, 1], [0, 0, 0]]  # 0.5 is not above 0.5
    assert predictions(logits, False, multi_label=True, threshold=0.25).tolist() == [[1, 0, 1], [0, 1, 1]]
    rows = results(logits, names, multi_label=True, threshold=0.6)
    assert [r["labels"] for r in rows] == [["a", "c"], []]
    assert rows[0]["scores"] == pytest.approx({"a": 0.9, "b": 0.2, "c": 0.65})
    assert [r["labels"] for r in results(logits, names, multi_label=True, threshold=0.15)] == [["a", "c", "b"],
                                                                                               ["c", "b"]]


# --- data -------------------------------------------------------------------------------------------------------


def _tags(words: list[str]) -> list[str]:
    return [t for t, hit in zip(TAGS, ({"plot", "story"} & set(words), POSITIVE & set(words))) if hit]


def write_tagged(path, n: int, seed: int, separator: str = "|") -> None:
    """A CSV of n texts with tags: "positive" for a positive word, "plot" for plot/story; some rows have none."""
    rng = random.Random(seed)
    lines = ["text,tags"]
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        lines.append(f"{' '.join(words)},{separator.join(_tags(words))}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tagged")
    write_tagged(folder / "train.csv", 128, 1)
    write_tagged(folder / "dev.csv", 40, 2)
    return folder


def test_load_tags(tagged):
    data = load_task_data(train_file=tagged / "train.csv", dev_file=tagged / "dev.csv", label_column="tags",
                          multi_label=True)
    assert data.multi_label and data.label_names == TAGS and data.num_labels == 2
    assert data.metrics == ("micro_f1", "macro_f1", "subset_accuracy")
    assert data.source["multi_label"] is True and data.source["label_separator"] == "|"
    first = next(line for line in (tagged / "train.csv").read_text().splitlines()[1:])
    text, cell = first.split(",")
    assert data.train[0]["text"] == text
    assert data.train[0]["label"] == [float(tag in cell.split("|")) for tag in TAGS]
    labels = np.asarray(data.train["label"])
    assert labels.shape == (128, 2) and (labels.sum(1) == 0).any() and (labels.sum(1) == 2).any()


def test_separator_empty_cells_and_jsonl_lists(tmp_path):
    (tmp_path / "train.tsv").write_text("text\ttags\na good film\tpositive; plot\nthe actor\t\nbad\tplot\n")
    (tmp_path / "dev.jsonl").write_text('{"text": "a film", "tags": ["plot", "positive"]}\n'
                                        '{"text": "the end", "tags": null}\n{"text": "ok", "tags": "plot"}\n')
    data = load_task_data(train_file=tmp_path / "train.tsv", dev_file=tmp_path / "dev.jsonl", label_column="tags",
                          multi_label=True, label_separator=";")
    assert data.label_names == TAGS
    assert list(data.train["label"]) == [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
    assert list(data.dev["dev"]["label"]) == [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]


def test_unlabelled_inputs_have_nan_tags(tagged, tmp_path):
    (tmp_path / "more.csv").write_text("text\nthe plot was good\na film\n")
    data = load_task_data(train_file=tagged / "train.csv", dev_file=tagged / "dev.csv", label_column="tags",
                          multi_label=True, unlabeled=tmp_path / "more.csv")
    assert data.unlabeled.features == data.train.features
    assert np.isnan(np.asarray(data.unlabeled["label"])).all() and len(data.unlabeled) == 2


@pytest.mark.parametrize("dev,message", [
    ("text,tags\na film,plot\nthe end,plot|sequel\n", r"dev\.csv, line 3, field 'tags': tag 'sequel' is not one of"),
    ("text,tags\na film,plot||positive\n", r"dev\.csv, line 2, field 'tags': empty tag in 'plot\|\|positive'"),
])
def test_bad_dev_tags_name_file_line_and_tag(tagged, tmp_path, dev, message):
    (tmp_path / "dev.csv").write_text(dev)
    with pytest.raises(DataError, match=message):
        load_task_data(train_file=tagged / "train.csv", dev_file=tmp_path / "dev.csv", label_column="tags",
                       multi_label=True)


def test_one_tag_is_not_enough(tmp_path):
    (tmp_path / "train.csv").write_text("text,tags\na film,plot\nthe end,\n")
    with pytest.raises(DataError, match="at least two different tags"):
        load_task_data(train_file=tmp_path / "train.csv", dev_file=tmp_path / "train.csv", label_column="tags",
                       multi_label=True)


def test_multi_label_with_regression_or_glue_is_refused(tagged, tiny_glue):
    with pytest.raises(ConfigError, match="--multi-label and --regression"):
        load_task_data(train_file=tagged / "train.csv", dev_file=tagged / "dev.csv", label_column="tags",
                       multi_label=True, regression=True)
    with pytest.raises(ConfigError, match="own --train and --dev"):
        load_task_data("sst2", tiny_glue, multi_label=True)


@pytest.mark.parametrize("command", ["finetune", "task", "run", "eval"])
def test_cli_refuses_multi_label_with_regression(command, tagged, tiny_teacher, tmp_path):
    target = {"finetune": ["--out", str(tmp_path / "o")], "task": ["--teacher", str(tmp_path), "--out",
              str(tmp_path / "o")], "run": ["--out", str(tmp_path / "o")], "eval": [str(tiny_teacher)]}[command]
    result = runner.invoke(app, [command, *target, "--train", str(tagged / "train.csv"), "--dev",
                                 str(tagged / "dev.csv"), "--label-column", "tags", "--multi-label", "--regression"])
    assert result.exit_code == 2, result.output
    assert "--multi-label and --regression" in result.output and len(result.output.strip().splitlines()) == 1


# --- the whole path on tiny random models ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tag_run(tiny_teacher, tagged, tmp_path_factory):
    """`distil run --multi-label` on the tiny teacher: teacher, student and baseline with sigmoid outputs."""
    out = tmp_path_factory.mktemp("tag_runs") / "run"
    result = runner.invoke(app, [
        "run", "--teacher", str(tiny_teacher), "--out", str(out), "--train", str(tagged / "train.csv"),
        "--dev", str(tagged / "dev.csv"), "--label-column", "tags", "--multi-label", "--layers", "first-2",
        "--teacher-epochs", "12", "--epochs", "2", "--batch-size", "16", "--lr", "2e-3", "--teacher-lr", "1e-3",
        "--max-length", "32", "--no-bf16"])
    assert result.exit_code == 0, result.output
    return out


def test_run_trains_sigmoid_models_and_scores_them(tag_run):
    metrics = json.loads((tag_run / "metrics.json").read_text())
    for name in ("teacher", "student", "baseline"):
        m = metrics["models"][name]
        assert set(m) >= {"micro_f1", "macro_f1", "subset_accuracy", "score"}
        assert m["score"] == pytest.approx((m["micro_f1"] + m["macro_f1"] + m["subset_accuracy"]) / 3)
        config = json.loads((tag_run / name / "config.json").read_text())
        assert config["problem_type"] == "multi_label_classification"
        assert config["id2label"] == {"0": "plot", "1": "positive"}
    assert metrics["data"]["multi_label"] is True
    assert metrics["models"]["teacher"]["score"] > 0.6  # it learnt the tags (predicting "positive" alone: 0.46)
    assert "BCE" in (tag_run / "student" / "README.md").read_text()


def test_eval_reproduces_the_student_score(tag_run, tagged):
    result = runner.invoke(app, ["eval", str(tag_run / "student"), "--train", str(tagged / "train.csv"), "--dev",
                                 str(tagged / "dev.csv"), "--label-column", "tags", "--multi-label", "--max-length",
                                 "32", "--out", str(tag_run.parent / "eval.json")])
    assert result.exit_code == 0, result.output
    again = json.loads((tag_run.parent / "eval.json").read_text())["metrics"]
    assert again["score"] == pytest.approx(json.loads((tag_run / "metrics.json").read_text())
                                           ["models"]["student"]["score"])
    one_label = tag_run.parent / "one_label.csv"
    one_label.write_text("text,tags\na good film,positive\nthe plot,plot\n")
    single = runner.invoke(app, ["eval", str(tag_run / "student"), "--dev", str(one_label), "--label-column", "tags",
                                 "--out", str(tag_run.parent / "one.json")])  # the model says it reads tags
    assert single.exit_code == 0, single.output
    assert set(json.loads((tag_run.parent / "one.json").read_text())["metrics"]) == set(again)


def test_task_distillation_with_augmented_rows(tag_run, tagged, tmp_path):
    """Perturbed copies have NaN tags: they train on the teacher term only (and must not make the loss NaN)."""
    out = tmp_path / "student"
    result = runner.invoke(app, [
        "task", "--teacher", str(tag_run / "teacher"), "--out", str(out), "--train", str(tagged / "train.csv"),
        "--dev", str(tagged / "dev.csv"), "--label-column", "tags", "--multi-label", "--augment", "1",
        "--layers", "first-2", "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--max-length", "32",
        "--no-bf16", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "distil.json").read_text())
    assert info["transfer_examples"] == 2 * 128 and math.isfinite(info["metrics"]["score"])
    from safetensors.torch import load_file

    assert all(torch.isfinite(w).all() for w in load_file(out / "model.safetensors").values())
    one_label = tmp_path / "one_label.csv"
    one_label.write_text("text,tags\na good film,positive\nthe plot,plot\n")
    wrong = runner.invoke(app, ["task", "--teacher", str(tag_run / "teacher"), "--out", str(tmp_path / "x"),
                                "--train", str(one_label), "--dev", str(one_label), "--label-column", "tags"])
    assert wrong.exit_code == 2 and "is a multi-label (tags) classifier" in wrong.output


@pytest.fixture(scope="module")
def exported(tag_run):
    result = runner.invoke(app, ["export", str(tag_run / "student"), "--tolerance", "100"])
    assert result.exit_code == 0, result.output
    return tag_run / "student"


def test_export_checks_on_the_multi_label_metrics(exported):
    check = json.loads((exported / "export.json").read_text())["check"]
    assert check["data"]["multi_label"] is True and check["dev_examples"] == 40
    for name in ("torch", "onnx", "onnx-int8"):
        assert {"micro_f1", "macro_f1", "subset_accuracy", "score"} <= set(check["results"][name])
    assert check["results"]["onnx"]["label_agreement"] >= 0.95
    assert 0 <= check["results"]["onnx-int8"]["label_agreement"] <= 1


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_and_serve_return_the_labels_over_the_threshold(exported, backend):
    texts = ["a good movie", "the plot was dull", "very nice story"]

    def predicted(*extra):
        result = runner.invoke(app, ["predict", str(exported), *texts, "--backend", backend, *extra])
        assert result.exit_code == 0, result.output
        return [json.loads(line) for line in result.stdout.splitlines()]

    rows = predicted()
    for row in rows:
        assert set(row) == {"labels", "scores"} and set(row["scores"]) == set(TAGS)
        assert set(row["labels"]) == {t for t, p in row["scores"].items() if p > 0.5}
    assert all(row["labels"] == sorted(TAGS, key=lambda t: -row["scores"][t]) for row in predicted("--threshold", "0"))
    assert all(row["labels"] == [] for row in predicted("--threshold", "1"))
    middle = sorted(p for row in rows for p in row["scores"].values())[3]
    for row in predicted("--threshold", str(middle)):
        assert set(row["labels"]) == {t for t, p in row["scores"].items() if p > middle}

    with TestClient(create_app_for(exported, backend, threshold=middle)) as client:
        served = client.post("/v1/classify", json={"texts": texts})
        assert served.status_code == 200, served.text
        assert [set(r["labels"]) for r in served.json()["results"]] == [
            {t for t, p in row["scores"].items() if p > middle} for row in rows]
        for got, row in zip(served.json()["results"], rows):
            assert got["scores"] == pytest.approx(row["scores"], abs=1e-5)
        health = client.get("/health").json()
        assert health["labels"] == TAGS and health["multi_label"] is True and health["threshold"] == middle


def create_app_for(folder, backend, **kwargs):
    from distilkit.deploy.serve import create_app

    return create_app(folder, backend, **kwargs)


def test_threshold_errors(exported, tiny_student_path):
    bad = runner.invoke(app, ["predict", str(exported), "good", "--threshold", "1.5"])
    assert bad.exit_code == 2 and "between 0 and 1" in bad.output
    single = runner.invoke(app, ["predict", str(tiny_student_path), "good", "--threshold", "0.3"])
    assert single.exit_code == 2 and "only multi-label models" in single.output


@pytest.fixture(scope="module")
def tiny_student_path(tmp_path_factory):
    from .deploy_fixtures import make_classifier

    return make_classifier(tmp_path_factory.mktemp("single") / "student")
