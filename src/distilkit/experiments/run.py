"""`distil run`: teacher fine-tune → student → task distillation → baseline → evaluation → report."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from ..artifacts import read_record, write_json
from ..data.task import TaskData
from ..deploy.size import model_size
from ..hardware import versions
from ..models.folders import supported_config
from ..stages.task import task_stages
from ..train.common import TrainConfig, on_main, stage_output
from ..train.task import DistillConfig
from .card import write_model_card
from .report import write_report

console = Console(stderr=True)


def run_pipeline(teacher: str, data: TaskData, out: Path, teacher_cfg: TrainConfig, student_cfg: TrainConfig,
                 dcfg: DistillConfig, layers: str | None = None, num_layers: int | None = None,
                 overwrite: bool = False, resume: bool = False, trim=None, width=None, size: bool = False) -> dict:
    """Run every stage into OUT (teacher/, student_init/, student/, baseline/, cache/) and write
    OUT/metrics.json and OUT/report.md. Returns the metrics. With `size`, the teacher and the student are exported
    (ONNX fp32 and int8) and metrics.json's "size" gives each one's parameters, file sizes and the peak RSS of
    serving one request with the int8 file (deploy/size.py).

    With `resume`, the finished stages of an interrupted run are reused when their configuration matches
    (a changed one is refused, naming the field) and the stage in progress resumes from its last checkpoint."""
    start = time.perf_counter()
    supported_config(teacher)  # an unsupported family is refused by name before any work
    out = Path(out)
    with stage_output(out, overwrite, resume) as tmp:  # under torchrun each stage trains on every process
        infos = task_stages(teacher, data, teacher_cfg, student_cfg, dcfg, tmp, tmp / "cache", layers, num_layers,
                            resume=resume, trim=trim, width=width)
        metrics = on_main(lambda: _write_metrics(teacher, data, infos, tmp, out, start, size), share=True)
    on_main(lambda: write_model_card(out / "student", metrics["models"]["teacher"]))  # it names the final folder
    console.print(f"[bold]done in {metrics['wall_seconds'] / 60:.1f} min[/]: {out}/metrics.json, {out}/report.md")
    return metrics


def _write_metrics(teacher: str, data: TaskData, infos: dict, tmp: Path, out: Path, start: float,
                   size: bool = False) -> dict:
    """metrics.json and report.md of a run whose stages are done in `tmp` (with `size`, the teacher's and the
    student's size figures, deploy/size.py); returns the metrics."""
    t_info, s_info, b_info = infos["teacher"], infos["student"], infos["baseline"]
    models = {name: {**info["metrics"], "parameters": info["parameters"]} for name, info in infos.items()}
    teacher_score = models["teacher"]["score"]
    metrics = {
        "task": data.name,
        "teacher": str(teacher),
        "data": data.source,
        "train_examples": s_info["train_examples"],
        "dev_examples": {name: len(ds) for name, ds in data.dev.items()},
        **({"f1_label": data.f1_label} if data.f1_label else {}),
        "layer_map": read_record(tmp / "student_init")["layer_map"],
        "models": models,
        "retention": models["student"]["score"] / teacher_score,
        "baseline_retention": models["baseline"]["score"] / teacher_score,
        "train_seconds": {
            "teacher": t_info["train_seconds"],
            "teacher_outputs": s_info["teacher_outputs_seconds"],
            "student": s_info["train_seconds"],
            "baseline": b_info["train_seconds"],
        },
        "distill_cost_ratio": s_info["train_seconds"] / max(b_info["train_seconds"], 1e-9),
        "config": {"teacher": t_info["config"], "student": s_info["config"],
                   "distillation": s_info["distillation"]},
        "versions": versions(),
    }
    if size:
        console.print("size: exporting teacher and student (ONNX fp32, int8), serving one request each")
        metrics["size"] = {name: model_size(tmp / name) for name in ("teacher", "student")}
    metrics["wall_seconds"] = time.perf_counter() - start
    _relocate(tmp, out)
    metrics = _replace_paths(metrics, str(tmp), str(out))
    write_json(tmp / "metrics.json", metrics)
    write_report(metrics, tmp)
    return metrics


def _replace_paths(obj, old: str, new: str):
    if isinstance(obj, str):
        return obj.replace(old, new)
    if isinstance(obj, dict):
        return {k: _replace_paths(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_paths(v, old, new) for v in obj]
    return obj


def _relocate(tmp: Path, out: Path) -> None:
    """Stage records name the temporary run folder; point them at the final one."""
    for record in [*tmp.glob("*/distil.json"), *tmp.glob("*/export.json")]:
        write_json(record, _replace_paths(read_record(record.parent, record.name), str(tmp), str(out)))
