"""The run report: a markdown table of teacher, student and baseline, and a PNG plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..artifacts import save_figure, write_text  # noqa: E402
from ..data.glue import METRIC_LABELS, PAPER_ORDER, get_task  # noqa: E402

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


def size_table(sizes: dict | None) -> list[str]:
    """Markdown lines: each model's parameters, ONNX file sizes and int8 serving peak RSS (deploy/size.py)."""
    if not sizes:
        return []
    lines = ["", "| model | parameters | embedding | non-embedding | fp32 ONNX MB | int8 ONNX MB | int8 serving peak "
             "RSS MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in sizes.items():
        if not isinstance(s, dict):
            continue
        p = s["parameters"]
        lines.append(f"| {name} | {p['total'] / 1e6:.2f}M | {p['embedding'] / 1e6:.2f}M | "
                     f"{p['non_embedding'] / 1e6:.2f}M | {_mb(s['fp32_mb'])} | {_mb(s['int8_mb'])} | "
                     f"{_mb(s['int8_peak_rss_mb'])} |")
    runtime = next((s["runtime_rss_mb"] for s in sizes.values() if isinstance(s, dict) and s.get("runtime_rss_mb")),
                   None)
    if runtime:
        lines.append(f"\nPeak RSS: a fresh process loading the int8 file and serving one request ({runtime:.0f} MB of "
                     "it is the interpreter and runtime before the model loads).")
    return lines


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


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
    if metrics.get("f1_label") is not None:  # the user's own two labels: which one F1 scores
        chosen = "--positive-label" if "positive_label" in metrics["data"] else ("the second of the two in sorted "
                                                                                  "order; --positive-label chooses")
        lines += ["", f"f1: of the label `{metrics['f1_label']}` ({chosen})."]
    lines += size_table(metrics.get("size"))
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


# --- distil glue: the paper's table, per-task bars, and the full report ---------------------------


def _metric_names(result: dict) -> list[str]:
    """The task's own metrics in a glue.json task entry (not the score, its spread or the seeds)."""
    return [k for k in result if k not in ("score", "score_std", "seeds")]


def _task_header(glue: dict, task: str) -> str:

    keys = _metric_names(glue["models"]["teacher"]["tasks"][task])
    return f"{get_task(task).folder} ({'/'.join(METRIC_LABELS.get(k, k) for k in keys)})"


def _task_cell(result: dict, spread: bool) -> str:
    cell = "/".join(f"{result[k] * 100:.1f}" for k in _metric_names(result))
    return cell + (f" ±{result['score_std'] * 100:.1f}" if spread else "")


def glue_table(glue: dict) -> str:
    """Markdown table in the DistilBERT paper's layout: one row per model, macro score, then one column
    per task with its official metric(s), parameters and retention (± = std over seeds)."""
    tasks = [t for t in PAPER_ORDER if t in glue["tasks"]]
    spread = len(glue["seeds"]) > 1
    lines = ["| model | macro score | " + " | ".join(_task_header(glue, t) for t in tasks) + " | parameters | retention |",
             "|---|---:|" + "---:|" * len(tasks) + "---:|---:|"]
    for name, m in glue["models"].items():
        macro = f"{m['macro'] * 100:.1f}" + (f" ±{m['macro_std'] * 100:.1f}" if spread else "")
        kept = "" if name == "teacher" else f"{glue['retention'][name]['macro'] * 100:.1f}%"
        cells = " | ".join(_task_cell(m["tasks"][t], spread) for t in tasks)
        lines.append(f"| {name} | {macro} | {cells} | {m['parameters']['total'] / 1e6:.1f}M | {kept} |")
    return "\n".join(lines)


def plot_glue(glue: dict, path: Path) -> Path:
    """Grouped bars: each model's task score per task and its macro score (error bars: std over seeds)."""
    tasks = [t for t in PAPER_ORDER if t in glue["tasks"]]
    names = list(glue["models"])
    groups = tasks + ["macro"]
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4))
    for i, name in enumerate(names):
        m = glue["models"][name]
        values = [m["tasks"][t]["score"] * 100 for t in tasks] + [m["macro"] * 100]
        errors = [m["tasks"][t]["score_std"] * 100 for t in tasks] + [m["macro_std"] * 100]
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, yerr=errors if len(glue["seeds"]) > 1 else None, label=name, capsize=2)
    ax.set_xticks(range(len(groups)), [_task_header(glue, t) for t in tasks] + ["macro"], fontsize=8)
    ax.set_ylabel("dev score (%)")
    ax.set_title(f"distil glue: macro retention {glue['macro_retention'] * 100:.1f}% "
                 f"(seeds {', '.join(map(str, glue['seeds']))})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _sweep_section(out: Path) -> list[str]:
    sweep_md = out / "sweep" / "sweep.md"
    if not sweep_md.exists():
        return []
    text = sweep_md.read_text(encoding="utf-8").strip().replace("](pareto.png)", "](sweep/pareto.png)")
    body = [line for line in text.splitlines() if not line.startswith("# ")]  # sweep.md's own title
    return ["## Depth and precision sweep (`sweep/`)", "", *body, ""]


def write_glue_report(glue: dict, out: Path) -> Path:
    """OUT/glue.md (the table), OUT/glue.png and OUT/report.md (table, plots, every run's hyper-parameters,
    per-seed scores, training seconds, hardware and versions)."""
    out = Path(out)
    table = glue_table(glue)
    write_text(out / "glue.md", table + "\n")
    plot_glue(glue, out / "glue.png")
    hw = glue["hardware"]
    lines = [
        f"# distil glue: {', '.join(glue['tasks'])}",
        "",
        f"Teacher `{glue['teacher']}`; student from teacher layers {glue['layer_map']}. "
        f"Dev-set scores (%), mean over seeds {', '.join(map(str, glue['seeds']))}. "
        f"**Macro retention {glue['macro_retention'] * 100:.1f}%** of the teacher's macro score.",
        "",
        table,
        "",
        "![per-task scores](glue.png)",
        *([""] + [f"Size (measured on {glue['size']['measured_on']}):"] + size_table(
            {k: v for k, v in glue["size"].items() if k != "measured_on"}) if glue.get("size") else []),
        "",
        "## Retention per task",
        "",
        "| model | " + " | ".join(glue["tasks"]) + " | macro |",
        "|---|" + "---:|" * (len(glue["tasks"]) + 1),
    ]
    for name, r in glue["retention"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r[t] * 100:.1f}%" for t in glue["tasks"])
                     + f" | {r['macro'] * 100:.1f}% |")
    lines += ["", "## Per seed", "", "| task | model | " + " | ".join(f"seed {s}" for s in glue["seeds"]) + " |",
              "|---|---|" + "---:|" * len(glue["seeds"])]
    for task in glue["tasks"]:
        for name, m in glue["models"].items():
            seeds = m["tasks"][task]["seeds"]
            lines.append(f"| {task} | {name} | " + " | ".join(f"{seeds[str(s)]['score'] * 100:.2f}" for s in glue["seeds"]) + " |")
    lines.append("")
    lines += _sweep_section(out)
    lines += ["## Data and hyper-parameters", ""]
    for task in glue["tasks"]:
        d, r = glue["data"][task], glue["recipes"][task]
        lines += [f"### {task}", "",
                  f"- data: {d['source']}; {d['train_examples']} training rows; dev rows {d['dev_examples']}",
                  f"- teacher fine-tuning: {r['teacher']}",
                  f"- student distillation: {r['student']}; loss {r['distillation']}",
                  "- baseline: the student's initialisation and steps, gold labels only",
                  f"- training seconds (per seed, per model): {glue['train_seconds'][task]}", ""]
    lines += [
        "## Machine and versions",
        "",
        f"- {hw['cpu']}, {hw['cores']} cores, ISA {', '.join(hw['isa']) or 'baseline'}; torch threads {hw['torch_threads']}",
        f"- versions: {glue['versions']}",
        f"- wall time of the last `distil glue` call: {glue['wall_seconds_this_call'] / 60:.1f} min "
        "(finished stages it reused cost nothing)",
        "",
        "Each student folder holds a Hugging Face model card (README.md) and its distil.json.",
        "",
    ]
    return write_text(out / "report.md", "\n".join(lines))
