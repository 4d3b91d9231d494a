"""`distil predict`: label texts from arguments, a file or stdin; JSONL out, one line per text.

Input is plain text (one text per line) or JSONL (`{"text": ..., "text_pair": ...}` per line; chosen
by `--format`, a .jsonl/.json file name, or a first line that starts with "{"). Blank lines are skipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import BinaryIO

from ..errors import ConfigError, UserError
from .backends import Backend, check_threshold, predict_all, results


FORMATS = ("auto", "lines", "jsonl")


class InputError(UserError):
    """Bad predict input; the message names the source and line."""


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")


def _decode(raw: bytes, source: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError as err:
        raise InputError(f"{source}, line {lineno}: not valid UTF-8 (byte {err.start + 1})") from None


def _jsonl_row(line: str, source: str, lineno: int) -> tuple[str, str | None]:
    where = f"{source}, line {lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: invalid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise InputError(f'{where}: expected an object with a "text" string, like {{"text": "a great film"}}')
    pair = row.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        raise InputError(f'{where}: "text_pair" must be a string')
    return row["text"], pair


def parse_lines(data: bytes, source: str = "<stdin>", fmt: str = "auto") -> tuple[list[str], list[str] | None]:
    """Texts (and text pairs, JSONL only) from the bytes of a file: fmt is auto, lines or jsonl."""
    check_format(fmt)
    lines = [(i, _decode(raw, source, i)) for i, raw in enumerate(data.split(b"\n"), 1)]
    lines = [(i, line) for i, line in lines if line.strip()]
    if fmt == "auto":
        jsonl = source.endswith((".jsonl", ".json")) or bool(lines and lines[0][1].lstrip().startswith("{"))
        fmt = "jsonl" if jsonl else "lines"
    if fmt == "lines":
        return [line for _, line in lines], None
    rows = [(i, *_jsonl_row(line, source, i)) for i, line in lines]
    with_pair = [i for i, _, pair in rows if pair is not None]
    if with_pair and len(with_pair) != len(rows):
        missing = next(i for i, _, pair in rows if pair is None)
        raise InputError(f'{source}, line {missing}: no "text_pair", but line {with_pair[0]} has one: give all or none')
    return [t for _, t, _ in rows], ([p for _, _, p in rows] if with_pair else None)


def read_inputs(texts: list[str] | None, file: Path | None, stdin: BinaryIO | None = None,
                fmt: str = "auto") -> tuple[list[str], list[str] | None]:
    """Texts from arguments, else from `file`, else from stdin."""
    check_format(fmt)
    if texts:
        return list(texts), None
    if file is not None:
        if not Path(file).is_file():
            raise InputError(f"{file}: no such file")
        return parse_lines(Path(file).read_bytes(), str(file), fmt)
    stdin = stdin or sys.stdin.buffer
    if stdin.isatty():
        raise InputError("no input: give texts as arguments, --file FILE, or pipe them on stdin")
    return parse_lines(stdin.read(), "<stdin>", fmt)


def check_pairs(is_pair: bool | None, pairs: list[str] | None, model: str) -> None:
    """Pair models need a text_pair per text; single-text models take none."""
    if is_pair and pairs is None:
        raise InputError(f'{model} classifies text pairs: give JSONL lines with "text" and "text_pair"')
    if is_pair is False and pairs is not None:
        raise InputError(f'{model} classifies single texts: drop "text_pair" from the input')


def predict(backend: Backend, texts: list[str], pairs: list[str] | None = None, batch_size: int = 32,
            all_scores: bool = False, threshold: float | None = None) -> list[dict]:
    """One result ({label, score[, scores]}) per text, in input order; for a multi-label model {labels, scores}:
    every label whose probability is above `threshold` (default 0.5; other models take none)."""
    threshold = check_threshold(threshold, backend.multi_label)
    logits = predict_all(backend, texts, pairs, batch_size)
    return results(logits, backend.id2label, backend.regression, all_scores, backend.multi_label, threshold)


def write_jsonl(rows: list[dict], out=None) -> None:
    out = out or sys.stdout
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    out.flush()


def embed(backend: Backend, texts: list[str], batch_size: int = 32) -> list[dict]:
    """One {"embedding": [...]} per text, in input order (an embedding model's backend)."""
    if not backend.embedding:
        raise InputError(f"{backend.model_dir} is a classifier, not an embedding model (no modules.json with a "
                         "Pooling module): drop --embedding to label texts")
    return [{"embedding": row.tolist()} for row in predict_all(backend, texts, None, batch_size)]
