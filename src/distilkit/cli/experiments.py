"""Experiment commands: eval, run, glue, sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import (DataOpt, DevFileOpt, DevLimitOpt, LabelColOpt, LabelSepOpt, LayersOpt, LoggingStepsOpt,
                     PositiveLabelOpt, MultiLabelOpt, NumLayersOpt, OverwriteOpt, PairColOpt, RegressionOpt,
                     ResumeOpt, SaveStepsOpt,
                     TaskOpt, TeacherOpt, TextColOpt, TrainFileOpt, TrainLimitOpt, command, console, int_list,
                     print_metrics, teacher_path, TrimVocabOpt, VocabCorpusOpt, VocabSizeOpt, vocab_trim,
                     HeadsOpt, HiddenSizeOpt, ScoreRowsOpt, IntermediateSizeOpt, SizeOpt, parse_width, student_width)

# The recipe `distil run` uses by default (benchmarks/kd_vs_baseline.py measures it): the best measured that fits
# the whole run in 20 minutes on 2 CPU cores (docs/experiments.md, "A default recipe that pays").
RUN_RECIPE = {"train_limit": 20000, "teacher_epochs": 2.0, "teacher_lr": 5e-5, "epochs": 2.0, "lr": 5e-5,
              "alpha": 0.5, "temperature": 2.0, "augment": 1}


@command("eval")
def eval_cmd(
    model_dir: str = typer.Argument(..., help="A task model folder."),
    task: Optional[str] = typer.Option(None, "--task", help="GLUE task to score on (default: what the model's "
                                                            "distil.json records: its own dev file or GLUE task)."),
    data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt,
    dev: Optional[Path] = DevFileOpt, text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt,
    label_column: str = LabelColOpt,
    regression: bool = typer.Option(False, "--regression", help="Not needed: the model's config says whether it is a "
                                                                "regressor."),
    dev_limit: Optional[int] = DevLimitOpt,
    multi_label: bool = MultiLabelOpt, label_separator: str = LabelSepOpt,
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
    from ..artifacts import write_json
    from ..data.errors import DataError
    from ..data.task import check_label_options
    from ..models.folders import check_model_dir, supported_config
    from ..stages.evaluate import checking_data, embedding_evaluation, evaluate_folder

    if embedding:
        result = embedding_evaluation(model_dir, teacher_path(teacher) if teacher else None, compare or [], retrieval,
                                      sts, data, backend)
        path = write_json(out or Path(model_dir) / "embedding_metrics.json", result)
        _print_embedding_table(result)
        console.print(f"→ {path}")
        return
    check_model_dir(Path(model_dir))
    supported_config(model_dir)
    check_label_options(multi_label, regression, label_separator)
    if train is not None and dev is None:
        raise DataError("--train needs --dev: eval scores on the dev file (with the model's own label names)")
    d = checking_data(model_dir, task, data, dev, text_column, text_pair_column, label_column, dev_limit,
                      label_separator=label_separator)
    metrics = evaluate_folder(model_dir, d, max_length)
    path = out or Path(model_dir) / "metrics.json"
    write_json(path, {"model": model_dir, "task": d.name, "data": d.source, "metrics": metrics,
                      **({"f1_label": d.f1_label} if d.f1_label else {})})
    print_metrics(f"{d.name} dev", {Path(model_dir).name: metrics})
    if d.f1_label:
        console.print(f"f1: of the label `{d.f1_label}` (the model's label id 1)")
    console.print(f"→ {path}")


def _print_embedding_table(result: dict) -> None:
    from ..stages.evaluate import embedding_scores

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


@command()
def run(
    teacher: Optional[str] = TeacherOpt,
    out: Path = typer.Option(Path("runs/sst2"), "--out", "-o"),
    task: str = TaskOpt, data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt,
    dev: Optional[Path] = DevFileOpt, text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt,
    label_column: str = LabelColOpt, regression: bool = RegressionOpt,
    multi_label: bool = MultiLabelOpt, label_separator: str = LabelSepOpt,
    positive_label: Optional[str] = PositiveLabelOpt,
    train_limit: Optional[int] = typer.Option(RUN_RECIPE["train_limit"], "--train-limit",
                                              help="Training rows used (0: all). The default keeps the run under 20 min."),
    dev_limit: Optional[int] = DevLimitOpt,
    layers: Optional[str] = LayersOpt, num_layers: Optional[int] = NumLayersOpt,
    teacher_epochs: float = RUN_RECIPE["teacher_epochs"], teacher_lr: float = RUN_RECIPE["teacher_lr"],
    epochs: float = typer.Option(RUN_RECIPE["epochs"], help="Epochs of the student (and of the baseline)."),
    lr: float = RUN_RECIPE["lr"], batch_size: int = 32, max_length: int = 128, seed: int = 42,
    alpha: float = RUN_RECIPE["alpha"], temperature: float = RUN_RECIPE["temperature"], cls_weight: float = 0.0,
    augment: int = typer.Option(RUN_RECIPE["augment"], help="Perturbed copies of each training row that only the "
                                "teacher labels, for the student (0: off; the baseline never sees them)."),
    hidden_weight: float = typer.Option(0.0, help="Weight of the intermediate-layer hidden-state MSE (through learned "
                                        "projections for a narrower student; runs the teacher online; 0: off)."),
    trim_vocab: bool = TrimVocabOpt, vocab_size: Optional[int] = VocabSizeOpt,
    vocab_corpus: Optional[Path] = VocabCorpusOpt,
    hidden_size: Optional[int] = HiddenSizeOpt, intermediate_size: Optional[int] = IntermediateSizeOpt,
    heads: Optional[int] = HeadsOpt, score_rows: int = ScoreRowsOpt,
    size: bool = SizeOpt,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
    save_steps: int = SaveStepsOpt, logging_steps: int = LoggingStepsOpt,
    overwrite: bool = OverwriteOpt, resume: bool = ResumeOpt,
):
    """The whole pipeline: fine-tune teacher → student → distil → baseline → evaluate → report."""
    from ..artifacts import check_output
    from ..data.task import load_task_data
    from ..experiments.run import run_pipeline
    from ..train.common import TrainConfig
    from ..train.task import DistillConfig

    dcfg = DistillConfig(alpha=alpha, temperature=temperature, cls_weight=cls_weight, augment=augment,
                         hidden_weight=hidden_weight)
    trim = vocab_trim(trim_vocab, vocab_size, vocab_corpus)
    width = student_width(hidden_size, intermediate_size, heads, score_rows)
    if not resume:
        check_output(out, overwrite)
    d = load_task_data(task=task, data_dir=data, train_file=train, dev_file=dev, text_column=text_column,
                       text_pair_column=text_pair_column, label_column=label_column, regression=regression,
                       train_limit=train_limit or None, dev_limit=dev_limit, multi_label=multi_label,
                       label_separator=label_separator, positive_label=positive_label)
    shared = {"batch_size": batch_size, "max_length": max_length, "seed": seed, "bf16": bf16, "save_steps": save_steps,
              "logging_steps": logging_steps}
    metrics = run_pipeline(teacher_path(teacher), d, out, TrainConfig(epochs=teacher_epochs, learning_rate=teacher_lr, **shared),
                           TrainConfig(epochs=epochs, learning_rate=lr, **shared), dcfg, layers=layers,
                           num_layers=num_layers, overwrite=overwrite, resume=resume, trim=trim, width=width,
                           size=size)
    print_metrics(f"{d.name} dev", {k: v for k, v in metrics["models"].items()})
    console.print(f"retention {metrics['retention'] * 100:.1f}% (baseline {metrics['baseline_retention'] * 100:.1f}%)")
    console.print(json.dumps(metrics["train_seconds"]))
    for name, s in metrics.get("size", {}).items():
        console.print(f"{name}: {s['parameters']['total'] / 1e6:.2f}M parameters "
                      f"({s['parameters']['embedding'] / 1e6:.2f}M embedding), ONNX fp32 {s['fp32_mb']:.1f} MB, "
                      f"int8 {s['int8_mb']:.1f} MB, int8 serving peak RSS {s['int8_peak_rss_mb']:.0f} MB")


@command()
def glue(
    tasks: str = typer.Option("sst2,mrpc,stsb,cola", "--tasks", help="Comma-separated GLUE tasks."),
    out: Path = typer.Option(Path("runs/glue"), "--out", "-o"),
    teacher: Optional[str] = TeacherOpt, data: Optional[Path] = DataOpt,
    seeds: str = typer.Option("42", "--seeds", help="Comma-separated seeds; each repeats every stage."),
    layers: Optional[str] = LayersOpt, num_layers: Optional[int] = NumLayersOpt,
    train_limit: Optional[str] = typer.Option(None, help="Training rows per task, 0 = all (default sst2=20000, others all)."),
    teacher_epochs: Optional[str] = typer.Option(None, help="Teacher epochs: 3 or 3,sst2=1 (default: suite.DEFAULTS)."),
    teacher_lr: Optional[str] = typer.Option(None, help="Teacher learning rate, same syntax (default: suite.DEFAULTS)."),
    epochs: Optional[str] = typer.Option(None, help="Student (and baseline) epochs, same syntax (default: suite.DEFAULTS)."),
    lr: Optional[str] = typer.Option(None, help="Student learning rate, same syntax (default: suite.DEFAULTS)."),
    alpha: Optional[str] = typer.Option(None, help="Soft-target weight, same syntax (default 0.5)."),
    temperature: Optional[str] = typer.Option(None, help="Soft-target temperature, same syntax (default 2)."),
    cls_weight: Optional[str] = typer.Option(None, help="[CLS] cosine weight, same syntax (default 0)."),
    augment: Optional[str] = typer.Option(None, help="Perturbed teacher-labelled copies per training row, same "
                                          "syntax (default: suite.DEFAULTS)."),
    hidden_weight: Optional[str] = typer.Option(None, help="Intermediate-layer hidden-state MSE weight, same syntax "
                                                "(default: suite.DEFAULTS)."),
    augment_neighbours: Optional[str] = typer.Option(None, help="Teacher-embedding neighbours a perturbed copy's "
                                                     "replaced word is drawn from, same syntax (default: suite.DEFAULTS)."),
    attention_weight: Optional[str] = typer.Option(None, help="Per-layer attention KL weight, same syntax "
                                                   "(default: suite.DEFAULTS)."),
    unlabeled: Optional[str] = typer.Option(None, help="Extra student inputs only the teacher labels, per task: "
                                            "test (the task's test splits) or a file, e.g. stsb=test,cola=test."),
    mined_pairs: Optional[str] = typer.Option(None, help="New teacher-labelled pairs per training row from the task's "
                                              "own sentences (pair tasks), same syntax (default: suite.DEFAULTS)."),
    batch_size: int = 32, max_length: int = 128, dev_limit: Optional[int] = DevLimitOpt,
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also train the hard-label baseline."),
    compare: list[str] = typer.Option([], "--compare", help="NAME=PATH (or PATH) of another model to fine-tune and "
                                      "score in the same table; repeatable."),
    sweep_depths: Optional[str] = typer.Option(None, help="Also sweep student depths (e.g. 1,2,3,4) on --sweep-task."),
    sweep_task: str = typer.Option("sst2", help="Task of the depth/precision sweep."),
    sweep_precisions: str = typer.Option("fp32,int8", help="Precisions of the sweep: fp32, int8."),
    trim_vocab: bool = TrimVocabOpt, vocab_size: Optional[int] = VocabSizeOpt,
    vocab_corpus: Optional[Path] = VocabCorpusOpt,
    hidden_size: Optional[int] = HiddenSizeOpt, intermediate_size: Optional[int] = IntermediateSizeOpt,
    heads: Optional[int] = HeadsOpt, size: bool = SizeOpt,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete OUT and start afresh (default: resume it)."),
):
    """GLUE suite: teacher, student and baseline on each task and seed, the paper's table, model cards.

    Running the same command again resumes: finished stages are reused when their configuration matches."""
    from ..data.glue import get_task
    from ..experiments.suite import build_recipes, run_glue

    trim = vocab_trim(trim_vocab, vocab_size, vocab_corpus)
    width = student_width(hidden_size, intermediate_size, heads)
    task_list = [get_task(t.strip()).name for t in tasks.split(",") if t.strip()]
    recipes = build_recipes(task_list, {
        "train_limit": train_limit, "teacher_epochs": teacher_epochs, "teacher_lr": teacher_lr, "epochs": epochs,
        "lr": lr, "alpha": alpha, "temperature": temperature, "cls_weight": cls_weight, "augment": augment,
        "hidden_weight": hidden_weight, "augment_neighbours": augment_neighbours,
        "attention_weight": attention_weight, "unlabeled": unlabeled, "mined_pairs": mined_pairs},
        batch_size, max_length, bf16)
    seed_list = int_list(seeds, "--seeds")
    others = {}
    for item in compare:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (Path(item.rstrip("/")).name, item)
        others[name.strip()] = teacher_path(path.strip())  # a folder (checked) or a hub id
    result = run_glue(teacher_path(teacher), task_list, out, recipes, data_dir=data, seeds=seed_list, layers=layers,
                      num_layers=num_layers, baseline=baseline, compare=others, dev_limit=dev_limit,
                      sweep_depths=int_list(sweep_depths, "--sweep-depths") if sweep_depths else None,
                      sweep_task=sweep_task,
                      sweep_precisions=[p.strip() for p in sweep_precisions.split(",") if p.strip()],
                      overwrite=overwrite, trim=trim, width=width, size=size)
    console.print((out / "glue.md").read_text())
    console.print(f"macro retention {result['macro_retention'] * 100:.1f}%")


@command()
def sweep(
    teacher: str = typer.Option(..., "--teacher", "-t", help="Teacher fine-tuned on the task (distil finetune)."),
    out: Path = typer.Option(..., "--out", "-o"),
    depths: str = typer.Option("1,2,3,4", help="Student depths (layers picked by the alternate rule)."),
    precisions: str = typer.Option("fp32,int8", help="fp32 (torch) and/or int8 (ONNX Runtime, checked on dev)."),
    task: Optional[str] = typer.Option(None, "--task", help="GLUE task (default: the data the teacher was fine-tuned "
                                                            "on, as its distil.json records, else sst2)."),
    data: Optional[Path] = DataOpt, train: Optional[Path] = TrainFileOpt, dev: Optional[Path] = DevFileOpt,
    text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt, label_column: str = LabelColOpt,
    train_limit: Optional[int] = TrainLimitOpt, dev_limit: Optional[int] = DevLimitOpt,
    epochs: float = 1.0, batch_size: int = 32, lr: float = 5e-5, max_length: int = 128, seed: int = 42,
    alpha: float = 0.5, temperature: float = 2.0,
    seq: int = typer.Option(128, help="Sequence length of the latency timing."),
    repeats: int = typer.Option(10, help="Timed calls per block of the latency timing (3 blocks per model)."),
    tolerance: float = typer.Option(1.0, help="Largest int8 dev-score drop (points) accepted."),
    widths: Optional[str] = typer.Option(None, help="Also narrower students at the default depth: HxI or HxIxA "
                                         "(hidden size x FFN size x heads), comma-separated, e.g. 256x1024x8."),
    trim_vocab: bool = typer.Option(False, "--trim-vocab", help="Also a student with a trimmed vocabulary, at the "
                                    "default depth (see distil task --trim-vocab)."),
    vocab_size: Optional[int] = VocabSizeOpt, vocab_corpus: Optional[Path] = VocabCorpusOpt,
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16"),
):
    """Students of several depths (and widths, and a trimmed vocabulary), fp32 and int8: score against latency
    and size, Pareto frontier and plot.

    Running it again reuses finished depths and exports."""
    from ..experiments.sweep import check_sweep, run_sweep
    from ..stages.task import training_data
    from ..train.common import TrainConfig
    from ..train.task import DistillConfig

    dcfg = DistillConfig(alpha=alpha, temperature=temperature)
    teacher_dir, depth_list = teacher_path(teacher), int_list(depths, "--depths")
    precision_list = tuple(p.strip() for p in precisions.split(",") if p.strip())
    check_sweep(teacher_dir, depth_list, precision_list)
    width_list = [parse_width(w) for w in (widths or "").split(",") if w.strip()]
    trim = vocab_trim(trim_vocab, vocab_size, vocab_corpus)
    d = training_data(teacher_dir, task=task, data_dir=data, train_file=train, dev_file=dev,
                      text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                      train_limit=train_limit, dev_limit=dev_limit)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, max_length=max_length, seed=seed, bf16=bf16)
    result = run_sweep(teacher_dir, d, depth_list, out, cfg, dcfg, out / "cache", precisions=precision_list, seq=seq,
                       repeats=repeats, tolerance=tolerance, widths=width_list, trim=trim)
    console.print((out / "sweep.md").read_text())
    console.print(f"frontier (latency): {', '.join(p['model'] + ' ' + p['precision'] for p in result['frontier']['latency'])}")
