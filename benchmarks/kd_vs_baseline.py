"""Does distillation earn its name? Distilled student vs hard-label baseline over several seeds.

One fine-tuned teacher and one student init per task; for each seed, the distilled student and the
baseline train with the same init, data and steps. Writes JSON, markdown and a PNG under --out.

    .venv/bin/python benchmarks/kd_vs_baseline.py --task sst2 --seeds 1,2,3 --out runs/kd-sst2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from distilkit.artifacts import read_json, write_json, write_text  # noqa: E402
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
    p.add_argument("--train-limit", type=int, default=0, help="0: the whole training set")
    p.add_argument("--teacher-epochs", type=float, default=2.0)
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--cls-weight", type=float, default=0.0)
    p.add_argument("--layers", default=None)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args()

    start = time.perf_counter()
    data = load_task_data(a.task, a.data, train_limit=a.train_limit or None)
    out = a.out
    teacher_dir = out / "teacher"
    if not teacher_dir.exists():  # finished stages are reused, so an interrupted benchmark resumes
        finetune_teacher(resolve_model(a.teacher), data, TrainConfig(epochs=a.teacher_epochs, learning_rate=a.lr),
                         teacher_dir)
    if not (out / "student_init").exists():
        make_student(str(teacher_dir), out / "student_init", a.layers)
    teacher = read_json(teacher_dir / "distil.json")["metrics"]
    dcfg = DistillConfig(a.alpha, a.temperature, a.cls_weight)
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
        "config": {"teacher_epochs": a.teacher_epochs, "epochs": a.epochs, "lr": a.lr, "distillation": vars(dcfg),
                   "layers": read_json(out / "student_init" / "distil.json")["layer_map"]},
        "seeds": rows, "wall_seconds": time.perf_counter() - start,
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
