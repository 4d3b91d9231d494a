"""Score a model on a task's dev split(s): the task's metrics and its GLUE per-task score."""

from __future__ import annotations

import numpy as np

from .data.task import TaskData
from .metrics import evaluate_task_predictions, task_score
from .train.common import encode, predict_logits


def predictions(logits: np.ndarray, regression: bool) -> np.ndarray:
    """Class ids, or the regression output."""
    return logits[:, 0] if regression else logits.argmax(-1)


def evaluate_model(model, tokenizer, data: TaskData, max_length: int = 128, encoded_dev: dict | None = None) -> dict:
    """{metric: value, ..., "score": per-task mean} on every dev split of `data`."""
    encoded_dev = encoded_dev or {name: encode(ds, tokenizer, max_length) for name, ds in data.dev.items()}
    per_split = {}
    for name, ds in encoded_dev.items():
        logits = predict_logits(model, ds, tokenizer, description=f"evaluating on {data.name} {name}")
        per_split[name] = (predictions(logits, data.regression), np.asarray(ds["label"]))
    metrics = evaluate_task_predictions(data, per_split)
    metrics["score"] = task_score(metrics)
    return metrics

