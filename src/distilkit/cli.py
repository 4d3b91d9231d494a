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


def _data(task, data, train, dev, text_column, text_pair_column, label_column, regression, train_limit, dev_limit,
          unlabeled=None):
    from .data.task import load_task_data

    return load_task_data(task, data, train, dev, text_column, text_pair_column, label_column, regression,
                          train_limit, dev_limit, unlabeled)


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
    augment: int = typer.Option(0, help="Perturbed copies of each training row, labelled by the teacher only "
                                "(a larger transfer set; 0: off)."),
    hidden_weight: float = typer.Option(0.0, help="Weight of the intermediate-layer loss: MSE between student and "
                                        "teacher hidden states, every layer and token (runs the teacher online; 0: off)."),
    augment_neighbours: int = typer.Option(0, help="With --augment: a replaced word becomes one of its K nearest "
                                           "neighbours in the teacher's input embeddings (0: a random training word)."),
    attention_weight: float = typer.Option(0.0, help="Weight of the attention loss: KL between teacher and student "
                                           "attention distributions, each student layer against the teacher's at the "
                                           "matching depth (runs the teacher online; 0: off)."),
    unlabeled: Optional[str] = typer.Option(None, help="Extra inputs only the teacher labels: 'test' (a GLUE task's "
                                            "test splits) or a CSV/TSV/JSONL file with the training text column(s)."),
    mined_pairs: int = typer.Option(0, help="Pair tasks: N new pairs per training row, a text with one of its 10 most "
                                    "similar training sentences (TF-IDF), labelled by the teacher only (0: off)."),
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
        d = _data(task, data, train, dev, text_column, text_pair_column, label_column, regression, train_limit, dev_limit,
                  unlabeled)
        dcfg = DistillConfig(alpha, temperature, cls_weight, augment, hidden_weight, augment_neighbours,
                             attention_weight, mined_pairs)
        info = distil_task(_teacher(teacher), d, _train_cfg(epochs, batch_size, lr, max_length, seed, bf16), dcfg, out,
                           cache, student_dir, layers, num_layers, overwrite, resume)
    except (*_user_errors(), ValueError) as err:
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
    embedding: bool = typer.Option(False, "--embedding", help="Score a sentence-embedding model without fine-tuning: "
                                                              "STS-B dev Spearman and retrieval recall@1/@10, MRR@10."),
    teacher: Optional[str] = typer.Option(None, "--teacher", "-t", help="--embedding: the teacher, scored side by side "
                                                                        "(retention = model / teacher)."),
    compare: Optional[list[str]] = typer.Option(None, "--compare", help="--embedding: more models, NAME=DIR "
                                                                        "(e.g. truncated=runs/embed/truncated)."),
    retrieval: str = typer.Option("mrpc", "--retrieval", help="--embedding: retrieval sets, comma list of mrpc, stsb "
                                                              "or JSONL files of {\"query\", \"passage\"} lines; none: skip."),
    sts: bool = typer.Option(True, "--sts/--no-sts", help="--embedding: STS-B dev Spearman."),
    backend: str = typer.Option("torch", "--backend", "-b", help="--embedding: backend the models run on."),
):
    """Score a model folder on a task's dev split(s) (or, --embedding, on STS-B and retrieval); writes metrics.json."""
    from .artifacts import write_json
    from .models import check_model_dir
    from .pipeline import evaluate_folder

    if embedding:
        return _eval_embedding(model_dir, teacher, compare or [], retrieval, sts, data, backend, out)
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


def _eval_embedding(model_dir, teacher, compare, retrieval, sts, data, backend, out) -> dict:
    from .artifacts import write_json
    from .evaluate import compare_embedding_models, glue_retrieval, jsonl_retrieval, sts_pairs
    from .data.glue import default_glue_dir

    try:
        glue = data or default_glue_dir()
        models = {**({"teacher": _teacher(teacher)} if teacher else {}), Path(model_dir).name or "model": model_dir}
        for item in compare:
            name, sep, folder = item.partition("=")
            if not sep:
                raise ValueError(f"--compare {item!r}: expected NAME=DIR")
            models[name] = folder
        sets = [jsonl_retrieval(r) if r.endswith((".jsonl", ".json")) else glue_retrieval(r, glue)
                for r in (x.strip() for x in retrieval.split(",")) if r and r != "none"]
        result = compare_embedding_models(models, sts_pairs(glue) if sts else None, sets, backend)
    except (ValueError, *_deploy_errors()) as err:
        _fail(err)
    path = out or Path(model_dir) / "embedding_metrics.json"
    write_json(path, {"models_dirs": models, "data": str(glue or "hub"), **result})
    _print_embedding_table(result)
    console.print(f"→ {path}")
    return result


