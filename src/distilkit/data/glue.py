"""The nine GLUE tasks: where their files are, which columns hold what, how they are scored."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DataError
from .files import parse_float, make_dataset, read_tsv_lines

if TYPE_CHECKING:
    import datasets


@dataclass(frozen=True)
class TaskSpec:
    """One GLUE task: its glue_data TSV layout, its labels, its metrics and its hub name."""
    name: str                        # "cola", "sst2", ...
    folder: str                      # glue_data folder: "CoLA", "SST-2", ...
    text_column: str                 # TSV header name
    text_pair_column: str | None
    label_column: str
    labels: tuple[str, ...] | None   # label strings as in the TSV; id = index; None = regression
    metrics: tuple[str, ...]
    hub_name: str                    # config of datasets.load_dataset("nyu-mll/glue", hub_name)
    hub_text_field: str
    hub_text_pair_field: str | None
    dev_splits: tuple[str, ...] = ("dev",)
    columns: tuple[str, ...] | None = None  # names for the columns of header-less train/dev files (CoLA)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def test_splits(self) -> tuple[str, ...]:
        return tuple(s.replace("dev", "test") for s in self.dev_splits)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train",) + self.dev_splits + self.test_splits


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("cola", "CoLA", "sentence", None, "label", _BINARY, ("mcc",), "cola", "sentence", None,
             columns=("source", "label", "original_label", "sentence")),
    TaskSpec("sst2", "SST-2", "sentence", None, "label", _BINARY, ("accuracy",), "sst2", "sentence", None),
    TaskSpec("mrpc", "MRPC", "#1 String", "#2 String", "Quality", _BINARY, ("f1", "accuracy"),
             "mrpc", "sentence1", "sentence2"),
    TaskSpec("stsb", "STS-B", "sentence1", "sentence2", "score", None, ("pearson", "spearman"),
             "stsb", "sentence1", "sentence2"),
    TaskSpec("qqp", "QQP", "question1", "question2", "is_duplicate", _BINARY, ("accuracy", "f1"),
             "qqp", "question1", "question2"),
    TaskSpec("mnli", "MNLI", "sentence1", "sentence2", "gold_label", ("entailment", "neutral", "contradiction"),
             ("accuracy",), "mnli", "premise", "hypothesis", dev_splits=("dev_matched", "dev_mismatched")),
    TaskSpec("qnli", "QNLI", "question", "sentence", "label", _NLI2, ("accuracy",), "qnli", "question", "sentence"),
    TaskSpec("rte", "RTE", "sentence1", "sentence2", "label", _NLI2, ("accuracy",), "rte", "sentence1", "sentence2"),
    TaskSpec("wnli", "WNLI", "sentence1", "sentence2", "label", _BINARY, ("accuracy",), "wnli", "sentence1", "sentence2"),
]}

PAPER_ORDER = sorted(GLUE_TASKS, key=lambda t: GLUE_TASKS[t].folder.lower())  # the GLUE paper's column order
METRIC_LABELS = {"accuracy": "acc", "f1": "F1", "mcc": "MCC", "pearson": "P", "spearman": "S"}  # table headers


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_task(name: str) -> TaskSpec:
    """Look a task up by name or folder, in any case and with or without dashes ("SST-2", "sts-b")."""
    task = GLUE_TASKS.get(_key(name))
    if task is None:
        raise DataError(f"unknown GLUE task {name!r}; known tasks: {', '.join(GLUE_TASKS)}")
    return task


def default_glue_dir() -> Path | None:
    """$DISTILKIT_GLUE_DIR if it exists, else ../shared/data/glue (from the working directory), else None."""
    env = os.environ.get("DISTILKIT_GLUE_DIR")
    for candidate in ([Path(env)] if env else []) + [Path.cwd() / ".." / "shared" / "data" / "glue"]:
        if candidate.is_dir():
            return candidate.resolve()
    return None


def load_glue_split(task: TaskSpec | str, split: str, data_dir: str | Path | None,
                    limit: int | None = None) -> datasets.Dataset:
    """Load one split as a Dataset with columns text, [text_pair,] label.

    From data_dir/<folder>/<split>.tsv (original glue_data layout), or from the
    hub (nyu-mll/glue) when data_dir is None. Test splits have no labels: label -1.
    """
    task = get_task(task) if isinstance(task, str) else task
    if split not in task.splits:
        raise DataError(f"{task.name}: unknown split {split!r}; expected one of {', '.join(task.splits)}")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    if data_dir is None:
        return _load_from_hub(task, split, limit)

    path = Path(data_dir) / task.folder / f"{split}.tsv"
    if not path.is_file():
        raise DataError(f"{task.name} {split}: file not found, expected {path}")
    lines = read_tsv_lines(path)
    is_test = split.startswith("test")
    if task.columns and not is_test:
        header = list(task.columns)
    else:
        first = next(lines, None)
        if first is None:
            raise DataError(f"{path}: empty file, expected a header line and data rows")
        header = first[1]
    wanted = [c for c in (task.text_column, task.text_pair_column) if c is not None]
    has_labels = task.label_column in header
    if has_labels or not is_test:
        wanted.append(task.label_column)
    for col in wanted:
        if col not in header:
            raise DataError(f"{path}, line 1: no column {col!r} in the header; columns found: {', '.join(header)}")
    pos = {col: header.index(col) for col in wanted}

    texts, pairs, labels = [], [], []
    for lineno, fields in lines:
        for col in wanted:
            if pos[col] >= len(fields):
                raise DataError(f"{path}, line {lineno}: missing column {col!r} (field {pos[col] + 1}); "
                                f"expected {len(header)} tab-separated fields, found {len(fields)}")
        texts.append(fields[pos[task.text_column]])
        if task.text_pair_column:
            pairs.append(fields[pos[task.text_pair_column]])
        labels.append(_parse_label(task, path, lineno, fields[pos[task.label_column]]) if has_labels else -1)
        if limit is not None and len(texts) >= limit:
            break
    if not texts:
        raise DataError(f"{path}: no data rows (file is empty or has only a header)")
    return make_dataset(texts, pairs if task.text_pair_column else None, labels, _label_feature(task))


def _parse_label(task, path, lineno, value):
    """Label id (classification) or float score (regression) of one TSV field."""
    value = value.strip()
    if task.is_regression:
        return parse_float(path, lineno, task.label_column, value)
    if value not in task.labels:
        raise DataError(f"{path}, line {lineno}, field {task.label_column!r}: label {value!r} "
                        f"is not one of {list(task.labels)}")
    return task.labels.index(value)


def _label_feature(task):
    import datasets

    return datasets.Value("float32") if task.is_regression else datasets.ClassLabel(names=list(task.labels))


def _load_from_hub(task, split, limit):
    """The same split from datasets.load_dataset("nyu-mll/glue", ...), renamed to text/text_pair/label."""
    import datasets

    hub_split = split.replace("dev", "validation")
    if limit is not None:
        hub_split += f"[:{limit}]"
    ds = datasets.load_dataset("nyu-mll/glue", task.hub_name, split=hub_split)
    rename = {task.hub_text_field: "text"}
    if task.hub_text_pair_field:
        rename[task.hub_text_pair_field] = "text_pair"
    ds = ds.select_columns(list(rename) + ["label"]).rename_columns(rename)
    features = {"text": datasets.Value("string")}
    if task.hub_text_pair_field:
        features["text_pair"] = datasets.Value("string")
    features["label"] = _label_feature(task)
    return ds.cast(datasets.Features(features))  # hub label order equals ours; only names differ
