"""A larger transfer set for task distillation: perturbed copies of the training texts.

The copies carry no gold label (-1 for a class, NaN for a score or in every place of a multi-label row): the student learns the teacher's
soft targets on them, and the gold labels only on the original rows. On small tasks the teacher's
outputs on its own training set are close to the gold labels, so they teach little; on nearby,
unseen inputs they carry the teacher's judgement (TinyBERT, Jiao et al. 2020, section 3.3, used
word replacement for this). The perturbations here need no extra model: each word is, with probability
`rate`, deleted, swapped with the next word, repeated, or replaced. A replacement is a random training
word, or, given a neighbour table, one of the word's nearest neighbours in the teacher's input
embeddings (ran → run, running; himself → themselves): TinyBERT's GloVe candidates, without GloVe.
"""

from __future__ import annotations

import math
import random

import datasets
import torch

NO_CLASS = -1  # label of an augmented row in a classification task
PUNCTUATION = ",.;:!?\"'()"  # stripped from a word's ends before its neighbours are looked up


def embedding_neighbours(words, vocab: dict[str, int], embeddings: torch.Tensor, k: int,
                         chunk: int = 1024) -> dict[str, list[str]]:
    """{word: its `k` nearest whole-word tokens by cosine in `embeddings` (vocab_size, dim)}.

    Only words that are one alphabetic token of `vocab` (a WordPiece vocabulary, token → row) get
    neighbours; the candidates are the vocabulary's alphabetic whole-word tokens."""
    ids = {w: vocab[w] for w in sorted(set(words)) if w.isalpha() and w in vocab}
    candidates = [tok for tok in sorted(vocab, key=vocab.get) if tok.isalpha()]
    if not ids or k <= 0:
        return {}
    unit = torch.nn.functional.normalize(embeddings.detach().float(), dim=1)
    cand_rows = unit[[vocab[t] for t in candidates]]  # (C, dim)
    names = list(ids)
    table = {}
    for start in range(0, len(names), chunk):
        batch = names[start:start + chunk]
        sims = unit[[ids[w] for w in batch]] @ cand_rows.T  # (B, C)
        top = sims.topk(min(k + 1, len(candidates)), dim=1).indices
        for word, row in zip(batch, top.tolist()):
            table[word] = [candidates[j] for j in row if candidates[j] != word][:k]
    return table


def _replacement(word: str, vocabulary: list[str], neighbours: dict[str, list[str]] | None,
                 rng: random.Random) -> str:
    """A neighbour of `word`'s letters (punctuation and capital kept) if the table has one, else a random word."""
    head = len(word) - len(word.lstrip(PUNCTUATION))
    tail = len(word.rstrip(PUNCTUATION))
    core = word[head:tail]
    options = (neighbours or {}).get(core.lower())
    if not options:
        return rng.choice(vocabulary)
    new = rng.choice(options)
    if core[:1].isupper():
        new = new[:1].upper() + new[1:]
    return word[:head] + new + word[tail:]


def no_label(features: datasets.Features) -> float | int | list[float]:
    """The label of a row without a gold one: NaN for a score, NO_CLASS for a class, NaN in every place of a
    multi-label row (a list feature of one 0/1 float per tag)."""
    feature = features["label"]
    if isinstance(feature, (datasets.List, datasets.Sequence)):
        return [math.nan] * feature.length
    return math.nan if feature.dtype.startswith("float") else NO_CLASS


def texts_of(ds: datasets.Dataset) -> list[str]:
    """Every text of `ds`: the first texts, then the second texts of a pair task."""
    return list(ds["text"]) + (list(ds["text_pair"]) if "text_pair" in ds.column_names else [])


def words_of(texts) -> list[str]:
    """Lower-cased letters of every whitespace-separated word (the keys of a neighbour table)."""
    return sorted({w.strip(PUNCTUATION).lower() for text in texts for w in text.split()})


def perturb(words: list[str], vocabulary: list[str], rng: random.Random, rate: float = 0.15,
            neighbours: dict[str, list[str]] | None = None) -> list[str]:
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
            out[i] = _replacement(out[i], vocabulary, neighbours, rng)
    return out


def augment(ds: datasets.Dataset, copies: int, seed: int = 0, rate: float = 0.15,
            neighbours: dict[str, list[str]] | None = None) -> datasets.Dataset:
    """`ds` followed by `copies` perturbed copies of each row, without gold labels.

    Pair tasks: each copy perturbs one of the two texts, chosen at random. `neighbours`
    (embedding_neighbours) makes replacements nearby words instead of random ones."""
    if copies <= 0:
        return ds
    rng = random.Random(seed)
    has_pair = "text_pair" in ds.column_names
    vocabulary = sorted({w for text in texts_of(ds) for w in text.split()})
    rows = {name: [] for name in ds.column_names}
    for row in ds:
        for _ in range(copies):
            first = not has_pair or rng.random() < 0.5
            key = "text" if first else "text_pair"
            new = dict(row)
            new[key] = " ".join(perturb(row[key].split(), vocabulary, rng, rate, neighbours))
            new["label"] = no_label(ds.features)
            for name in rows:
                rows[name].append(new[name])
    copies_ds = datasets.Dataset.from_dict(rows, features=ds.features)
    return datasets.concatenate_datasets([ds, copies_ds])


def mine_pairs(ds: datasets.Dataset, per_row: int, seed: int = 0, nearest: int = 10) -> datasets.Dataset:
    """`per_row` new pairs per row of a pair task, without gold labels, made from the task's own sentences.

    Each new pair is one of the row's two texts with one of its `nearest` most similar other sentences
    of `ds` by TF-IDF cosine (never the row's own partner): unseen pairs spread over the whole range of
    similarity, for the teacher to score. This is Augmented SBERT's sampling of sentence pairs by lexical
    search (Thakur et al. 2021, BM25 there), used here to widen the student's transfer set."""
    if "text_pair" not in ds.column_names:
        raise ValueError("mined pairs need a pair task (columns text and text_pair)")
    if per_row <= 0 or len(ds) == 0:
        return ds.select([])
    from sklearn.feature_extraction.text import TfidfVectorizer

    pool = sorted(set(texts_of(ds)))
    index = {text: i for i, text in enumerate(pool)}
    vectors = TfidfVectorizer(sublinear_tf=True).fit_transform(pool)  # rows unit length: dot = cosine
    rng = random.Random(seed)
    anchors = [(row["text"], row["text_pair"]) if rng.random() < 0.5 else (row["text_pair"], row["text"])
               for row in ds for _ in range(per_row)]
    wanted = sorted({index[a] for a, _ in anchors})
    candidates = {}
    for start in range(0, len(wanted), 1024):
        rows = wanted[start:start + 1024]
        sims = (vectors[rows] @ vectors.T).toarray()  # (chunk, pool)
        sims[range(len(rows)), rows] = -1  # not the sentence itself
        top = (-sims).argsort(axis=1, kind="stable")[:, :nearest + 1]
        candidates.update(zip(rows, top.tolist()))
    firsts, seconds = [], []
    for anchor, partner in anchors:
        i = index[anchor]
        options = [pool[j] for j in candidates[i] if j != i and pool[j] != partner][:nearest]  # a small pool: self too
        if options:
            firsts.append(anchor)
            seconds.append(rng.choice(options))
    rows = {"text": firsts, "text_pair": seconds, "label": [no_label(ds.features)] * len(firsts)}
    rows.update({name: [None] * len(firsts) for name in ds.column_names if name not in rows})
    return datasets.Dataset.from_dict(rows, features=ds.features)
