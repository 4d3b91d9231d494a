"""A larger transfer set for task distillation: perturbed copies of the training texts.

The copies carry no gold label (-1 for a class, NaN for a score): the student learns the teacher's
soft targets on them, and the gold labels only on the original rows. On small tasks the teacher's
outputs on its own training set are close to the gold labels, so they teach little; on nearby,
unseen inputs they carry the teacher's judgement (TinyBERT, Jiao et al. 2020, section 3.3, used
word replacement for this). The perturbations here need no model: each word is, with probability
`rate`, deleted, swapped with the next word, repeated, or replaced by a random training word.
"""

from __future__ import annotations

import math
import random

import datasets

NO_CLASS = -1  # label of an augmented row in a classification task


def perturb(words: list[str], vocabulary: list[str], rng: random.Random, rate: float = 0.15) -> list[str]:
    """One perturbed copy of `words` (at least one edit when there are words to edit)."""
    if not words:
        return []
    edits = [i for i in range(len(words)) if rng.random() < rate] or [rng.randrange(len(words))]
    out = list(words)
    for i in sorted(edits, reverse=True):  # from the end, so earlier indices stay valid
        op = rng.randrange(4)
        if op == 0 and len(out) > 1:
            del out[i]
        elif op == 1 and i + 1 < len(out):
            out[i], out[i + 1] = out[i + 1], out[i]
        elif op == 2:
            out.insert(i, out[i])
        else:
            out[i] = rng.choice(vocabulary)
    return out


def augment(ds: datasets.Dataset, copies: int, seed: int = 0, rate: float = 0.15) -> datasets.Dataset:
    """`ds` followed by `copies` perturbed copies of each row, without gold labels.

    Pair tasks: each copy perturbs one of the two texts, chosen at random."""
    if copies <= 0:
        return ds
    rng = random.Random(seed)
    has_pair = "text_pair" in ds.column_names
    regression = ds.features["label"].dtype.startswith("float")
    vocabulary = sorted({w for text in ds["text"] for w in text.split()})
    if has_pair:
        vocabulary = sorted(set(vocabulary) | {w for text in ds["text_pair"] for w in text.split()})
    rows = {name: [] for name in ds.column_names}
    for row in ds:
        for _ in range(copies):
            first = not has_pair or rng.random() < 0.5
            key = "text" if first else "text_pair"
            new = dict(row)
            new[key] = " ".join(perturb(row[key].split(), vocabulary, rng, rate))
            new["label"] = math.nan if regression else NO_CLASS
            for name in rows:
                rows[name].append(new[name])
    copies_ds = datasets.Dataset.from_dict(rows, features=ds.features)
    return datasets.concatenate_datasets([ds, copies_ds])
