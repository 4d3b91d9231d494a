"""`distil <stage>`: one command per pipeline stage, and `distil run` for the whole pipeline."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

# Defaults of `distil run`: chosen so the whole run fits in 20 minutes on 2 CPU cores (README).
RUN_TRAIN_LIMIT = 20000

TeacherOpt = typer.Option(None, "--teacher", "-t", help="Teacher folder or hub id (default: packaged all-MiniLM-L6-v2).")
TaskOpt = typer.Option("sst2", "--task", help="GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte wnli.")
DataOpt = typer.Option(None, "--data", help="glue_data folder (default: ../shared/data/glue when present, else the hub).")
TrainFileOpt = typer.Option(None, "--train", help="Your own labelled CSV/TSV/JSONL training file (with --dev).")
DevFileOpt = typer.Option(None, "--dev", help="Your own labelled dev file, same columns as --train.")
TextColOpt = typer.Option("text", "--text-column")
PairColOpt = typer.Option(None, "--text-pair-column")
LabelColOpt = typer.Option("label", "--label-column")
RegressionOpt = typer.Option(False, "--regression", help="Labels are numbers (regression).")
TrainLimitOpt = typer.Option(None, "--train-limit", help="Use only the first N training rows.")
DevLimitOpt = typer.Option(None, "--dev-limit", help="Use only the first N dev rows.")
LayersOpt = typer.Option(None, "--layers", help="alternate (default) | first-k | uniform | explicit list like 0,2,4.")
NumLayersOpt = typer.Option(None, "--num-layers", help="Student depth for first-k/uniform (default: half the teacher).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output folder.")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint.")


def _fail(err: Exception) -> None:
    console.print("[red]error:[/]", end=" ")
    console.print(str(err), markup=False, soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def _data(task, data, train, dev, text_column, text_pair_column, label_column, regression, train_limit, dev_limit):
    from .data.task import load_task_data

    return load_task_data(task, data, train, dev, text_column, text_pair_column, label_column, regression,
                          train_limit, dev_limit)


def _teacher(teacher: Optional[str]) -> str:
    from .models import resolve_model

    return resolve_model(teacher)


def _user_errors():
    from .artifacts import OutputExistsError
    from .data.errors import DataError
    from .models import ModelError
    from .student import StudentError

    return (DataError, ModelError, StudentError, OutputExistsError)


def _print_params(parameters: dict) -> None:
    table = Table(title="parameters")
    for col in ("model", "total", "embedding", "non-embedding"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, p in parameters.items():
        table.add_row(name, f"{p['total']:,}", f"{p['embedding']:,}", f"{p['non_embedding']:,}")
    console.print(table)


def _print_metrics(title: str, models: dict) -> None:
    table = Table(title=title)
    names = [k for k in next(iter(models.values())) if k != "parameters"]
    table.add_column("model")
    for n in names:
        table.add_column(n, justify="right")
    for model, m in models.items():
        table.add_row(model, *(f"{m[n] * 100:.2f}" for n in names))
    console.print(table)


@app.command()
def student(
    teacher: Optional[str] = TeacherOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    layers: Optional[str] = LayersOpt,
    num_layers: Optional[int] = NumLayersOpt,
    overwrite: bool = OverwriteOpt,
):
    """Build a student from a teacher: fewer layers copied from chosen teacher layers."""
    from .pipeline import make_student

    try:
        info = make_student(_teacher(teacher), out, layers, num_layers, overwrite)
    except _user_errors() as err:
        _fail(err)
    console.print(f"student ({info['student_type']}) from teacher layers {info['layer_map']} → {out}")
    _print_params(info["parameters"])


def _train_cfg(epochs, batch_size, lr, max_length, seed, bf16, max_steps=-1):
    from .train.common import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, max_length=max_length, seed=seed,
                       bf16=bf16, max_steps=max_steps)


@app.command()
def finetune(
    teacher: Optional[str] = TeacherOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    task: str = TaskOpt, data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt,
    dev: Optional[Path] = DevFileOpt, text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt,
    label_column: str = LabelColOpt, regression: bool = RegressionOpt, train_limit: Optional[int] = TrainLimitOpt,
    dev_limit: Optional[int] = DevLimitOpt,
    epochs: float = 2.0, batch_size: int = 32, lr: float = 5e-5, max_length: int = 128, seed: int = 42,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bf16 autocast (default: when supported)."),
    force: bool = typer.Option(False, "--force", help="Fine-tune even when the teacher already has a task head."),
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """Fine-tune the teacher on a task (skipped when it already has a fitting head)."""
    from .pipeline import finetune_teacher

    try:
        d = _data(task, data, train, dev, text_column, text_pair_column, label_column, regression, train_limit, dev_limit)
        info = finetune_teacher(_teacher(teacher), d, _train_cfg(epochs, batch_size, lr, max_length, seed, bf16), out,
                                overwrite, resume, force)
    except _user_errors() as err:
        _fail(err)
    _print_metrics(f"{d.name} dev", {"teacher": info["metrics"]})


@app.command("task")
def task_cmd(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher fine-tuned on the task (distil finetune)."),
    out: Path = typer.Option(..., "--out", "-o"),
    student_dir: Optional[str] = typer.Option(None, "--student", help="Student to start from (default: built from the teacher)."),
    layers: Optional[str] = LayersOpt, num_layers: Optional[int] = NumLayersOpt,
    task: str = TaskOpt, data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt,
    dev: Optional[Path] = DevFileOpt, text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt,
    label_column: str = LabelColOpt, regression: bool = RegressionOpt, train_limit: Optional[int] = TrainLimitOpt,
    dev_limit: Optional[int] = DevLimitOpt,
    alpha: float = typer.Option(0.5, help="Weight of the soft-target loss (1-alpha on the gold labels)."),
    temperature: float = typer.Option(2.0, help="Softmax temperature of the soft targets."),
    cls_weight: float = typer.Option(0.0, help="Weight of the cosine loss between final [CLS] states."),
    epochs: float = 3.0, batch_size: int = 32, lr: float = 5e-5, max_length: int = 128, seed: int = 42,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
    cache_dir: Optional[Path] = typer.Option(None, help="Where teacher outputs are cached (default ~/.cache/distilkit)."),
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """Task distillation: soft targets of the fine-tuned teacher (cached) + gold labels."""
    from .pipeline import distil_task
    from .train.task import DistillConfig

    cache = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distilkit"
    try:
        d = _data(task, data, train, dev, text_column, text_pair_column, label_column, regression, train_limit, dev_limit)
        info = distil_task(_teacher(teacher), d, _train_cfg(epochs, batch_size, lr, max_length, seed, bf16),
                           DistillConfig(alpha, temperature, cls_weight), out, cache, student_dir, layers,
                           num_layers, overwrite, resume)
    except _user_errors() as err:
        _fail(err)
    _print_metrics(f"{d.name} dev", {"student": info["metrics"]})


@app.command("eval")
def eval_cmd(
    model_dir: str = typer.Argument(..., help="A task model folder."),
    task: str = TaskOpt, data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt,
    dev: Optional[Path] = DevFileOpt, text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt,
    label_column: str = LabelColOpt, regression: bool = RegressionOpt, dev_limit: Optional[int] = DevLimitOpt,
    max_length: int = 128,
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="metrics.json path (default MODEL_DIR/metrics.json)."),
):
    """Score a model folder on a task's dev split(s); writes metrics.json."""
    from .artifacts import write_json
    from .models import check_model_dir
    from .pipeline import evaluate_folder

    try:
        check_model_dir(Path(model_dir))
        d = _data(task, data, train, dev, text_column, text_pair_column, label_column, regression, 1, dev_limit)
        metrics = evaluate_folder(model_dir, d, max_length)
    except _user_errors() as err:
        _fail(err)
    path = out or Path(model_dir) / "metrics.json"
    write_json(path, {"model": model_dir, "task": d.name, "data": d.source, "metrics": metrics})
    _print_metrics(f"{d.name} dev", {Path(model_dir).name: metrics})
    console.print(f"→ {path}")


