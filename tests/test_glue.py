"""`distil glue` on tiny random models: glue.json and the paper table, seeds, resuming, per-task options."""

import json
import random

import pytest
from typer.testing import CliRunner

import distilkit.stages.task as stages_mod
from distilkit.artifacts import read_json
from distilkit.cli import app
from distilkit.experiments.suite import build_recipes, parse_per_task, run_glue
from distilkit.stages.reuse import StageConfigError

from .conftest import sentences

runner = CliRunner()
TINY = dict(batch_size=16, max_length=32, bf16=False)
STAGES = ("teacher", "student_init", "student", "baseline")


@pytest.fixture(scope="module")
def suite_glue(tiny_glue, tmp_path_factory):
    """tiny_glue's SST-2 plus a tiny STS-B (pairs, regression) in glue_data layout."""
    import shutil

    root = tmp_path_factory.mktemp("suite_glue")
    shutil.copytree(tiny_glue / "SST-2", root / "SST-2")
    (root / "STS-B").mkdir()
    rng = random.Random(3)
    for split, n, seed in (("train", 64, 4), ("dev", 24, 5)):
        rows = ["sentence1\tsentence2\tscore"]
        for (a, _), (b, _) in zip(sentences(n, seed), sentences(n, seed + 100)):
            rows.append(f"{a}\t{b}\t{rng.uniform(0, 5):.3f}")
        (root / "STS-B" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def _recipes(tasks, **overrides):
    spec = {"teacher_epochs": "1", "epochs": "1", "teacher_lr": "1e-3", "lr": "1e-3", **overrides}
    return build_recipes(tasks, spec, **TINY)


@pytest.fixture(scope="module")
def two_seed_suite(tiny_teacher, suite_glue, tmp_path_factory):
    out = tmp_path_factory.mktemp("glue") / "suite"
    tasks = ["sst2", "stsb"]
    result = run_glue(str(tiny_teacher), tasks, out, _recipes(tasks), suite_glue, seeds=[1, 2], layers="first-2",
                      compare={"other": str(tiny_teacher)})
    return out, result


def test_glue_json_holds_every_stage_metric_and_the_macro(two_seed_suite):
    out, result = two_seed_suite
    assert read_json(out / "glue.json") == json.loads(json.dumps(result))
    assert set(result["models"]) == {"teacher", "student", "baseline", "other"}
    for name, folder in (("teacher", "teacher"), ("student", "student"), ("baseline", "baseline"),
                         ("other", "compare-other")):
        model = result["models"][name]
        for task in ("sst2", "stsb"):
            per_seed = [read_json(out / task / f"seed-{s}" / folder / "distil.json")["metrics"] for s in (1, 2)]
            entry = model["tasks"][task]
            for key in per_seed[0]:
                assert entry[key] == pytest.approx((per_seed[0][key] + per_seed[1][key]) / 2)
            assert entry["seeds"]["1"] == per_seed[0] and entry["seeds"]["2"] == per_seed[1]
            assert entry["score_std"] == pytest.approx(abs(per_seed[0]["score"] - per_seed[1]["score"]) / 2 ** 0.5)
        assert model["macro"] == pytest.approx((model["tasks"]["sst2"]["score"] + model["tasks"]["stsb"]["score"]) / 2)
    assert set(result["models"]["teacher"]["tasks"]["stsb"]) >= {"pearson", "spearman", "score"}
    teacher, student = result["models"]["teacher"], result["models"]["student"]
    assert result["macro_retention"] == pytest.approx(student["macro"] / teacher["macro"])
    assert result["retention"]["student"]["stsb"] == pytest.approx(
        student["tasks"]["stsb"]["score"] / teacher["tasks"]["stsb"]["score"])
    assert result["layer_map"] == [0, 1]


def test_paper_table_and_report(two_seed_suite):
    out, result = two_seed_suite
    table = (out / "glue.md").read_text().splitlines()
    assert table[0].startswith("| model | macro score | SST-2 (acc) | STS-B (P/S) |")
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert set(rows) == {"teacher", "student", "baseline", "other"}
    student = result["models"]["student"]
    assert f"{student['macro'] * 100:.1f} ±{student['macro_std'] * 100:.1f}" in rows["student"]
    assert f"{result['macro_retention'] * 100:.1f}%" in rows["student"]
    report = (out / "report.md").read_text()
    assert "glue.png" in report and (out / "glue.png").stat().st_size > 0
    assert "learning_rate" in report and "seed 2" in report


def test_a_killed_suite_resumes_without_redoing_finished_stages(tiny_teacher, suite_glue, tmp_path, monkeypatch):
    out, tasks = tmp_path / "suite", ["sst2", "stsb"]
    calls = []
    real = {name: getattr(stages_mod, name) for name in ("finetune_teacher", "make_student", "distil_task", "train_baseline")}

    def spy(name, kill_at=None):
        def wrapped(*args, **kwargs):
            folder = next(a for a in list(args) + list(kwargs.values()) if hasattr(a, "parent") and a.name in
                          ("teacher", "student_init", "student", "baseline"))
            calls.append(f"{folder.parent.parent.name}/{folder.name}")
            if calls[-1] == kill_at:
                raise KeyboardInterrupt  # the suite is killed while this stage runs
            return real[name](*args, **kwargs)
        return wrapped

    for name in real:
        monkeypatch.setattr(stages_mod, name, spy(name, kill_at="stsb/student"))
    with pytest.raises(KeyboardInterrupt):
        run_glue(str(tiny_teacher), tasks, out, _recipes(tasks), suite_glue, seeds=[1], layers="first-2")
    assert calls == ["sst2/teacher", "sst2/student_init", "sst2/student", "sst2/baseline",
                     "stsb/teacher", "stsb/student_init", "stsb/student"]
    assert not (out / "stsb" / "seed-1" / "student").exists() and not (out / "glue.json").exists()
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-1/*/model.safetensors")}

    calls.clear()
    for name in real:
        monkeypatch.setattr(stages_mod, name, spy(name))
    result = run_glue(str(tiny_teacher), tasks, out, _recipes(tasks), suite_glue, seeds=[1], layers="first-2")
    assert calls == ["stsb/student", "stsb/baseline"]
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())
    assert set(result["models"]["student"]["tasks"]) == {"sst2", "stsb"}

    calls.clear()
    again = run_glue(str(tiny_teacher), tasks, out, _recipes(tasks), suite_glue, seeds=[1], layers="first-2")
    assert calls == [] and again["models"] == result["models"]


def test_a_stage_made_with_another_config_is_refused(tiny_teacher, suite_glue, tmp_path):
    out = tmp_path / "suite"
    run_glue(str(tiny_teacher), ["sst2"], out, _recipes(["sst2"]), suite_glue, seeds=[1], layers="first-2",
             baseline=False)
    with pytest.raises(StageConfigError, match=r"sst2/seed-1/teacher .*config"):
        run_glue(str(tiny_teacher), ["sst2"], out, _recipes(["sst2"], teacher_lr="2e-3"), suite_glue, seeds=[1],
                 layers="first-2", baseline=False)


def test_per_task_values():
    tasks = ["sst2", "cola", "stsb"]
    assert parse_per_task("3,sst2=1", tasks) == {"sst2": 1.0, "cola": 3.0, "stsb": 3.0}
    assert parse_per_task("cola=5", tasks, int) == {"cola": 5}
    assert parse_per_task(None, tasks) == {}
    with pytest.raises(ValueError, match="mrpc.* not among --tasks"):
        parse_per_task("mrpc=2", tasks, option="--epochs")
    with pytest.raises(ValueError, match="--epochs: cannot read 'sst2=x'"):
        parse_per_task("sst2=x", tasks, option="--epochs")
    recipes = build_recipes(tasks, {"epochs": "4,cola=6", "train_limit": "0"})
    assert recipes["cola"].student.epochs == 6 and recipes["sst2"].student.epochs == 4
    assert recipes["sst2"].teacher.epochs == 1 and recipes["cola"].teacher.epochs == 5  # DEFAULTS
    assert build_recipes(["rte"], {})["rte"].teacher.epochs == 3  # the generic default
    assert recipes["sst2"].train_limit is None
    recipes = build_recipes(tasks, {"hidden_weight": "0,cola=1", "augment": "stsb=1", "augment_neighbours": "sst2=8",
                                    "attention_weight": "stsb=2", "mined_pairs": "stsb=3"})
    assert [recipes[t].distillation.attention_weight for t in tasks] == [0.0, 0.0, 2.0]
    assert [recipes[t].distillation.mined_pairs for t in tasks] == [0, 0, 3]
    assert [r.distillation.mined_pairs for r in build_recipes(tasks, {}).values()] == [0, 0, 2]  # DEFAULTS
    with pytest.raises(ValueError, match="--mined-pairs: cola has one text per row"):
        build_recipes(tasks, {"mined_pairs": "cola=1"})
    assert [r.unlabeled for r in build_recipes(tasks, {"unlabeled": "stsb=test"}).values()] == [None, None, "test"]
    assert "unlabeled" not in recipes["sst2"].to_dict()
    assert [recipes[t].distillation.augment_neighbours for t in tasks] == [8, 0, 8]  # stsb: DEFAULTS
    assert [recipes[t].distillation.hidden_weight for t in tasks] == [0.0, 1.0, 0.0]
    assert [recipes[t].distillation.augment for t in tasks] == [0, 4, 1]  # cola: DEFAULTS
    older = set(recipes["sst2"].distillation.to_dict())
    assert not {"hidden_weight", "attention_weight", "mined_pairs"} & older  # records from before them still match


def test_glue_command_prints_the_table_and_refuses_bad_options(tiny_teacher, suite_glue, tmp_path):
    args = ["glue", "--teacher", str(tiny_teacher), "--tasks", "sst2", "--data", str(suite_glue), "--out",
            str(tmp_path / "g"), "--layers", "first-1", "--teacher-epochs", "1", "--epochs", "1", "--no-baseline",
            "--batch-size", "16", "--max-length", "32", "--no-bf16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| student |" in result.output and "macro retention" in result.output
    size = read_json(tmp_path / "g" / "glue.json")["size"]  # --size is on by default
    assert size["measured_on"].startswith("sst2/seed-") and set(size) == {"measured_on", "teacher", "student"}
    assert size["student"]["int8_mb"] < size["student"]["fp32_mb"] and size["student"]["int8_peak_rss_mb"] > 0
    assert size["student"]["parameters"]["total"] < size["teacher"]["parameters"]["total"]
    assert "int8 ONNX MB" in (tmp_path / "g" / "report.md").read_text()
    bad = runner.invoke(app, args + ["--epochs", "cola=2"])
    assert bad.exit_code == 2 and "cola" in bad.output and "not among --tasks" in bad.output
    bad = runner.invoke(app, args + ["--sweep-depths", "1", "--sweep-task", "cola"])
    assert bad.exit_code == 2 and "--sweep-task cola is not among --tasks" in bad.output


def test_suite_with_a_sweep_puts_the_frontier_in_glue_json_and_the_report(tiny_teacher, suite_glue, tmp_path):
    out = tmp_path / "suite"
    result = run_glue(str(tiny_teacher), ["sst2"], out, _recipes(["sst2"]), suite_glue, seeds=[1], layers="first-2",
                      baseline=False, sweep_depths=[1], sweep_task="sst2", sweep_precisions=["fp32"],
                      sweep_options={"seq": 16, "repeats": 2, "peak_size": 64})
    sweep = read_json(out / "sweep" / "sweep.json")
    assert result["sweep"]["frontier"] == sweep["frontier"]
    assert {p["model"] for p in sweep["points"]} == {"teacher", "depth-1"}
    report = (out / "report.md").read_text()
    assert "Pareto frontier" in report and "](sweep/pareto.png)" in report


def test_every_suite_student_has_a_model_card_with_its_run_metrics(two_seed_suite):
    from huggingface_hub import ModelCard

    out, result = two_seed_suite
    for task in ("sst2", "stsb"):
        for seed in ("1", "2"):
            card = ModelCard.load(out / task / f"seed-{seed}" / "student" / "README.md")
            values = {r.metric_name: r.metric_value for r in card.data.eval_results}
            metrics = result["models"]["student"]["tasks"][task]["seeds"][seed]
            assert values == {k: v for k, v in metrics.items() if k != "score"}
            teacher = result["models"]["teacher"]["tasks"][task]["seeds"][seed]
            assert f"{metrics['score'] / teacher['score'] * 100:.1f}%" in card.text  # retention vs this seed's teacher


def test_dev_noise_benchmark_recomputes_the_suite_scores_and_brackets_them(two_seed_suite, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out, result = two_seed_suite
    script = Path(__file__).parent.parent / "benchmarks" / "dev_noise.py"
    noise_dir = tmp_path / "noise"
    run = subprocess.run([sys.executable, str(script), "--suite", str(out), "--out", str(noise_dir), "--seed", "2",
                          "--resamples", "40"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    noise = read_json(noise_dir / "dev_noise.json")
    macro = {}
    for model in ("teacher", "student", "baseline"):
        seed_scores = {t: result["models"][model]["tasks"][t]["seeds"]["2"]["score"] for t in ("sst2", "stsb")}
        macro[model] = sum(seed_scores.values()) / 2
        for task, score in seed_scores.items():
            row = noise["tasks"][task][model]
            assert row["score"] == pytest.approx(score, abs=1e-9)
            assert row["sd"] >= 0 and row["low_2.5"] <= row["high_97.5"]
    retention = noise["macro_retention"]["student"]
    assert retention["value"] == pytest.approx(macro["student"] / macro["teacher"])
    assert "| student |" in (noise_dir / "dev_noise.md").read_text()
    again = subprocess.run([sys.executable, str(script), "--suite", str(out), "--out", str(noise_dir)],
                           capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr


def test_teacher_fit_benchmark_compares_student_and_teacher_on_train_and_dev(two_seed_suite, suite_glue):
    import subprocess
    import sys
    from pathlib import Path

    out, _ = two_seed_suite
    stage = out / "stsb" / "seed-1"
    script = Path(__file__).parent.parent / "benchmarks" / "teacher_fit.py"
    run = subprocess.run([sys.executable, str(script), "--teacher", str(stage / "teacher"), "--student",
                          str(stage / "student"), "--task", "stsb", "--data", str(suite_glue), "--train-rows", "20"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in run.stdout.splitlines() if line.strip()]  # progress bars leave blank lines
    assert lines[0].startswith("train sample (20 rows): teacher_vs_gold_pearson")
    assert lines[1].startswith("dev (24 rows):") and "student_vs_teacher_pearson" in lines[1]
