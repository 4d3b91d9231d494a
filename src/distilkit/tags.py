"""Multi-label classification (tags) basics every layer shares, numpy only (predict and serve import it).

A multi-label model has one sigmoid output per tag; its config's `problem_type` is MULTI_LABEL, which also
makes transformers fine-tune it with BCEWithLogitsLoss. It predicts every tag whose probability is above a
threshold (strictly), DEFAULT_THRESHOLD unless the user gives one.
"""

from __future__ import annotations

import numpy as np

MULTI_LABEL = "multi_label_classification"  # Hugging Face's problem_type of a multi-label model
DEFAULT_THRESHOLD = 0.5


def sigmoid(logits) -> np.ndarray:
    """Per-tag probabilities of a multi-label model's logits (numerically stable)."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(logits, dtype=np.float64)))


def over_threshold(logits, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """(rows, tags) 0/1 int array: 1 where a tag's probability is above `threshold`."""
    return (sigmoid(logits) > threshold).astype(np.int64)
