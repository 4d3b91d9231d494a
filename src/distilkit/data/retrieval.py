"""Evaluation sets for sentence embeddings: STS-B sentence pairs with gold scores, and retrieval sets (queries,
a passage pool, the relevant passages of each query) from GLUE pairs or the user's JSONL file."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .glue import get_task, load_glue_split


@dataclass
class RetrievalSet:
    """Queries, the passage pool, and per query the indices of its relevant passages."""

    name: str
    queries: list[str]
    passages: list[str]
    relevant: list[set[int]]
    source: str = ""


def retrieval_from_pairs(name: str, pairs: list[tuple[str, str]], distractors: list[str] = (), source: str = "") -> RetrievalSet:
    """One query per distinct first text; its relevant passages are the second texts it was paired with.
    The pool is every distinct passage (pairs' and distractors'), so each query is ranked against all."""
    if not pairs:
        raise DataError(f"{source or name}: no (query, passage) pairs to evaluate retrieval on")
    index: dict[str, int] = {}
    for text in [p for _, p in pairs] + list(distractors):
        index.setdefault(text, len(index))
    by_query: dict[str, set[int]] = {}
    for query, passage in pairs:
        by_query.setdefault(query, set()).add(index[passage])
    return RetrievalSet(name, list(by_query), list(index), list(by_query.values()), source)


def glue_retrieval(task: str, glue_dir: str | Path | None) -> RetrievalSet:
    """Retrieval from GLUE-layout pairs (sentence 1 = query, its positive sentence 2 = the passage).

    mrpc: the paraphrase pairs (label 1) of dev, and of test when its file has labels; the pool is the
    sentence 2 of every dev and test pair. stsb: dev pairs scored >= 4 of 5; the pool is every dev sentence 2.
    """
    spec = get_task(task)
    if spec.name not in ("mrpc", "stsb"):
        raise DataError(f"retrieval from GLUE pairs supports mrpc and stsb, not {spec.name}")
    pairs, pool = [], []
    splits = ("dev", "test") if spec.name == "mrpc" else ("dev",)
    for split in splits:
        ds = load_glue_split(spec, split, glue_dir)
        pool += list(ds["text_pair"])
        positive = [(lab == 1 if spec.name == "mrpc" else lab >= 4.0) for lab in ds["label"]]
        pairs += [(q, p) for q, p, keep in zip(ds["text"], ds["text_pair"], positive) if keep]
    labelled = "dev" if spec.name == "stsb" else "dev positives (test has no labels: its passages join the pool)"
    return retrieval_from_pairs(spec.name, pairs, pool, f"{spec.name} {labelled}, {glue_dir or 'hub'}")


def jsonl_retrieval(path: str | Path) -> RetrievalSet:
    """The user's own retrieval set: JSONL lines {"query": ..., "passage": ...} (a relevant pair) or
    {"passage": ...} (a passage no query is looking for)."""
    pairs, extra = [], []
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}, line {lineno}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict) or not isinstance(row.get("passage"), str) or not row["passage"].strip():
                raise DataError(f'{path}, line {lineno}: expected {{"query": "...", "passage": "..."}} or {{"passage": "..."}}')
            if "query" in row:
                if not isinstance(row["query"], str) or not row["query"].strip():
                    raise DataError(f'{path}, line {lineno}: "query" must be non-empty text')
                pairs.append((row["query"], row["passage"]))
            else:
                extra.append(row["passage"])
    return retrieval_from_pairs(Path(path).stem, pairs, extra, str(path))


def sts_pairs(glue_dir: str | Path | None, split: str = "dev") -> tuple[list[str], list[str], list[float]]:
    """STS-B sentence pairs with their gold scores (0-5)."""
    ds = load_glue_split("stsb", split, glue_dir)
    return list(ds["text"]), list(ds["text_pair"]), [float(x) for x in ds["label"]]
