"""Output folders and files that are never left half-written.

Every stage writes into a hidden temporary folder beside its output and renames it into
place only when everything is there; an existing output is replaced only when asked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


from .errors import UserError


class OutputExistsError(UserError, FileExistsError):
    """The output folder exists and --overwrite was not given."""


def check_output(out: str | Path, overwrite: bool) -> Path:
    """Refuse early (before any work) when `out` exists and overwriting was not asked for."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists: pass --overwrite to replace it, or choose another --out")
    return out


def partial_dir(out: str | Path) -> Path:
    """The temporary folder a stage writes into before it is renamed to `out`."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def publish(tmp: Path, out: Path, overwrite: bool) -> Path:
    """Rename a finished temporary folder to `out`, replacing an old `out` only if `overwrite`."""
    if out.exists():
        if not overwrite:
            raise OutputExistsError(f"{out} already exists: pass --overwrite to replace it")
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def start_partial(out: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Check `out`, then make its temporary folder: kept from an interrupted run with `resume`, else emptied."""
    out = check_output(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir(out)
    if tmp.exists() and not resume:
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to write into; on success it becomes `out`.

    With `resume`, a temporary folder left by an interrupted run is kept (its checkpoints
    are reused); otherwise it is cleared. On failure the temporary folder stays, for --resume.
    """
    tmp = start_partial(out, overwrite, resume)
    yield tmp
    publish(tmp, Path(out), overwrite)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write text through a temporary file, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
    return path


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure through a temporary file, then rename; closes the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_record(folder: str | Path, name: str = "distil.json") -> dict:
    """A folder's JSON record (distil.json, export.json, ...); {} when the folder has none."""
    path = Path(folder) / name
    return read_json(path) if path.is_file() else {}


def fingerprint(*parts: Any, files: list[Path] = ()) -> str:
    """A short sha256 of JSON-able `parts` and of each file's path, size and modification time: the key of a
    cache entry that must change when its inputs (texts, settings, model weights) change."""
    digest = hashlib.sha256()
    for path in files:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
