"""One task's data, whatever its source: a GLUE task (local glue_data or hub) or the user's files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets

from ..errors import ConfigError
from ..metrics import MULTI_LABEL_METRICS
from .augment import no_label
from .errors import DataError
from .files import load_table, load_texts
from .glue import default_glue_dir, get_task, load_glue_split

# Readable names for GLUE's 0/1 labels (written into the model config, shown by predict/serve).
DISPLAY_LABELS = {
    "sst2": ["negative", "positive"],
    "cola": ["unacceptable", "acceptable"],
    "mrpc": ["not_equivalent", "equivalent"],
    "qqp": ["not_duplicate", "duplicate"],
    "wnli": ["not_entailment", "entailment"],
}


@dataclass
class TaskData:
    """Train and dev splits (columns text, [text_pair,] label) with how the task is scored.

    Multi-label tasks (`multi_label`): each label is a list of 0/1 floats, one per name of `label_names`
    (the tags); a row without gold (an augmented copy, an unlabelled input) has NaN in every place."""

    name: str
    train: datasets.Dataset
    dev: dict[str, datasets.Dataset]
    metrics: tuple[str, ...]
    label_names: list[str] | None  # None: regression
    source: dict = field(default_factory=dict)
    unlabeled: datasets.Dataset | None = None  # inputs without gold labels (label -1 / NaN): the teacher labels them
    unlabeled_from: str | None = None  # "test" or the file they came from
    multi_label: bool = False  # tags: any number of labels per row, one sigmoid output each

    @property
    def regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.regression else len(self.label_names)

    @property
    def distillation_source(self) -> dict:
        """`source` plus where the unlabelled inputs came from (as a distilled student's distil.json records it)."""
        return self.source | ({"unlabeled": self.unlabeled_from} if self.unlabeled is not None else {})

    @property
    def is_pair(self) -> bool:
        return "text_pair" in self.train.column_names

    @property
    def f1_label(self) -> str | None:
        """The label F1 scores (label id 1) on the user's own files of two labels; None for GLUE tasks (their
        official metric says) and tasks without F1."""
        return self.label_names[1] if "f1" in self.metrics and "glue_task" not in self.source else None


def check_label_options(multi_label: bool, regression: bool, label_separator: str, own_files: bool = True,
                        positive_label: str | None = None) -> None:
    """Refuse label options that exclude each other, naming them."""
    if positive_label is not None and (multi_label or regression or not own_files):
        raise ConfigError("--positive-label is for your own --train/--dev files with two labels, not with "
                          "--multi-label, --regression or a GLUE task (GLUE defines its positive class)")
    if multi_label and regression:
        raise ConfigError("--multi-label and --regression exclude each other: tags are classes, not numbers")
    if multi_label and not own_files:
        raise ConfigError("--multi-label needs your own --train and --dev files (the GLUE tasks have one label per row)")
    if multi_label and not label_separator:
        raise ConfigError("--label-separator must not be empty")


def load_task_data(
    task: str | None = "sst2",
    data_dir: str | Path | None = None,
    train_file: str | Path | None = None,
    dev_file: str | Path | None = None,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    regression: bool = False,
    train_limit: int | None = None,
    dev_limit: int | None = None,
    unlabeled: str | Path | None = None,
    multi_label: bool = False,
    label_separator: str = "|",
    positive_label: str | None = None,
) -> TaskData:
    """Load a GLUE task (from `data_dir`, else ../shared/data/glue when present, else the hub)
    or, when `train_file` is given, the user's own CSV/TSV/JSONL train and dev files.

    `unlabeled`: extra inputs for task distillation, which only the teacher labels: "test" (a GLUE
    task's test splits, whose labels are hidden) or a CSV/TSV/JSONL file with the training text columns.

    `multi_label` (the user's files only): the label column holds tags joined by `label_separator`, any number
    per row, an empty cell meaning none; the label names are the sorted tags of the training file.

    `positive_label` (the user's files, two labels): the label whose F1 is scored, made label id 1; by default
    the second of the two in sorted order."""
    check_label_options(multi_label, regression, label_separator, own_files=train_file is not None,
                        positive_label=positive_label)
    data = _load_labelled(task, data_dir, train_file, dev_file, text_column, text_pair_column, label_column,
                          regression, train_limit, dev_limit, multi_label, label_separator, positive_label)
    if unlabeled is not None:
        data.unlabeled = _load_unlabeled(str(unlabeled), data, text_column, text_pair_column)
        data.unlabeled_from = str(unlabeled)
    return data


def _load_unlabeled(source: str, data: TaskData, text_column: str, text_pair_column: str | None) -> datasets.Dataset:
    """The unlabelled inputs with the training set's columns and features; label -1 (a class) or NaN (a score)."""
    if source == "test":
        task = data.source.get("glue_task")
        if task is None:
            raise DataError("--unlabeled test: only GLUE tasks have test splits here; give a file of texts instead")
        data_dir = data.source["data_dir"]
        spec = get_task(task)
        ds = datasets.concatenate_datasets([
            load_glue_split(spec, split, None if data_dir.startswith("hub:") else data_dir).remove_columns("label")
            for split in spec.test_splits])
    else:
        if data.source.get("glue_task"):
            spec = get_task(data.source["glue_task"])
            text_column, text_pair_column = spec.text_column, spec.text_pair_column
        ds = load_texts(source, text_column, text_pair_column)
        if data.is_pair != ("text_pair" in ds.column_names):
            raise DataError(f"{source}: the training data {'has' if data.is_pair else 'has no'} text pairs, "
                            f"so the unlabelled file needs {'both' if data.is_pair else 'only'} the text column"
                            f"{'s' if data.is_pair else ''} of the training data")
    return ds.add_column("label", [no_label(data.train.features)] * len(ds)).cast(data.train.features)


def _file_metrics(regression: bool, multi_label: bool, labels: list[str] | None) -> tuple[str, ...]:
    """How a task on the user's own files is scored."""
    if multi_label:
        return MULTI_LABEL_METRICS
    if regression:
        return ("pearson", "spearman")
    return ("accuracy", "f1") if len(labels) == 2 else ("accuracy",)


def _load_labelled(task, data_dir, train_file, dev_file, text_column, text_pair_column, label_column, regression,
                   train_limit, dev_limit, multi_label=False, label_separator="|", positive_label=None) -> TaskData:
    if train_file is not None:
        if dev_file is None:
            raise DataError("--train needs --dev: a labelled file to evaluate on")
        tags = {"multi_label": multi_label, "label_separator": label_separator}
        train, labels = load_table(train_file, text_column, label_column, text_pair_column, regression, None, train_limit,
                                   **tags)
        if positive_label is not None:
            if len(labels) != 2 or positive_label not in labels:
                raise DataError(f"--positive-label {positive_label!r}: expected one of the two labels of {train_file}, "
                                f"which has {labels}")
            if labels[1] != positive_label:  # the positive class is label id 1 (what F1 scores)
                labels = [labels[1], labels[0]]
                train, _ = load_table(train_file, text_column, label_column, text_pair_column, False, labels,
                                      train_limit)
        dev, _ = load_table(dev_file, text_column, label_column, text_pair_column, regression, labels, dev_limit, **tags)
        metrics = _file_metrics(regression, multi_label, labels)
        name = Path(train_file).stem if task in (None, "sst2") else task
        source = {"train_file": str(train_file), "dev_file": str(dev_file), "text_column": text_column,
                  **({"text_pair_column": text_pair_column} if text_pair_column else {}),
                  "label_column": label_column, **({"regression": True} if regression else {}),
                  **({"multi_label": True, "label_separator": label_separator} if multi_label else {}),
                  **({"positive_label": positive_label} if positive_label is not None else {})}
        return TaskData(name, train, {"dev": dev}, metrics, labels, source, multi_label=multi_label)

    spec = get_task(task or "sst2")
    if data_dir is None:
        data_dir = default_glue_dir()
    train = load_glue_split(spec, "train", data_dir, train_limit)
    dev = {split: load_glue_split(spec, split, data_dir, dev_limit) for split in spec.dev_splits}
    labels = None if spec.is_regression else DISPLAY_LABELS.get(spec.name, list(spec.labels))
    source = {"glue_task": spec.name, "data_dir": str(data_dir) if data_dir else "hub:nyu-mll/glue"}
    return TaskData(spec.name, train, dev, spec.metrics, labels, source)


def recorded_dev_data(name: str, source: dict, label_names: list[str] | None, dev_limit: int | None = None) -> TaskData:
    """The dev split of the user's own files a model was trained on, as its distil.json's `data` records them
    (file and columns), labelled with the model's own label names (`label_names`; None: regression).
    Only `dev` holds rows: this is for checking a trained model, not for training one."""
    missing = [key for key in ("dev_file", "text_column", "label_column") if key not in source]
    if missing:
        raise DataError(f"the model's distil.json records no {', '.join(missing)} of its training files: "
                        "give --task (a GLUE task) to check on")
    regression = bool(source.get("regression")) or label_names is None
    multi_label = bool(source.get("multi_label")) and not regression
    dev, _ = load_table(source["dev_file"], source["text_column"], source["label_column"],
                        source.get("text_pair_column"), regression, label_names, dev_limit, multi_label=multi_label,
                        label_separator=source.get("label_separator", "|"))
    metrics = _file_metrics(regression, multi_label, label_names)
    return TaskData(name, dev.select([]), {"dev": dev}, metrics, None if regression else list(label_names), source,
                    multi_label=multi_label)