@app.command()
def run(
    teacher: Optional[str] = TeacherOpt,
    out: Path = typer.Option(Path("runs/sst2"), "--out", "-o"),
    task: str = TaskOpt, data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt,
    dev: Optional[Path] = DevFileOpt, text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt,
    label_column: str = LabelColOpt, regression: bool = RegressionOpt,
    train_limit: Optional[int] = typer.Option(RUN_TRAIN_LIMIT, "--train-limit",
                                              help="Training rows used (0: all). The default keeps the run under 20 min."),
    dev_limit: Optional[int] = DevLimitOpt,
    layers: Optional[str] = LayersOpt, num_layers: Optional[int] = NumLayersOpt,
    teacher_epochs: float = 2.0, teacher_lr: float = 5e-5,
    epochs: float = typer.Option(2.0, help="Epochs of the student (and of the baseline)."),
    lr: float = 5e-5, batch_size: int = 32, max_length: int = 128, seed: int = 42,
    alpha: float = 0.5, temperature: float = 2.0, cls_weight: float = 0.0,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """The whole pipeline: fine-tune teacher → student → distil → baseline → evaluate → report."""
    from .run import run_pipeline
    from .train.task import DistillConfig

    try:
        if not resume:
            from .artifacts import check_output

            check_output(out, overwrite)
        d = _data(task, data, train, dev, text_column, text_pair_column, label_column, regression,
                  train_limit or None, dev_limit)
        metrics = run_pipeline(
            _teacher(teacher), d, out,
            _train_cfg(teacher_epochs, batch_size, teacher_lr, max_length, seed, bf16),
            _train_cfg(epochs, batch_size, lr, max_length, seed, bf16),
            DistillConfig(alpha, temperature, cls_weight), layers, num_layers, overwrite, resume,
        )
    except _user_errors() as err:
        _fail(err)
    _print_metrics(f"{d.name} dev", {k: v for k, v in metrics["models"].items()})
    console.print(f"retention {metrics['retention'] * 100:.1f}% (baseline {metrics['baseline_retention'] * 100:.1f}%)")
    console.print(json.dumps(metrics["train_seconds"]))


if __name__ == "__main__":  # pragma: no cover
    app()
