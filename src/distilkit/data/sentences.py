"""Unlabelled sentences for embedding distillation: text files, folders of them, GLUE-layout folders.

A text file gives its non-blank lines (one sentence per line). A GLUE folder (glue_data layout, or one
task folder of it) gives the sentence columns of its train.tsv only: never labels or scores, never dev
or test rows. Sentences are stripped and de-duplicated, first occurrence kept.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterator

from datasets import Features, Sequence, Value

from ..artifacts import write_json
from .corpus import stream_to_disk, text_files, token_dtype
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


def sentence_batches(source: str | Path, batch_lines: int = 2000) -> Iterator[list[str]]:
    """The sentences of one source (see the module docstring) in batches, a text file read line by line; a
    DataError naming it when there are none."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: corpus not found (expected a text file with one sentence per line, a folder "
                        "of text files, or a glue_data folder)")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: the corpus file is empty: expected one sentence per line")
    tasks = _glue_task_dirs(path) if path.is_dir() else []
    any_line = False
    for task, root in tasks:  # small: read whole
        ds = load_glue_split(task, "train", root)
        for column in ("text", "text_pair"):
            if column in ds.column_names:
                lines = [t.strip() for t in ds[column] if t and t.strip()]
                any_line |= bool(lines)
                for start in range(0, len(lines), batch_lines):
                    yield lines[start : start + batch_lines]
    for f in [] if tasks else text_files(path):
        batch = []
        try:
            with f.open(encoding="utf-8-sig") as fh:
                for line in fh:
                    if line.strip():
                        batch.append(line.strip())
                        if len(batch) == batch_lines:
                            any_line = True
                            yield batch
                            batch = []
        except UnicodeDecodeError as err:
            raise DataError(f"{f}: not UTF-8 text (byte {err.start}): expected UTF-8 text, one sentence per line") from None
        if batch:
            any_line = True
            yield batch
    if not any_line:
        raise DataError(f"{path}: the corpus has only blank lines: expected one sentence per line")


def sentences_of(source: str | Path) -> list[str]:
    """The sentences of one source (see the module docstring); a DataError naming it when there are none."""
    return [line for batch in sentence_batches(source) for line in batch]


def unique_sentences(sources: list[str | Path], report: list[dict], exclude: set[str] | None = None,
                     batch_lines: int = 2000) -> Iterator[list[str]]:
    """The sentences of all sources (minus `exclude`) in batches, each once (first occurrence kept), streamed: only a
    16-byte digest of each is held. Fills `report` with how many lines and new sentences each source gave."""
    if not sources:
        raise DataError("no corpus given: pass --corpus PATH (a text file, a folder, or a glue_data folder)")
    seen = {_digest(line) for line in exclude or ()}
    for source in sources:
        lines = new = 0
        for batch in sentence_batches(source, batch_lines):
            fresh = []
            for line in batch:
                key = _digest(line)
                if key not in seen:
                    seen.add(key)
                    fresh.append(line)
            lines, new = lines + len(batch), new + len(fresh)
            if fresh:
                yield fresh
        report.append({"source": str(source), "lines": lines, "new_sentences": new})
    if not any(r["new_sentences"] for r in report):
        raise DataError(f"{', '.join(map(str, sources))}: no sentences left after removing duplicates and excluded ones")


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def load_sentences(sources: list[str | Path], exclude: set[str] | None = None) -> tuple[list[str], list[dict]]:
    """De-duplicated sentences of all sources (minus `exclude`), and per source how many it gave."""
    report = []
    return [line for batch in unique_sentences(sources, report, exclude) for line in batch], report


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


def sentence_rows(sources: tuple[str, ...], tokenizers: dict, max_length: int, state: dict) -> Iterator[dict]:
    """Each unique sentence of the sources as token ids, one column per tokenizer ({column: tokenizer}) and the
    `length` of the first; fills state["report"] (`unique_sentences`) and state["digests"] (one per batch)."""
    for batch in unique_sentences(list(sources), state["report"]):
        state["digests"].append(hashlib.sha256("\n".join(batch).encode("utf-8")).digest())
        columns = {name: tok(batch, truncation=True, max_length=max_length)["input_ids"]
                   for name, tok in tokenizers.items()}
        first = next(iter(columns.values()))
        for i in range(len(batch)):
            yield {**{name: ids[i] for name, ids in columns.items()}, "length": len(first[i])}


def prepare_sentences(sources: list[str | Path], tokenizers: dict, max_length: int, out: Path) -> dict:
    """The unique sentences of the sources, tokenised by each of `tokenizers` ({column: tokenizer}), streamed into
    memory-mapped Arrow shards at `out` (never held whole), with sentences.json: per source how many lines and new
    sentences it gave, and a SHA-256 of the sentences (the key of cached teacher embeddings). Returns that."""
    state = {"report": [], "digests": []}  # not lists: datasets would shard gen_kwargs' lists
    features = Features({**{name: Sequence(Value(token_dtype(len(tok)))) for name, tok in tokenizers.items()},
                         "length": Value("int32")})
    ds = stream_to_disk(sentence_rows, {"sources": tuple(str(s) for s in sources), "tokenizers": tokenizers,
                                        "max_length": max_length, "state": state}, features, out)
    info = {"sources": state["report"], "sentences": len(ds),
            "sha256": hashlib.sha256(b"".join(state["digests"])).hexdigest()}
    write_json(Path(out) / "sentences.json", info)
    return info
