"""The depth x precision sweep on a tiny random teacher, with a width and a trimmed-vocabulary point: points, their
recorded scores and sizes, reuse, the frontier."""

import json

import pytest

from distilkit.data.task import load_task_data
from distilkit.experiments.sweep import pareto_front, run_sweep
from distilkit.models.narrow import Width
from distilkit.models.vocab import VocabTrim
from distilkit.train.common import TrainConfig
from distilkit.train.task import DistillConfig

from .deploy_fixtures import make_classifier

QUICK = TrainConfig(max_steps=2, batch_size=16, learning_rate=1e-3, max_length=32, bf16=False, save_steps=100,
                    logging_steps=1)
SETTINGS = dict(seq=16, repeats=2, tolerance=100.0, peak_size=64,  # tiny models: the check only records int8
                widths=[Width(16, 32, 2)], trim=VocabTrim(size=12))


@pytest.fixture(scope="module")
def swept(tiny_glue, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    teacher = make_classifier(root / "teacher", kind="bert")  # a 2-layer BERT with an SST-2 head
    data = load_task_data("sst2", tiny_glue)
    sweep = run_sweep(teacher, data, [1, 2], root / "out", QUICK, DistillConfig(), root / "cache", **SETTINGS)
    return root, data, sweep


def test_one_point_per_model_and_precision_with_recorded_scores(swept):
    root, _, sweep = swept
    out = root / "out"
    assert json.loads((out / "sweep.json").read_text()) == json.loads(json.dumps(sweep))
    got = {(p["model"], p["precision"]): p for p in sweep["points"]}
    models = ("teacher", "depth-1", "depth-2", "width-16x32-h2", "trim-vocab")
    assert set(got) == {(m, p) for m in models for p in ("fp32", "int8")}
    assert [got[(m, "int8")]["width"] for m in models] == [32, 32, 32, 16, 32]
    assert got[("trim-vocab", "int8")]["vocab"] == 12 and got[("depth-1", "int8")]["vocab"] is None
    assert got[("width-16x32-h2", "fp32")]["layers"] == got[("depth-1", "fp32")]["layers"]  # the default depth
    for m in models:
        size = json.loads((out / ("teacher-onnx" if m == "teacher" else m) / "size.json").read_text())
        assert got[(m, "int8")]["int8_peak_rss_mb"] == size["int8_peak_rss_mb"] > 0
        assert size["int8_mb"] < size["fp32_mb"] and size["parameters"] == got[(m, "fp32")]["parameters"]
    params = {m: got[(m, "fp32")]["parameters"] for m in models}
    assert params["width-16x32-h2"]["non_embedding"] < params["depth-1"]["non_embedding"] / 3
    assert params["trim-vocab"]["embedding"] < params["depth-1"]["embedding"]
    for d in (1, 2):
        info = json.loads((out / f"depth-{d}" / "distil.json").read_text())
        export = json.loads((out / f"depth-{d}" / "export.json").read_text())
        assert got[(f"depth-{d}", "fp32")]["score"] == info["metrics"]["score"]
        assert got[(f"depth-{d}", "int8")]["score"] == export["check"]["results"]["onnx-int8"]["score"]
        assert got[(f"depth-{d}", "fp32")]["layers"] == info["layer_map"] and len(info["layer_map"]) == d
        assert got[(f"depth-{d}", "int8")]["size_mb"] == (out / f"depth-{d}" / "model.int8.onnx").stat().st_size / 1e6
    teacher_export = json.loads((out / "teacher-onnx" / "export.json").read_text())
    assert got[("teacher", "int8")]["score"] == teacher_export["check"]["results"]["onnx-int8"]["score"]
    assert got[("teacher", "fp32")]["score"] == teacher_export["check"]["results"]["torch"]["score"]
    assert got[("teacher", "fp32")]["size_mb"] == (root / "teacher" / "model.safetensors").stat().st_size / 1e6
    assert all(p["latency_ms"] > 0 for p in sweep["points"])
    assert got[("depth-1", "fp32")]["parameters"]["total"] < got[("teacher", "fp32")]["parameters"]["total"]
    assert sweep["frontier"]["latency"] and sweep["frontier"]["size"] and sweep["hardware"]["cores"] >= 1
    md = (out / "sweep.md").read_text()
    assert md.count("| depth-") == 4 and "Pareto frontier" in md
    assert (out / "pareto.png").stat().st_size > 0


def test_second_run_reuses_every_folder_and_export(swept, monkeypatch):
    root, data, first = swept

    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage was redone")

    monkeypatch.setattr("distilkit.experiments.sweep.distil_task", refuse)
    monkeypatch.setattr("distilkit.stages.task.distil_task", refuse)
    monkeypatch.setattr("distilkit.experiments.sweep.export_onnx", refuse)
    again = run_sweep(root / "teacher", data, [1, 2], root / "out", QUICK, DistillConfig(), root / "cache", **SETTINGS)
    assert [(p["model"], p["precision"], p["score"]) for p in again["points"]] == [
        (p["model"], p["precision"], p["score"]) for p in first["points"]]


def test_pareto_front_by_hand():
    pts = [dict(name=n, score=s, cost=c) for n, s, c in [
        ("a", 0.80, 10), ("b", 0.85, 20), ("c", 0.84, 25),  # c: dearer and worse than b
        ("d", 0.90, 40), ("e", 0.90, 50),                   # e: same score as d, dearer
        ("f", 0.70, 10),                                    # f: same cost as a, worse
        ("g", 0.85, 20),                                    # g: ties b exactly, b (given first) is kept
        ("h", 0.95, 100)]]
    assert [p["name"] for p in pareto_front(pts, "cost")] == ["a", "b", "d", "h"]
    assert pareto_front([], "cost") == []
    assert [p["name"] for p in pareto_front(pts[:1], "cost")] == ["a"]
