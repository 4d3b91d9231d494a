"""Load the user's own CSV / TSV / JSONL file (with a header) into a Dataset: labelled, or texts only."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DataError

if TYPE_CHECKING:
    import datasets

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}


def read_tsv_lines(path):
    """Yield (line_number, fields) for each non-blank line of a tab-separated file.

    No quoting: quote characters are literal text. A UTF-8 BOM and a trailing
    "\\r" are stripped. Line numbers are 1-based, as in an editor.
    """
    with open(path, encoding="utf-8-sig", newline="\n") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if line:
                yield lineno, line.split("\t")


def _read_rows(path, fmt):
    """Yield (line_number, header, row_dict) for each data row; header is the column list."""
    if fmt == "jsonl":
        with open(path, encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {lineno}: invalid JSON ({e.msg} at column {e.colno}); "
                                    "expected one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, list(obj), obj
        return
    if fmt == "csv":
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header, prev_end = None, 0
            for fields in reader:
                lineno, prev_end = prev_end + 1, reader.line_num  # a quoted record may span lines
                if not fields:
                    continue
                if header is None:
                    header = fields
                    continue
                yield lineno, header, _zip_row(path, lineno, header, fields)
        return
    header = None
    for lineno, fields in read_tsv_lines(path):
        if header is None:
            header = fields
            continue
        yield lineno, header, _zip_row(path, lineno, header, fields)


def _zip_row(path, lineno, header, fields):
    """Map header names to fields; a short row is an error naming the first missing column."""
    if len(fields) < len(header):
        raise DataError(f"{path}, line {lineno}: missing column {header[len(fields)]!r} "
                        f"(expected {len(header)} fields, found {len(fields)})")
    return dict(zip(header, fields))


def _sort_labels(labels):
    """Sorted unique label strings; numerically when all are integers ("2" before "10")."""
    labels = set(labels)
    try:
        return sorted(labels, key=int)
    except ValueError:
        return sorted(labels)


def _checked_rows(path, text_columns, other_columns=(), limit=None):
    """The rows of a CSV/TSV/JSONL file with a header, as (line_number, row); every column named must be
    present and every text column non-empty."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be at least 1, got {limit}")
    rows = []
    for lineno, header, row in _read_rows(path, fmt):
        for col in [*text_columns, *other_columns]:
            if col not in row:
                where = f"line {lineno}" if fmt == "jsonl" else "header"
                raise DataError(f"{path}, {where}: no column {col!r}; columns found: {', '.join(map(str, header))}")
        for col in text_columns:
            value = row[col]
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{path}, line {lineno}, field {col!r}: expected non-empty text, got {value!r}")
        rows.append((lineno, row))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{path}: no data rows (file is empty or has only a header)")
    return rows


def load_texts(path, text_column, text_pair_column=None, limit=None) -> datasets.Dataset:
    """Read an unlabelled table into a Dataset with columns text [, text_pair] (other columns are ignored)."""
    import datasets

    rows = _checked_rows(path, [c for c in (text_column, text_pair_column) if c is not None], limit=limit)
    data = {"text": [row[text_column] for _, row in rows]}
    if text_pair_column is not None:
        data["text_pair"] = [row[text_pair_column] for _, row in rows]
    return datasets.Dataset.from_dict(data)