def _print_embedding_table(result: dict) -> None:
    from .evaluate import embedding_scores

    table = Table(title="sentence embeddings (no fine-tuning)")
    flat = {name: embedding_scores({k: v for k, v in m.items() if k != "pooling"}) for name, m in result["models"].items()}
    names = list(next(iter(flat.values())))
    table.add_column("model")
    for n in names:
        table.add_column(n, justify="right")
    for model, m in flat.items():
        table.add_row(model, *(f"{m[n] * 100:.2f}" for n in names))
    for model, r in result.get("retention", {}).items():
        table.add_row(f"{model} retention", *(f"{r[n] * 100:.1f}%" if r[n] is not None else "" for n in names))
    console.print(table)


@app.command()
def embed(
    teacher: Optional[str] = TeacherOpt,
    corpus: list[str] = typer.Option(..., "--corpus", help="Unlabelled sentences: a text file (one per line), a folder "
                                                          "of them, or a glue_data folder (train sentences only). Repeatable."),
    out: Path = typer.Option(..., "--out", "-o"),
    layers: Optional[str] = LayersOpt, num_layers: Optional[int] = NumLayersOpt,
    epochs: float = typer.Option(3.0, help="Passes over the corpus (0: write the untrained truncated student)."),
    batch_size: int = 64, lr: float = 1e-4, max_length: int = 128, seed: int = 42,
    warmup: float = typer.Option(0.06, help="Share of the steps with a rising learning rate."),
    mse_weight: float = typer.Option(1.0, help="Weight of the MSE between pooled embeddings."),
    cos_weight: float = typer.Option(1.0, help="Weight of 1 - cos(student, teacher)."),
    sim_weight: float = typer.Option(1.0, help="Weight of the MSE between in-batch cosine-similarity matrices."),
    cache_dir: Optional[Path] = typer.Option(None, help="Where teacher embeddings are cached (default ~/.cache/distilkit/embed)."),
    overwrite: bool = OverwriteOpt,
):
    """Distil a sentence-embedding teacher into a smaller student on unlabelled sentences (no labels used)."""
    from .embed import EmbedConfig, EmbedError, distil_embeddings

    cache = cache_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distilkit" / "embed"
    cfg = EmbedConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, max_length=max_length, seed=seed,
                      warmup=warmup, mse_weight=mse_weight, cos_weight=cos_weight, sim_weight=sim_weight)
    try:
        info = distil_embeddings(_teacher(teacher), corpus, out, cfg, layers, num_layers, cache,
                                 overwrite, say=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True))
    except (EmbedError, *_user_errors()) as err:
        _fail(err)
    trained = f"{info['train']['steps']} steps in {info['train']['seconds']:.0f} s" if info["train"] else "untrained"
    console.print(f"embedding student ({info['student_type']}, teacher layers {info['layer_map']}, {trained}) → {out}")


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



