"""What every `distil` command shares: the app, the console, the common options, the one handler of user
errors, and the tables commands print. Commands import their stage or deploy module when they run, so
`distil predict` and `distil serve` on an ONNX export never import torch."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, UserError

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if importlib.util.find_spec("torch") is None:  # serving-only install: transformers' "PyTorch was not found" advice
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")  # is expected, not news (a find_spec, no import)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="`distil <stage>`: one command per pipeline stage, and `distil run` for the whole pipeline.")
console = Console()

TeacherOpt = typer.Option(None, "--teacher", "-t", help="Teacher folder or hub id (default: packaged all-MiniLM-L6-v2).")
TaskOpt = typer.Option("sst2", "--task", help="GLUE task: cola sst2 mrpc stsb qqp mnli qnli rte wnli.")
DataOpt = typer.Option(None, "--data", help="glue_data folder (default: ../shared/data/glue when present, else the hub).")
TrainFileOpt = typer.Option(None, "--train", help="Your own labelled CSV/TSV/JSONL training file (with --dev).")
DevFileOpt = typer.Option(None, "--dev", help="Your own labelled dev file, same columns as --train.")
TextColOpt = typer.Option("text", "--text-column")
PairColOpt = typer.Option(None, "--text-pair-column")
LabelColOpt = typer.Option("label", "--label-column")
RegressionOpt = typer.Option(False, "--regression", help="Labels are numbers (regression).")
MultiLabelOpt = typer.Option(False, "--multi-label", help="Tags: the label column holds any number of labels per row, "
                             "joined by --label-separator (an empty cell: no tags); one sigmoid output per tag.")
LabelSepOpt = typer.Option("|", "--label-separator", help="--multi-label: what separates the tags of a label cell.")
PositiveLabelOpt = typer.Option(None, "--positive-label", help="Two labels: the one whose F1 is scored (default: the "
                                "second in sorted order).")
ThresholdOpt = typer.Option(None, "--threshold", help="Multi-label models: answer every label whose probability is "
                            "above it (default 0.5).")
TrainLimitOpt = typer.Option(None, "--train-limit", help="Use only the first N training rows.")
DevLimitOpt = typer.Option(None, "--dev-limit", help="Use only the first N dev rows.")
LayersOpt = typer.Option(None, "--layers", help="alternate (default) | first-k | uniform | explicit list like 0,2,4.")
NumLayersOpt = typer.Option(None, "--num-layers", help="Student depth for first-k/uniform (default: half the teacher).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output folder.")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint.")
SaveStepsOpt = typer.Option(500, "--save-steps", help="Write a checkpoint every N optimizer steps (what --resume "
                                                      "continues from).")
LoggingStepsOpt = typer.Option(50, "--logging-steps", help="Log the loss every N optimizer steps.")
BackendOpt = typer.Option("auto", "--backend", "-b",
                          help="auto (the fastest checked file, as export.json records; else ONNX int8 > ONNX fp32 > "
                               "torch) | torch | torch-bf16 | onnx | onnx-int8 | openvino | openvino-bf16 | "
                               "openvino-int8.")
TrimVocabOpt = typer.Option(False, "--trim-vocab", help="Keep only the special tokens and the tokens (and single "
                             "characters) of the training texts in the student's vocabulary (WordPiece tokenizers).")
VocabSizeOpt = typer.Option(None, "--vocab-size", help="With --trim-vocab: keep at most N tokens, specials and "
                            "single characters first, then the most frequent.")
VocabCorpusOpt = typer.Option(None, "--vocab-corpus", help="With --trim-vocab: more text whose tokens are kept "
                              "(a text file, one sentence per line, a folder of them or a glue_data folder).")
HiddenSizeOpt = typer.Option(None, "--hidden-size", help="A narrower student: keep the teacher's H most important "
                             "hidden dimensions (with --intermediate-size; models/narrow.py).")
IntermediateSizeOpt = typer.Option(None, "--intermediate-size", help="A narrower student: keep each layer's I most "
                                   "important FFN dimensions.")
HeadsOpt = typer.Option(None, "--heads", help="With --hidden-size: keep each layer's A most important attention heads "
                        "(default: all, each narrowed).")
ScoreRowsOpt = typer.Option(512, "--score-rows", help="With --hidden-size: score the kept dimensions by their "
                             "activations on N training rows (Wanda-style; 0: by weight magnitude).")
SizeOpt = typer.Option(True, "--size/--no-size", help="Export teacher and student to ONNX (fp32, int8) and report "
                       "their parameters, file sizes and the peak RSS of serving one request with the int8 file.")
MaxLengthOpt = typer.Option(None, "--max-length", help="Truncate to N tokens (default: the training length, else 128).")


def fail(err: Exception) -> None:
    """Print a one-line error and exit with status 2."""
    console.print("[red]error:[/]", end=" ")
    console.print(str(err), markup=False, soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def command(*args, **kwargs):
    """`app.command`, with the one handler of user errors: any `UserError` exits 2 with its one-line message."""
    def register(fn):
        @functools.wraps(fn)
        def run(*a, **k):
            try:
                return fn(*a, **k)
            except UserError as err:
                fail(err)
        return app.command(*args, **kwargs)(run)
    return register


def check_threshold_option(threshold: Optional[float]) -> None:
    """--threshold is a probability (checked before any model is loaded)."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold {threshold}: expected a probability between 0 and 1")


