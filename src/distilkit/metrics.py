"""GLUE metrics: per-task metric values, the per-task score, the GLUE macro score; multi-label metrics on 0/1
indicator arrays (rows × labels); STS and retrieval metrics."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from .tags import DEFAULT_THRESHOLD, over_threshold

METRICS = {
    "accuracy": accuracy_score,
    "f1": f1_score,  # binary F1 of the positive class (label id 1), as in GLUE for MRPC and QQP
    "mcc": matthews_corrcoef,
    "pearson": lambda refs, preds: pearsonr(preds, refs)[0],
    "spearman": lambda refs, preds: spearmanr(preds, refs)[0],
    # multi-label: (rows, labels) 0/1 indicator arrays; a label no row has nor is predicted to have counts as F1 0
    "micro_f1": lambda refs, preds: f1_score(refs, preds, average="micro", zero_division=0),
    "macro_f1": lambda refs, preds: f1_score(refs, preds, average="macro", zero_division=0),
    "subset_accuracy": accuracy_score,  # share of rows whose predicted label set is exactly the gold set
}
MULTI_LABEL_METRICS = ("micro_f1", "macro_f1", "subset_accuracy")


def predictions(logits: np.ndarray, regression: bool, multi_label: bool = False,
                threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Class ids (the arg-max of each row of logits), the regression output, or for a multi-label model
    a (rows, labels) 0/1 array: 1 where the label's probability (sigmoid) is above `threshold`."""
    if multi_label:
        return over_threshold(logits, threshold)
    return logits[:, 0] if regression else logits.argmax(-1)


def compute_metrics(metric_names, predictions, references) -> dict[str, float]:
    """{name: value} for class ids (accuracy, f1, mcc), float scores (pearson, spearman) or, multi-label,
    (rows, labels) 0/1 indicator arrays (micro_f1, macro_f1, subset_accuracy)."""
    preds, refs = np.asarray(predictions), np.asarray(references)
    multi = any(name in MULTI_LABEL_METRICS for name in metric_names)
    if preds.shape != refs.shape or preds.ndim != (2 if multi else 1) or len(preds) == 0:
        want = "(rows, labels) indicator arrays" if multi else "1-D sequences"
        raise ValueError(f"expected two equally long, non-empty {want}, got shapes {preds.shape} and {refs.shape}")
    if multi:
        preds, refs = preds.astype(np.int64), refs.astype(np.int64)
    out = {}
    for name in metric_names:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
        out[name] = float(METRICS[name](refs, preds))
    return out


def evaluate_task_predictions(task, split_predictions) -> dict[str, float]:
    """Metrics of a task over its dev splits: {split: (preds, refs)} -> {name: value}.

    With more than one split (MNLI) the names are prefixed: "dev_matched_accuracy".
    """
    out = {}
    for split, (preds, refs) in split_predictions.items():
        values = compute_metrics(task.metrics, preds, refs)
        prefix = f"{split}_" if len(split_predictions) > 1 else ""
        out.update({prefix + k: v for k, v in values.items()})
    return out


def task_score(metrics: dict[str, float]) -> float:
    """GLUE per-task score: the mean of the task's metric values."""
    if not metrics:
        raise ValueError("task_score needs at least one metric value")
    return float(np.mean(list(metrics.values())))


def glue_score(task_scores: dict[str, float]) -> float:
    """GLUE score: the macro mean of per-task scores."""
    if not task_scores:
        raise ValueError("glue_score needs at least one task score")
    return float(np.mean(list(task_scores.values())))


# --- sentence embeddings: STS and retrieval ---------------------------------------------------------


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def sts_spearman(emb1, emb2, gold) -> float:
    """Spearman correlation between the cosine similarity of row-paired embeddings and gold scores."""
    cos = (_unit(emb1) * _unit(emb2)).sum(-1)
    return float(spearmanr(cos, np.asarray(gold, dtype=np.float64))[0])


def retrieval_metrics(query_emb, passage_emb, relevant: list[set[int]], ks=(1, 10), mrr_k: int = 10) -> dict[str, float]:
    """Rank every passage for every query by cosine similarity.

    recall@k: share of a query's relevant passages in its top k, averaged over queries; mrr@k: mean of
    1/rank of the first relevant passage (0 when it is below rank k). Ties go to the lower passage index.
    """
    if len(relevant) != len(query_emb) or not len(query_emb):
        raise ValueError(f"need one set of relevant passages per query: {len(relevant)} sets, {len(query_emb)} queries")
    scores = _unit(query_emb) @ _unit(passage_emb).T
    depth = min(max(max(ks), mrr_k), scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    out = {f"recall@{k}": float(np.mean([len(rel & set(row[:k].tolist())) / len(rel) for row, rel in zip(top, relevant)]))
           for k in ks}
    reciprocal = []
    for row, rel in zip(top, relevant):
        hits = [rank for rank, p in enumerate(row[:mrr_k].tolist(), 1) if p in rel]
        reciprocal.append(1.0 / hits[0] if hits else 0.0)
    out[f"mrr@{mrr_k}"] = float(np.mean(reciprocal))
    return out
