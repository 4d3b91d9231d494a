"""Does distillation earn its name? Distilled student vs hard-label baseline over several seeds.

One fine-tuned teacher and one student init per task; for each seed, the distilled student and the
baseline train with the same init and labelled data (the student also sees the teacher-labelled perturbed
copies of --augment, which the baseline cannot use). Every default is `distil run`'s (RUN_RECIPE).
Writes JSON, markdown and a PNG under --out.

    .venv/bin/python benchmarks/kd_vs_baseline.py --task sst2 --seeds 1,2,3 --out runs/kd-sst2
    .venv/bin/python benchmarks/kd_vs_baseline.py --task mrpc --as-csv --seeds 1,2,3 --out runs/kd-mrpc-csv

--as-csv writes the task's train and dev splits as CSV files (label names as strings) under --out and loads
them back as a user's own files (`--train/--dev`), so the user-file path is what is measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from distilkit.artifacts import read_json, write_json, write_text  # noqa: E402
from distilkit.cli.experiments import RUN_RECIPE  # noqa: E402
from distilkit.data.task import TaskData  # noqa: E402
from distilkit.hardware import hardware  # noqa: E402
from distilkit.data.task import load_task_data  # noqa: E402
from distilkit.models.folders import resolve_model  # noqa: E402
from distilkit.stages.task import distil_task, finetune_teacher, make_student, train_baseline  # noqa: E402
from distilkit.train.common import TrainConfig  # noqa: E402
from distilkit.train.task import DistillConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="sst2")
    p.add_argument("--data", default=None, help="glue_data folder (default ../shared/data/glue)")
    p.add_argument("--teacher", default=None)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--train-limit", type=int, default=RUN_RECIPE["train_limit"], help="0: the whole training set")
    p.add_argument("--as-csv", action="store_true", help="load the task through CSV files written under --out")
    p.add_argument("--teacher-epochs", type=float, default=RUN_RECIPE["teacher_epochs"])
    p.add_argument("--teacher-lr", type=float, default=RUN_RECIPE["teacher_lr"])
    p.add_argument("--epochs", type=float, default=RUN_RECIPE["epochs"])
    p.add_argument("--lr", type=float, default=RUN_RECIPE["lr"])
    p.add_argument("--alpha", type=float, default=RUN_RECIPE["alpha"])
    p.add_argument("--temperature", type=float, default=RUN_RECIPE["temperature"])
    p.add_argument("--augment", type=int, default=RUN_RECIPE["augment"])
    p.add_argument("--cls-weight", type=float, default=0.0)
    p.add_argument("--layers", default=None)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args()

    start, load_at_start = time.perf_counter(), os.getloadavg()
    out = a.out
    data = load_task_data(a.task, a.data, train_limit=a.train_limit or None)
    if a.as_csv:
        data = _through_csv(data, out / "csv", a.train_limit or None)
    teacher_dir = out / "teacher"
    if not teacher_dir.exists():  # finished stages are reused, so an interrupted benchmark resumes
        finetune_teacher(resolve_model(a.teacher), data,
                         TrainConfig(epochs=a.teacher_epochs, learning_rate=a.teacher_lr), teacher_dir)
    if not (out / "student_init").exists():
        make_student(str(teacher_dir), out / "student_init", a.layers)
    teacher = read_json(teacher_dir / "distil.json")["metrics"]
    dcfg = DistillConfig(alpha=a.alpha, temperature=a.temperature, cls_weight=a.cls_weight, augment=a.augment)
    rows = []
    for seed in [int(s) for s in a.seeds.split(",")]:
        cfg = TrainConfig(epochs=a.epochs, learning_rate=a.lr, seed=seed)
        s_dir, b_dir = out / f"student-seed{seed}", out / f"baseline-seed{seed}"
        s = read_json(s_dir / "distil.json") if s_dir.exists() else distil_task(
            str(teacher_dir), data, cfg, dcfg, s_dir, out / "cache", student=str(out / "student_init"))
        b = read_json(b_dir / "distil.json") if b_dir.exists() else train_baseline(
            str(out / "student_init"), data, cfg, b_dir)
        rows.append({"seed": seed, "student": s["metrics"], "baseline": b["metrics"],
                     "student_seconds": s["train_seconds"], "baseline_seconds": b["train_seconds"]})
        print(f"seed {seed}: student {s['metrics']['score']:.4f} baseline {b['metrics']['score']:.4f}", flush=True)

    def summary(key):
        scores = [r[key]["score"] for r in rows]
        return {"mean": statistics.mean(scores), "stdev": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                "min": min(scores), "max": max(scores)}

    result = {
        "task": data.name, "data": data.source, "train_examples": len(data.train),
        "teacher": teacher, "student": summary("student"), "baseline": summary("baseline"),
        "student_minus_baseline": summary("student")["mean"] - summary("baseline")["mean"],
        "retention_mean": summary("student")["mean"] / teacher["score"],
        "distill_cost_ratio": statistics.mean(r["student_seconds"] / r["baseline_seconds"] for r in rows),
        "config": {"teacher_epochs": a.teacher_epochs, "teacher_lr": a.teacher_lr, "epochs": a.epochs, "lr": a.lr,
                   "distillation": dcfg.to_dict(), "as_csv": a.as_csv,
                   "layers": read_json(out / "student_init" / "distil.json")["layer_map"]},
        "teacher_seconds": read_json(teacher_dir / "distil.json")["train_seconds"],
        "seeds": rows, "wall_seconds": time.perf_counter() - start, "hardware": hardware(),
        "load_average_start_end": [load_at_start, os.getloadavg()],
    }
    write_json(out / "kd_vs_baseline.json", result)
    _plot(result, out / "kd_vs_baseline.png")
    st, bl = result["student"], result["baseline"]
    write_text(out / "kd_vs_baseline.md", "\n".join([
        f"# {data.name}: distilled student vs hard-label baseline ({len(rows)} seeds)", "",
        "| model | mean score | stdev | min | max |", "|---|---|---|---|---|",
        f"| teacher | {teacher['score'] * 100:.2f} | | | |",
        f"| student (distilled) | {st['mean'] * 100:.2f} | {st['stdev'] * 100:.2f} | {st['min'] * 100:.2f} | {st['max'] * 100:.2f} |",
        f"| baseline (gold labels) | {bl['mean'] * 100:.2f} | {bl['stdev'] * 100:.2f} | {bl['min'] * 100:.2f} | {bl['max'] * 100:.2f} |",
        "", f"student − baseline: {result['student_minus_baseline'] * 100:+.2f} points; "
        f"retention {result['retention_mean'] * 100:.1f}%; distillation/baseline epoch cost {result['distill_cost_ratio']:.2f}x",
        "", f"config: {result['config']}", "", "![per seed](kd_vs_baseline.png)", ""]))
    print(f"student − baseline {result['student_minus_baseline'] * 100:+.2f} points → {out}/kd_vs_baseline.md")


def _through_csv(data: TaskData, folder: Path, train_limit: int | None) -> TaskData:
    """Write `data`'s train and first dev split as CSV (label names, not ids) and load them as a user's files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, ds in (("train", data.train), ("dev", next(iter(data.dev.values())))):
        frame = ds.to_pandas()
        if not data.regression:
            frame["label"] = [data.label_names[i] for i in frame["label"]]
        paths[split] = folder / f"{split}.csv"
        frame.to_csv(paths[split], index=False)
    pair = "text_pair" if "text_pair" in data.train.column_names else None
    return load_task_data(train_file=paths["train"], dev_file=paths["dev"], text_column="text", text_pair_column=pair,
                          label_column="label", regression=data.regression, train_limit=train_limit)


def _plot(result: dict, path: Path) -> None:
    seeds = [r["seed"] for r in result["seeds"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(seeds, [r["student"]["score"] * 100 for r in result["seeds"]], "o-", label="distilled student")
    ax.plot(seeds, [r["baseline"]["score"] * 100 for r in result["seeds"]], "s--", label="hard-label baseline")
    ax.axhline(result["teacher"]["score"] * 100, color="k", lw=1, label="teacher")
    ax.set_xlabel("seed")
    ax.set_ylabel(f"{result['task']} dev score (%)")
    ax.set_xticks(seeds)
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
