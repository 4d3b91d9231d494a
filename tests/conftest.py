"""Fixtures: tiny random BERT teachers with a tiny tokenizer, tiny GLUE-layout data, the shared data."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("DISTILKIT_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = "good great fine nice bad awful poor dull movie film plot story actor the a was is very not".split()
POSITIVE = {"good", "great", "fine", "nice"}


def shared_glue_dir() -> Path | None:
    env = os.environ.get("DISTILKIT_GLUE_DIR")
    candidates = ([Path(env)] if env else []) + [Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"]
    return next((c for c in candidates if c.is_dir()), None)


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    found = shared_glue_dir()
    if found is None:
        pytest.skip("../shared/data/glue not found: these tests need the shared GLUE data beside the checkout")
    return found


def make_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    assert tokenizer.convert_tokens_to_ids("movie") == vocab.index("movie"), "tiny vocabulary not loaded"
    return tokenizer


def tiny_bert_config(**overrides):
    from transformers import BertConfig

    config = dict(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    config.update(overrides)
    return BertConfig(**config)


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A random-weight 4-layer BERT encoder (no head) saved with its tokenizer."""
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_teacher")
    tokenizer = make_tokenizer(folder)
    BertModel(tiny_bert_config()).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def sentences(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))]
        rows.append((" ".join(words), int(sum(w in POSITIVE for w in words) > 0)))
    return rows


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory) -> Path:
    """A glue_data-layout folder with a small synthetic SST-2 (sentence<TAB>label)."""
    root = tmp_path_factory.mktemp("glue")
    (root / "SST-2").mkdir()
    for split, n, seed in (("train", 96, 1), ("dev", 32, 2)):
        lines = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in sentences(n, seed)]
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root