@app.command()
def glue(
    tasks: str = typer.Option("sst2,mrpc,stsb,cola", "--tasks", help="Comma-separated GLUE tasks."),
    out: Path = typer.Option(Path("runs/glue"), "--out", "-o"),
    teacher: Optional[str] = TeacherOpt, data: Optional[Path] = DataOpt,
    seeds: str = typer.Option("42", "--seeds", help="Comma-separated seeds; each repeats every stage."),
    layers: Optional[str] = LayersOpt, num_layers: Optional[int] = NumLayersOpt,
    train_limit: Optional[str] = typer.Option(None, help="Training rows per task, 0 = all (default sst2=20000, others all)."),
    teacher_epochs: Optional[str] = typer.Option(None, help="Teacher epochs: 3 or 3,sst2=1 (default: glue.DEFAULTS)."),
    teacher_lr: Optional[str] = typer.Option(None, help="Teacher learning rate, same syntax (default: glue.DEFAULTS)."),
    epochs: Optional[str] = typer.Option(None, help="Student (and baseline) epochs, same syntax (default: glue.DEFAULTS)."),
    lr: Optional[str] = typer.Option(None, help="Student learning rate, same syntax (default: glue.DEFAULTS)."),
    alpha: Optional[str] = typer.Option(None, help="Soft-target weight, same syntax (default 0.5)."),
    temperature: Optional[str] = typer.Option(None, help="Soft-target temperature, same syntax (default 2)."),
    cls_weight: Optional[str] = typer.Option(None, help="[CLS] cosine weight, same syntax (default 0)."),
    augment: Optional[str] = typer.Option(None, help="Perturbed teacher-labelled copies per training row, same "
                                          "syntax (default: glue.DEFAULTS)."),
    hidden_weight: Optional[str] = typer.Option(None, help="Intermediate-layer hidden-state MSE weight, same syntax "
                                                "(default: glue.DEFAULTS)."),
    augment_neighbours: Optional[str] = typer.Option(None, help="Teacher-embedding neighbours a perturbed copy's "
                                                     "replaced word is drawn from, same syntax (default: glue.DEFAULTS)."),
    attention_weight: Optional[str] = typer.Option(None, help="Per-layer attention KL weight, same syntax "
                                                   "(default: glue.DEFAULTS)."),
    unlabeled: Optional[str] = typer.Option(None, help="Extra student inputs only the teacher labels, per task: "
                                            "test (the task's test splits) or a file, e.g. stsb=test,cola=test."),
    mined_pairs: Optional[str] = typer.Option(None, help="New teacher-labelled pairs per training row from the task's "
                                              "own sentences (pair tasks), same syntax (default: glue.DEFAULTS)."),
    batch_size: int = 32, max_length: int = 128, dev_limit: Optional[int] = DevLimitOpt,
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also train the hard-label baseline."),
    compare: list[str] = typer.Option([], "--compare", help="NAME=PATH (or PATH) of another model to fine-tune and "
                                      "score in the same table; repeatable."),
    sweep_depths: Optional[str] = typer.Option(None, help="Also sweep student depths (e.g. 1,2,3,4) on --sweep-task."),
    sweep_task: str = typer.Option("sst2", help="Task of the depth/precision sweep."),
    sweep_precisions: str = typer.Option("fp32,int8", help="Precisions of the sweep: fp32, int8."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete OUT and start afresh (default: resume it)."),
):
    """GLUE suite: teacher, student and baseline on each task and seed, the paper's table, model cards.

    Running the same command again resumes: finished stages are reused when their configuration matches."""
    import shutil

    from .glue import build_recipes, run_glue

    try:
        task_list = [t.strip() for t in tasks.split(",") if t.strip()]
        from .data.glue import get_task

        task_list = [get_task(t).name for t in task_list]
        recipes = build_recipes(task_list, {
            "train_limit": train_limit, "teacher_epochs": teacher_epochs, "teacher_lr": teacher_lr, "epochs": epochs,
            "lr": lr, "alpha": alpha, "temperature": temperature, "cls_weight": cls_weight, "augment": augment,
            "hidden_weight": hidden_weight, "augment_neighbours": augment_neighbours,
            "attention_weight": attention_weight, "unlabeled": unlabeled, "mined_pairs": mined_pairs},
            batch_size, max_length, bf16)
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        others = {}
        for item in compare:
            name, sep, path = item.partition("=")
            name, path = (name, path) if sep else (Path(item.rstrip("/")).name, item)
            others[name.strip()] = _teacher(path.strip())  # a folder (checked) or a hub id
        if overwrite and out.exists():
            shutil.rmtree(out)
        result = run_glue(_teacher(teacher), task_list, out, recipes, data, seed_list, layers, num_layers, baseline,
                          others, dev_limit, sweep_depths=[int(d) for d in sweep_depths.split(",")] if sweep_depths else None,
                          sweep_task=sweep_task, sweep_precisions=[p.strip() for p in sweep_precisions.split(",")])
    except (*_user_errors(), ValueError) as err:
        _fail(err)
    console.print((out / "glue.md").read_text())
    console.print(f"macro retention {result['macro_retention'] * 100:.1f}%")


@app.command()
def sweep(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher fine-tuned on the task (distil finetune)."),
    out: Path = typer.Option(..., "--out", "-o"),
    depths: str = typer.Option("1,2,3,4", help="Student depths (layers picked by the alternate rule)."),
    precisions: str = typer.Option("fp32,int8", help="fp32 (torch) and/or int8 (ONNX Runtime, checked on dev)."),
    task: str = TaskOpt, data: Optional[Path] = DataOpt, train_limit: Optional[int] = TrainLimitOpt,
    dev_limit: Optional[int] = DevLimitOpt,
    epochs: float = 1.0, batch_size: int = 32, lr: float = 5e-5, max_length: int = 128, seed: int = 42,
    alpha: float = 0.5, temperature: float = 2.0,
    seq: int = typer.Option(128, help="Sequence length of the latency timing."),
    repeats: int = 20, tolerance: float = typer.Option(1.0, help="Largest int8 dev-score drop (points) accepted."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
):
    """Students of several depths, fp32 and int8: score against latency and size, Pareto frontier and plot.

    Running it again reuses finished depths and exports."""
    from .sweep import run_sweep
    from .train.task import DistillConfig

    try:
        d = _data(task, data, None, None, "text", None, "label", False, train_limit, dev_limit)
        result = run_sweep(_teacher(teacher), d, [int(x) for x in depths.split(",")], out,
                           _train_cfg(epochs, batch_size, lr, max_length, seed, bf16), DistillConfig(alpha, temperature),
                           out / "cache", precisions=tuple(p.strip() for p in precisions.split(",")), seq=seq,
                           repeats=repeats, tolerance=tolerance)
    except (*_user_errors(), ValueError) as err:
        _fail(err)
    console.print((out / "sweep.md").read_text())
    console.print(f"frontier (latency): {', '.join(p['model'] + ' ' + p['precision'] for p in result['frontier']['latency'])}")


@app.command()
def pretrain(
    teacher: Optional[str] = TeacherOpt,
    corpus: str = typer.Option(..., "--corpus", help="Text file, folder of text files, hub dataset name[:config], "
                                                     "or a folder prepared by `distil corpus`."),
    out: Path = typer.Option(..., "--out", "-o"),
    student_dir: Optional[str] = typer.Option(None, "--student", help="Student to start from (default: built from the teacher)."),
    layers: Optional[str] = LayersOpt,
    eval_corpus: Optional[str] = typer.Option(None, "--eval-corpus", help="Held-out text, raw or prepared "
                                                                          "(default: the corpus tail)."),
    recipe: str = typer.Option("triple", "--recipe", help="triple: DistilBERT's loss against a masked-LM teacher; "
                                                          "headless: last-layer attention KL + value relation + "
                                                          "hidden cosine, no MLM head (MiniLM-style)."),
    fit_mlm_head: bool = typer.Option(False, "--fit-mlm-head", help="Fit an MLM head on the frozen teacher first."),
    head_steps: int = 300,
    max_steps: int = typer.Option(1000, "--max-steps"), save_steps: int = typer.Option(200, "--save-steps"),
    logging_steps: Optional[int] = typer.Option(None, "--logging-steps", help="Log the loss every N steps "
                                                                              "(default: max-steps/20, at most 50)."),
    batch_size: int = 32, grad_accum: int = typer.Option(1, "--grad-accum"), lr: float = 5e-4, max_len: int = 128,
    seed: int = 42,
    alpha_ce: Optional[float] = typer.Option(None, "--alpha-ce", help="triple: weight of L_ce (default 5)."),
    alpha_mlm: Optional[float] = typer.Option(None, "--alpha-mlm", help="triple: weight of L_mlm (default 2)."),
    alpha_cos: float = typer.Option(1.0, "--alpha-cos", help="Weight of L_cos (last hidden states)."),
    alpha_mse: Optional[float] = typer.Option(None, "--alpha-mse", help="triple: weight of the logit MSE (default 0)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="triple: softmax temperature (default 2)."),
    alpha_attn: Optional[float] = typer.Option(None, "--alpha-attn", help="headless: weight of the last-layer "
                                                                          "attention KL (default 1)."),
    alpha_value: Optional[float] = typer.Option(None, "--alpha-value", help="headless: weight of the value-relation "
                                                                            "KL (default 1)."),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """General distillation on raw text: 5·L_ce + 2·L_mlm + 1·L_cos against a masked-LM teacher, or with
    --recipe headless 1·L_attn + 1·L_value + 1·L_cos against any encoder (torchrun-ready)."""
    from .pretrain import pretrain as run_pretrain
    from .train.common import TrainConfig
    from .train.general import HeadlessLossConfig, TripleLossConfig

    own = {"triple": {"--alpha-ce": alpha_ce, "--alpha-mlm": alpha_mlm, "--alpha-mse": alpha_mse,
                      "--temperature": temperature},
           "headless": {"--alpha-attn": alpha_attn, "--alpha-value": alpha_value}}
    if recipe not in own:
        _fail(ValueError(f"--recipe {recipe!r}: expected triple or headless"))
    other = [name for r, opts in own.items() if r != recipe for name, value in opts.items() if value is not None]
    if other:
        _fail(ValueError(f"{', '.join(other)} belong to the other recipe, not --recipe {recipe}"))
    def given(value: Optional[float], default: float) -> float:
        return default if value is None else value

    if recipe == "headless":
        loss = HeadlessLossConfig(given(alpha_attn, 1.0), given(alpha_value, 1.0), alpha_cos)
    else:
        loss = TripleLossConfig(given(alpha_ce, 5.0), given(alpha_mlm, 2.0), alpha_cos, given(alpha_mse, 0.0),
                                given(temperature, 2.0))

    cfg = TrainConfig(max_steps=max_steps, save_steps=save_steps, batch_size=batch_size, learning_rate=lr,
                      max_length=max_len, seed=seed, bf16=bf16, gradient_accumulation=grad_accum,
                      logging_steps=logging_steps or max(1, min(50, max_steps // 20)))
    try:
        info = run_pretrain(_teacher(teacher), corpus, out, cfg,
                            loss,
                            student_dir, layers, eval_corpus, fit_mlm_head, head_steps, max_len,
                            overwrite=overwrite, resume=resume)
    except (ValueError, *_user_errors()) as err:
        _fail(err)
    if "student_mlm_accuracy" in info:  # the main process (the only one under torchrun that evaluates)
        console.print(f"masked-token accuracy: teacher {info['teacher_mlm_accuracy'] * 100:.1f}%, "
                      f"student {info['student_mlm_accuracy'] * 100:.1f}% → {out}/pretrain.json")
    elif "attention_kl_after" in info:
        cos = (f", hidden-state cosine {info['hidden_cosine_before']:.4f} → {info['hidden_cosine_after']:.4f}"
               if info["hidden_cosine_after"] is not None else "")
        console.print(f"held-out last-layer attention KL {info['attention_kl_before']:.4f} → "
                      f"{info['attention_kl_after']:.4f}{cos} → {out}/pretrain.json", highlight=False)


@app.command("corpus")
def corpus_cmd(
    source: str = typer.Argument(..., help="Text file, folder of text files, or hub dataset name[:config]."),
    teacher: Optional[str] = TeacherOpt,
    out: Path = typer.Option(..., "--out", "-o"),
    max_len: int = typer.Option(128, "--max-len", help="Longest packed sequence, [CLS] and [SEP] included."),
    overwrite: bool = OverwriteOpt,
):
    """Prepare a corpus for `distil pretrain`: packed token sequences (Arrow), token counts, corpus.json."""
    import shutil

    from .artifacts import publish, start_partial
    from .data.corpus import prepare_corpus
    from .models import load_tokenizer

    try:
        teacher = _teacher(teacher)
        tokenizer = load_tokenizer(teacher)
        tmp = start_partial(out, overwrite)
        try:
            info = prepare_corpus(source, tokenizer, tmp, max_len, tokenizer_name=teacher)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing to resume: leave no folder behind
            raise
        publish(tmp, out, overwrite)
    except _user_errors() as err:
        _fail(err)
    console.print(f"{info['sequences']:,} sequences, {info['tokens']:,} tokens (max_len {max_len}) → {out}")


# --- deploy: export, bench, predict, serve -------------------------------------------------------

BackendOpt = typer.Option("auto", "--backend", "-b",
                          help="auto (ONNX int8 > ONNX fp32 > torch) | torch | torch-bf16 | onnx | onnx-int8.")
MaxLengthOpt = typer.Option(None, "--max-length", help="Truncate to N tokens (default: the training length, else 128).")


def _deploy_errors():
    from .backends import BackendError
    from .export import ExportCheckError
    from .predict import InputError

    return _user_errors() + (BackendError, ExportCheckError, InputError)


@app.command("export")
def export_cmd(
    model_dir: str = typer.Argument(..., help="A task model folder (save_pretrained, safetensors)."),
    task: Optional[str] = typer.Option(None, "--task", help="GLUE task whose dev set checks the export "
                                                            "(default: distil.json's task, else sst2)."),
    data: Optional[Path] = DataOpt, dev_limit: Optional[int] = DevLimitOpt,
    tolerance: float = typer.Option(1.0, "--tolerance", help="Largest dev-score drop (points) a file may show."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also write the int8 model (per-channel dynamic)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Check against the torch model on the dev set."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder of the ONNX files (default MODEL_DIR)."),
    max_length: Optional[int] = MaxLengthOpt,
    min_cosine: float = typer.Option(0.99, "--min-cosine", help="Embedding models: lowest mean cosine of a file's "
                                                                "embeddings to the torch fp32 ones."),
    sentences: Optional[Path] = typer.Option(None, "--sentences", help="Embedding models: sentences (one per line) "
                                                                       "to check on (default: STS-B dev)."),
):
    """ONNX export (optimised fp32 + int8), checked against the torch model; writes export.json."""
    from .backends import read_info
    from .embed import is_embedding_model
    from .export import export_onnx

    try:
        d, source = None, None
        if check and is_embedding_model(model_dir):
            d, source = _check_sentences(sentences, data, dev_limit)
        elif check:
            task = task or read_info(model_dir, "distil.json").get("task") or "sst2"
            d = _data(task, data, None, None, "text", None, "label", False, 1, dev_limit)
        info = export_onnx(model_dir, out, int8, d, tolerance, max_length, min_cosine=min_cosine,
                           sentences_source=source)
    except (ValueError, *_deploy_errors()) as err:
        _fail(err)
    folder = out or Path(model_dir)
    if "check" in info and info.get("kind") == "embedding":
        table = Table(title=f"embeddings vs torch fp32 ({info['check']['sentences']} sentences)")
        for col in ("backend", "mean cosine", "min cosine", "max |diff|"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        for name, r in info["check"]["results"].items():
            table.add_row(name, f"{r['mean_cosine']:.5f}", f"{r['min_cosine']:.5f}" if "min_cosine" in r else "",
                          f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "")
        console.print(table)
    elif "check" in info:
        table = Table(title=f"{info['check']['task']} dev ({info['check']['dev_examples']} examples)")
        for col in ("backend", "score", "drop (points)", "label agreement", "max |logit diff|"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        for name, r in info["check"]["results"].items():
            agree = "" if r.get("label_agreement") is None else f"{r['label_agreement'] * 100:.2f}%"
            table.add_row(name, f"{r['score'] * 100:.2f}", f"{r.get('score_drop_points', 0):.2f}", agree,
                          f"{r['max_abs_logit_diff']:.2e}" if "max_abs_logit_diff" in r else "")
        console.print(table)
    for name, size in info["files"].items():
        console.print(f"→ {folder / name} ({size / 1e6:.1f} MB)")
    console.print(f"→ {folder / 'export.json'}")


def _check_sentences(path, data, limit) -> tuple[list[str], str]:
    """Sentences that check an embedding export: a file's lines, else STS-B dev's distinct sentences."""
    from .data.sentences import sentences_of
    from .evaluate import sts_pairs

    if path is not None:
        lines = sentences_of(path)
        return lines[:limit] if limit else lines, str(path)
    from .data.glue import default_glue_dir

    s1, s2, _ = sts_pairs(data or default_glue_dir())
    unique = list(dict.fromkeys(s1 + s2))
    return unique[:limit] if limit else unique, "STS-B dev sentences"


@app.command()
def bench(
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher task model folder."),
    student: Optional[Path] = typer.Option(None, "--student", help="Student task model folder."),
    seq: str = typer.Option("32,128", "--seq", help="Sequence lengths of the batch-1 latency runs."),
    batch: int = typer.Option(32, "--batch", help="Batch of the throughput run (at the longest --seq)."),
    repeats: int = typer.Option(20, "--repeats", help="Timed calls per model, backend and scenario."),
    backends: Optional[str] = typer.Option(None, "--backends", help="Comma list (default: all available)."),
    peak_size: int = typer.Option(1024, "--peak-size", help="Size of the square matmuls timing the machine's peak."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for bench.json, bench.md, bench.png."),
):
    """Size, latency and throughput of teacher and student on each backend, interleaved in one run."""
    from .bench import run_bench, write_bench

    models = {name: d for name, d in (("teacher", teacher), ("student", student)) if d is not None}
    if not models:
        _fail(ValueError("give --teacher and/or --student"))
    try:
        seqs = [int(s) for s in seq.split(",") if s.strip()]
        result = run_bench(models, seqs, batch, repeats, backends=backends.split(",") if backends else None,
                           peak_size=peak_size)
    except (ValueError, *_deploy_errors()) as err:
        _fail(err)
    paths = write_bench(result, out)
    table = Table(title=f"distil bench (forward only; speedup vs {result['reference']['model']} "
                        f"{result['reference']['backend']})")
    for col in ("scenario", "model", "backend", "median ms", "p90 ms", "seq/s", "speedup", "% of peak"):
        table.add_column(col, justify="left" if col in ("scenario", "model", "backend") else "right")
    for r in result["results"]:
        table.add_row(r["name"], r["model"], r["backend"], f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}",
                      f"{r['sequences_per_s']:.1f}", f"{r['speedup']:.2f}x", f"{r['percent_of_peak']:.0f}%")
    console.print(table)
    console.print("→ " + ", ".join(str(p) for p in paths.values()))


@app.command()
def predict(
    model_dir: str = typer.Argument(..., help="A task model folder."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to label (default: --file, else stdin)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="One text per line, or JSONL with \"text\" "
                                                                   "and optional \"text_pair\"."),
    fmt: str = typer.Option("auto", "--format", help="auto | lines | jsonl (auto: .jsonl name or a first '{')."),
    backend: str = BackendOpt,
    batch_size: int = typer.Option(32, "--batch-size"),
    max_length: Optional[int] = MaxLengthOpt,
    embedding: bool = typer.Option(False, "--embedding", help="Sentence embeddings, {\"embedding\": [...]} per text "
                                                              "(the default output of an embedding model)."),
):
    """Label texts: JSONL on stdout, {"label", "score"} per text (score: probability of the label);
    an embedding model gives {"embedding": [...]} per text."""
    from .backends import is_pair_model, load_backend
    from .predict import InputError, check_pairs, embed, predict as predict_texts, read_inputs, write_jsonl

    try:
        texts, pairs = read_inputs(texts, file, fmt=fmt)
        model = load_backend(model_dir, backend, max_length)
        if embedding or model.embedding:
            if pairs is not None:
                raise InputError("an embedding model takes single texts: drop \"text_pair\" from the input")
            rows = embed(model, texts, batch_size)
        else:
            check_pairs(is_pair_model(model_dir), pairs, model_dir)
            rows = predict_texts(model, texts, pairs, batch_size)
    except _deploy_errors() as err:
        _fail(err)
    write_jsonl(rows)


@app.command()
def serve(
    model_dir: str = typer.Argument(..., help="A task or embedding model folder (exported: ONNX int8 is used)."),
    host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port"),
    backend: str = BackendOpt, max_length: Optional[int] = MaxLengthOpt,
    max_batch: int = typer.Option(32, "--max-batch", help="Most texts in one model call."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="Longest wait for a batch to fill."),
    sub_batch: int = typer.Option(8, "--sub-batch", help="Texts per model call within a batch, sorted by length."),
    max_texts: int = typer.Option(64, "--max-texts", help="Most texts in one request (413 beyond)."),
    max_chars: int = typer.Option(2000, "--max-chars", help="Most characters in one text (413 beyond)."),
    max_queue: int = typer.Option(1024, "--max-queue", help="Most texts waiting (503 beyond)."),
    timeout_s: float = typer.Option(10.0, "--timeout-s", help="Per-request timeout (504)."),
    max_body_bytes: Optional[int] = typer.Option(None, "--max-body-bytes", help="Request body limit (413; default "
                                                                                "from --max-texts and --max-chars)."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request (costs CPU)."),
):
    """HTTP classifier (POST /v1/classify) or sentence encoder (POST /v1/embed), GET /health, GET /metrics, /docs; micro-batched."""
    from .serve import serve as run_server

    try:
        run_server(model_dir, host, port, backend, max_length, access_log, max_batch=max_batch, max_wait_ms=max_wait_ms,
                   sub_batch=sub_batch, max_texts=max_texts, max_chars=max_chars, max_queue=max_queue, timeout_s=timeout_s,
                   max_body_bytes=max_body_bytes)
    except _deploy_errors() as err:
        _fail(err)


if __name__ == "__main__":  # pragma: no cover
    app()