def int_list(value: str, option: str) -> list[int]:
    """Comma-separated whole numbers ("1,2,3") of an option, or a ConfigError naming the option."""
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{option} {value!r}: expected comma-separated whole numbers, like 1,2,3") from None


def vocab_trim(trim_vocab: bool, vocab_size: Optional[int], vocab_corpus: Optional[Path]):
    """--trim-vocab's settings (None: off); --vocab-size or --vocab-corpus alone is an error."""
    if not trim_vocab:
        if vocab_size is not None or vocab_corpus is not None:
            raise ConfigError("--vocab-size and --vocab-corpus go with --trim-vocab")
        return None
    from ..models.vocab import VocabTrim

    return VocabTrim(corpus=str(vocab_corpus) if vocab_corpus else None, size=vocab_size)


def student_width(hidden_size: Optional[int], intermediate_size: Optional[int], heads: Optional[int],
                  score_rows: int = 0):
    """--hidden-size/--intermediate-size/--heads/--score-rows as a narrow.Width (None: the teacher's width)."""
    if (hidden_size is None) != (intermediate_size is None):
        raise ConfigError("--hidden-size and --intermediate-size go together")
    if hidden_size is None:
        if heads is not None:
            raise ConfigError("--heads goes with --hidden-size and --intermediate-size")
        return None
    from ..models.narrow import Width

    return Width(hidden_size, intermediate_size, heads, score_rows)


def parse_width(value: str):
    """One --widths item, HxI or HxIxA (hidden size x FFN size x heads), as a narrow.Width."""
    parts = value.strip().lower().split("x")
    if len(parts) not in (2, 3) or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"--widths {value.strip()!r}: expected HxI or HxIxA, like 256x1024 or 256x1024x8")
    return student_width(int(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else None)


def teacher_path(teacher: Optional[str]) -> str:
    """The teacher folder or hub id (None: the packaged all-MiniLM-L6-v2)."""
    from ..models.folders import resolve_model

    return resolve_model(teacher)


def cache_root() -> Path:
    """Where teacher outputs are cached by default: $XDG_CACHE_HOME/distilkit or ~/.cache/distilkit."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "distilkit"


def print_params(parameters: dict) -> None:
    table = Table(title="parameters")
    for col in ("model", "total", "embedding", "non-embedding"):
        table.add_column(col, justify="right" if col != "model" else "left")
    for name, p in parameters.items():
        table.add_row(name, f"{p['total']:,}", f"{p['embedding']:,}", f"{p['non_embedding']:,}")
    console.print(table)


def print_metrics(title: str, models: dict) -> None:
    """One row per model, one column per metric (in %)."""
    table = Table(title=title)
    names = [k for k in next(iter(models.values())) if k != "parameters"]
    table.add_column("model")
    for n in names:
        table.add_column(n, justify="right")
    for model, m in models.items():
        table.add_row(model, *(f"{m[n] * 100:.2f}" for n in names))
    console.print(table)
