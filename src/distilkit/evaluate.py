"""Score a model on a task's dev split(s): the task's metrics and its GLUE per-task score."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data.task import TaskData
from .metrics import evaluate_task_predictions, task_score
from .train.common import encode, predict_logits


def predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
    """Class ids, or the regression output."""
    return logits[:, 0] if regression else logits.argmax(-1)


def dev_predictions(model, tokenizer, data: TaskData, max_length: int = 128, encoded_dev: dict | None = None) -> dict:
    """{split: (predictions, labels)} of `model` on every dev split of `data`."""
    encoded_dev = encoded_dev or {name: encode(ds, tokenizer, max_length) for name, ds in data.dev.items()}
    per_split = {}
    for name, ds in encoded_dev.items():
        logits = predict_logits(model, ds, tokenizer, description=f"evaluating on {data.name} {name}")
        per_split[name] = (predictions(logits, data.regression), np.asarray(ds["label"]))
    return per_split


def evaluate_model(model, tokenizer, data: TaskData, max_length: int = 128, encoded_dev: dict | None = None) -> dict:
    """{metric: value, ..., "score": per-task mean} on every dev split of `data`."""
    metrics = evaluate_task_predictions(data, dev_predictions(model, tokenizer, data, max_length, encoded_dev))
    metrics["score"] = task_score(metrics)
    return metrics



# --- sentence embeddings: STS-B Spearman and retrieval, no fine-tuning ------------------------------


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
    from .data.errors import DataError

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
    from .data.glue import get_task, load_glue_split

    spec = get_task(task)
    if spec.name not in ("mrpc", "stsb"):
        raise ValueError(f"retrieval from GLUE pairs supports mrpc and stsb, not {spec.name}")
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
    import json

    from .data.errors import DataError

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
    from .data.glue import load_glue_split

    ds = load_glue_split("stsb", split, glue_dir)
    return list(ds["text"]), list(ds["text_pair"]), [float(x) for x in ds["label"]]


def evaluate_embedding_model(encode, sts: tuple | None, retrieval: list[RetrievalSet]) -> dict:
    """`encode(texts) -> (n, dim)` scored on STS (Spearman of cosine) and each retrieval set.
    Returns {"stsb_spearman": ..., "<set>": {"recall@1", "recall@10", "mrr@10"}}."""
    from .metrics import retrieval_metrics, sts_spearman

    out = {}
    if sts is not None:
        s1, s2, gold = sts
        out["stsb_spearman"] = sts_spearman(encode(s1), encode(s2), gold)
    for rs in retrieval:
        out[rs.name] = retrieval_metrics(encode(rs.queries), encode(rs.passages), rs.relevant)
    return out


def embedding_scores(metrics: dict) -> dict[str, float]:
    """Flat {name: value} of an embedding model's metrics ("stsb_spearman", "mrpc recall@10", ...)."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update({f"{key} {k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def compare_embedding_models(models: dict[str, str], sts: tuple | None, retrieval: list[RetrievalSet],
                             backend: str = "torch", reference: str | None = "teacher") -> dict:
    """Every model (name → folder) on the same sets, side by side; retention of each score versus
    `reference` (when it is among the models)."""
    from .backends import load_backend, predict_all

    results = {}
    for name, folder in models.items():
        model = load_backend(folder, backend)
        if not model.embedding:
            from .models import ModelError

            raise ModelError(f"{folder} is not an embedding model (no modules.json with a Pooling module): "
                             "`distil eval --embedding` scores sentence-embedding folders")
        results[name] = evaluate_embedding_model(lambda texts: predict_all(model, list(texts), None, 64),
                                                 sts, retrieval)
        results[name]["pooling"] = {"mode": model.pooling.mode, "normalize": model.pooling.normalize}
    out = {"models": results, "sets": {
        **({"stsb": {"pairs": len(sts[0])}} if sts else {}),
        **{rs.name: {"queries": len(rs.queries), "passages": len(rs.passages), "source": rs.source} for rs in retrieval}}}
    if reference in results:
        ref = embedding_scores({k: v for k, v in results[reference].items() if k != "pooling"})
        out["retention"] = {name: {k: (v / ref[k] if ref[k] else None) for k, v in
                                   embedding_scores({k: v for k, v in m.items() if k != "pooling"}).items()}
                            for name, m in results.items() if name != reference}
    return out
