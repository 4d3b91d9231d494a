"""The run report: a markdown table of teacher, student and baseline, and a PNG plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .artifacts import save_figure, write_text  # noqa: E402

MODELS = ("teacher", "student", "baseline")


def plot_run(metrics: dict, path: Path) -> Path:
    """Bars of task score and of parameters (millions) for each model, side by side."""
    names = [m for m in MODELS if m in metrics["models"]]
    scores = [metrics["models"][m]["score"] * 100 for m in names]
    params = [metrics["models"][m]["parameters"]["total"] / 1e6 for m in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.8))
    fig.subplots_adjust(top=0.85, wspace=0.35, left=0.08, right=0.97)
    ax1.bar(names, scores, color=["#555", "#2a7", "#aaa"][: len(names)])
    ax1.set_ylim(max(0, min(scores) - 10), 100)
    ax1.set_ylabel(f"{metrics['task']} dev score (%)")
    for i, s in enumerate(scores):
        ax1.text(i, s + 0.3, f"{s:.1f}", ha="center")
    ax2.bar(names, params, color=["#555", "#2a7", "#aaa"][: len(names)])
    ax2.set_ylabel("parameters (M)")
    for i, p in enumerate(params):
        ax2.text(i, p * 1.01, f"{p:.1f}", ha="center")
    ax2.set_ylim(0, max(params) * 1.15)
    fig.suptitle(f"distil run: {metrics['task']} — retention {metrics['retention'] * 100:.1f}%")
    return save_figure(fig, path)


def write_report(metrics: dict, out: Path) -> Path:
    """OUT/report.md from OUT/metrics.json's content (and OUT/report.png)."""
    plot_run(metrics, out / "report.png")
    names = [m for m in MODELS if m in metrics["models"]]
    metric_names = [k for k in metrics["models"]["teacher"] if k not in ("score", "parameters")]
    lines = [
        f"# distil run: {metrics['task']}",
        "",
        f"Teacher `{metrics['teacher']}`; student layers {metrics['layer_map']} "
        f"({metrics['models']['student']['parameters']['total'] / 1e6:.1f}M parameters).",
        f"Student retention: **{metrics['retention'] * 100:.1f}%** of the teacher's score; "
        f"hard-label baseline: {metrics['baseline_retention'] * 100:.1f}%.",
        "",
        "| model | " + " | ".join(metric_names) + " | score | retention | parameters | train s |",
        "|---" * (len(metric_names) + 5) + "|",
    ]
    teacher_score = metrics["models"]["teacher"]["score"]
    for name in names:
        m = metrics["models"][name]
        values = " | ".join(f"{m[k] * 100:.2f}" for k in metric_names)
        lines.append(
            f"| {name} | {values} | {m['score'] * 100:.2f} | {m['score'] / teacher_score * 100:.1f}% | "
            f"{m['parameters']['total'] / 1e6:.2f}M | {metrics['train_seconds'].get(name, 0):.0f} |"
        )
    lines += [
        "",
        "![scores and sizes](report.png)",
        "",
        "## Recipe",
        "",
        f"- data: {metrics['data']}, {metrics['train_examples']} training examples",
        f"- teacher fine-tuning: {metrics['config']['teacher']}",
        f"- student distillation: {metrics['config']['student']}, loss {metrics['config']['distillation']}",
        "- baseline: same init and steps as the student, gold labels only",
        f"- train seconds per phase: {metrics['train_seconds']}",
        f"- versions: {metrics['versions']}",
        "",
    ]
    return write_text(out / "report.md", "\n".join(lines))
