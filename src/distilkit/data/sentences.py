"""Unlabelled sentences for embedding distillation: text files, folders of them, GLUE-layout folders.

A text file gives its non-blank lines (one sentence per line). A GLUE folder (glue_data layout, or one
task folder of it) gives the sentence columns of its train.tsv only: never labels or scores, never dev
or test rows. Sentences are stripped and de-duplicated, first occurrence kept.
"""

from __future__ import annotations

import re
from pathlib import Path

from .corpus import text_files
from .errors import DataError
from .glue import GLUE_TASKS, default_glue_dir, load_glue_split
from .retrieval import sts_pairs

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_WIKI_JOINS = {" @-@ ": "-", " @,@ ": ",", " @.@ ": "."}


def split_sentences(text: str) -> list[str]:
    """Split a paragraph after . ! or ? followed by space and a capital, digit or opening quote."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def clean_wikitext(line: str) -> str:
    """Undo WikiText's ` @-@ `, ` @,@ `, ` @.@ ` splits; headings (` = Title = `) become ''."""
    line = line.strip()
    if line.startswith("=") and line.endswith("="):
        return ""
    for old, new in _WIKI_JOINS.items():
        line = line.replace(old, new)
    return line


def _glue_task_dirs(path: Path) -> list[tuple[str, Path]]:
    """(task, folder) pairs when `path` is a glue_data folder or one task folder of it; [] otherwise."""
    by_folder = {t.folder.lower(): t.name for t in GLUE_TASKS.values()}
    if path.name.lower() in by_folder and (path / "train.tsv").is_file():
        return [(by_folder[path.name.lower()], path.parent)]
    return [(by_folder[p.name.lower()], path) for p in sorted(path.iterdir())
            if p.is_dir() and p.name.lower() in by_folder and (p / "train.tsv").is_file()]


def _text_lines(path: Path) -> list[str]:
    lines = []
    for f in text_files(path):
        try:
            lines += [line.strip() for line in f.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except UnicodeDecodeError as err:
            raise DataError(f"{f}: not UTF-8 text (byte {err.start}): expected UTF-8 text, one sentence per line") from None
    return lines


def sentences_of(source: str | Path) -> list[str]:
    """The sentences of one source (see the module docstring); a DataError naming it when there are none."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: corpus not found (expected a text file with one sentence per line, a folder "
                        "of text files, or a glue_data folder)")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: the corpus file is empty: expected one sentence per line")
    tasks = _glue_task_dirs(path) if path.is_dir() else []
    if tasks:
        lines = []
        for task, root in tasks:
            ds = load_glue_split(task, "train", root)
            for column in ("text", "text_pair"):
                if column in ds.column_names:
                    lines += [t.strip() for t in ds[column] if t and t.strip()]
    else:
        lines = _text_lines(path)
    if not lines:
        raise DataError(f"{path}: the corpus has only blank lines: expected one sentence per line")
    return lines


def load_sentences(sources: list[str | Path], exclude: set[str] | None = None) -> tuple[list[str], list[dict]]:
    """De-duplicated sentences of all sources (minus `exclude`), and per source how many it gave."""
    if not sources:
        raise DataError("no corpus given: pass --corpus PATH (a text file, a folder, or a glue_data folder)")
    seen, out, report = set(exclude or ()), [], []
    for source in sources:
        lines = sentences_of(source)
        new = 0
        for line in lines:
            if line not in seen:
                seen.add(line)
                out.append(line)
                new += 1
        report.append({"source": str(source), "lines": len(lines), "new_sentences": new})
    if not out:
        raise DataError(f"{', '.join(map(str, sources))}: no sentences left after removing duplicates and excluded ones")
    return out, report


def check_sentences(path: str | Path | None, glue_dir: str | Path | None = None,
                    limit: int | None = None) -> tuple[list[str], str]:
    """Sentences that check an embedding model's export, and where they came from: a file's sentences, else the
    distinct sentences of STS-B dev (from `glue_dir`, else ../shared/data/glue, else the hub)."""
    if path is not None:
        lines = sentences_of(path)
        return lines[:limit] if limit else lines, str(path)
    s1, s2, _ = sts_pairs(glue_dir or default_glue_dir())
    unique = list(dict.fromkeys(s1 + s2))
    return unique[:limit] if limit else unique, "STS-B dev sentences"