def load_table(path, text_column, label_column, text_pair_column=None,
               regression=False, label_names=None, limit=None, multi_label=False, label_separator="|"):
    """Read a labelled table into a Dataset with columns text, [text_pair,] label.

    Returns (dataset, label_names). For classification, label_names is the sorted
    label set of this file (a training file) unless given (a dev file, whose labels
    must then be in it). For regression, labels must be numbers and label_names is None.
    With `multi_label`, see `multi_label_targets`: each label is a list of 0/1 floats, one per tag.
    """
    import datasets

    path = Path(path)
    rows = _checked_rows(path, [c for c in (text_column, text_pair_column) if c is not None], [label_column], limit)
    texts, pairs, raw_labels = [], [], []
    for lineno, row in rows:
        if not multi_label and (row[label_column] is None or str(row[label_column]).strip() == ""):
            raise DataError(f"{path}, line {lineno}, field {label_column!r}: missing label")
        texts.append(row[text_column])
        if text_pair_column is not None:
            pairs.append(row[text_pair_column])
        raw_labels.append((lineno, row[label_column]))

    if multi_label:
        labels, label_names = multi_label_targets(path, label_column, raw_labels, label_separator, label_names)
        label_feature = datasets.List(datasets.Value("float32"), length=len(label_names))
    elif regression:
        labels = [parse_float(path, lineno, label_column, v) for lineno, v in raw_labels]
        label_feature, label_names = datasets.Value("float32"), None
    else:
        strings = [(lineno, str(v).strip()) for lineno, v in raw_labels]
        if label_names is None:
            label_names = _sort_labels(s for _, s in strings)
        label_names = [str(n) for n in label_names]
        index = {name: i for i, name in enumerate(label_names)}
        labels = []
        for lineno, s in strings:
            if s not in index:
                raise DataError(f"{path}, line {lineno}, field {label_column!r}: label {s!r} is not one of "
                                f"the training labels {label_names}")
            labels.append(index[s])
        label_feature = datasets.ClassLabel(names=label_names)

    return make_dataset(texts, pairs if text_pair_column is not None else None, labels, label_feature), label_names


def split_tags(path, lineno, field, value, separator="|") -> list[str]:
    """The tags of one multi-label cell: a string of tags joined by `separator` ("plot|positive"), or in JSONL
    also a list of strings. Tags are stripped of surrounding spaces; an empty cell (or null, or []) is a row with
    no tags. An empty tag inside a cell ("plot||positive", "plot|") is an error naming file, line and field."""
    where = f"{path}, line {lineno}, field {field!r}"
    if value is None:
        return []
    if isinstance(value, list):
        if not all(isinstance(tag, str) for tag in value):
            raise DataError(f"{where}: expected a list of tag strings, got {value!r}")
        tags = [tag.strip() for tag in value]
    elif isinstance(value, str):
        if not value.strip():
            return []
        tags = [tag.strip() for tag in value.split(separator)]
    else:
        raise DataError(f"{where}: expected tags joined by {separator!r} (or a JSON list of strings), got {value!r}")
    if not all(tags):
        raise DataError(f"{where}: empty tag in {value!r} (tags are separated by {separator!r}; "
                        "an empty cell means no tags)")
    return tags


def multi_label_targets(path, field, raw_labels, separator="|", label_names=None):
    """(0/1 float indicator rows, label names) of a multi-label column given as [(line_number, cell)].

    The label names are the sorted set of tags of this file (a training file: at least two tags) unless given
    (a dev file: every tag must be one of them, else a DataError naming file, line and tag)."""
    if not separator:
        raise DataError("--label-separator must not be empty")
    tags = [(lineno, split_tags(path, lineno, field, value, separator)) for lineno, value in raw_labels]
    if label_names is None:
        label_names = _sort_labels(tag for _, row in tags for tag in row)
        if len(label_names) < 2:
            raise DataError(f"{path}, field {field!r}: multi-label training needs at least two different tags, "
                            f"found {label_names or 'none'}")
    label_names = [str(n) for n in label_names]
    index = {name: i for i, name in enumerate(label_names)}
    targets = []
    for lineno, row in tags:
        target = [0.0] * len(label_names)
        for tag in row:
            if tag not in index:
                raise DataError(f"{path}, line {lineno}, field {field!r}: tag {tag!r} is not one of the training "
                                f"tags {label_names}")
            target[index[tag]] = 1.0
        targets.append(target)
    return targets, label_names


def make_dataset(texts, pairs, labels, label_feature):
    """A Dataset with columns text, text_pair (unless pairs is None) and label."""
    import datasets

    data, features = {"text": texts}, {"text": datasets.Value("string")}
    if pairs is not None:
        data["text_pair"], features["text_pair"] = pairs, datasets.Value("string")
    data["label"], features["label"] = labels, label_feature
    return datasets.Dataset.from_dict(data, features=datasets.Features(features))


def parse_float(path, lineno, field, value):
    """A finite float from a label value, or a DataError naming file, line and field."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if isinstance(value, bool) or not math.isfinite(x):
        raise DataError(f"{path}, line {lineno}, field {field!r}: expected a number for a regression label, got {value!r}")
    return x
