"""Reusing finished stages: the one path by which `distil run --resume`, `distil glue` and `distil sweep` skip a
stage whose folder already holds its result, after checking it was made with the configuration asked for now."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from ..artifacts import read_json
from ..errors import UserError

console = Console(stderr=True)


class StageConfigError(UserError):
    """A finished stage folder was made with another configuration than the one asked for now."""


def _resolved_paths(value):
    """`value` with every string that names an existing file or folder made absolute (dicts and lists walked)."""
    if isinstance(value, dict):
        return {k: _resolved_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved_paths(v) for v in value]
    if isinstance(value, str) and value and Path(value).exists():
        return str(Path(value).resolve())
    return value


def reuse_or_run(folder: Path, expected: dict, build) -> dict:
    """Reuse the finished stage in `folder` when its distil.json holds `expected` (same teacher, data,
    config...), else run `build()` (which writes `folder` atomically and returns its distil.json).

    A folder made with other values is refused, naming the field that differs, so an interrupted
    suite resumes without redoing finished stages but never mixes two configurations."""
    record = Path(folder) / "distil.json"
    if not record.exists():
        return build()
    info = read_json(record)
    wanted = json.loads(json.dumps(expected, default=str))
    for key, value in wanted.items():
        found = info.get(key)
        if key == "data":  # ../shared/data/glue and /work/shared/data/glue are the same data
            found, value = _resolved_paths(found), _resolved_paths(value)
        if found != value:
            raise StageConfigError(
                f"{folder} holds a finished stage made with {key}={info.get(key)!r}, not {value!r}: "
                "remove that folder (or pass --overwrite) to redo it")
    console.print(f"[green]reusing finished stage {folder}")
    return info


