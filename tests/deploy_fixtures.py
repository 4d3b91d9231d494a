"""Fixtures for the deploy tests: tiny random classifiers (a DistilBERT student, a BERT pair model) and a tiny
random sentence-embedding model exported to ONNX.

Weights are drawn with a large init range and the logits centred, so that predictions differ from text
to text (a default tiny random model gives every text the same label, and label checks would prove nothing).
Import the fixtures into a test module: `from .deploy_fixtures import tiny_student  # noqa: F401`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import WORDS, make_tokenizer, sentences, tiny_bert_config

SST2_LABELS = {0: "negative", 1: "positive"}
MRPC_LABELS = {0: "not_equivalent", 1: "equivalent"}


def make_classifier(folder: Path, kind: str = "distilbert", task: str = "sst2", seed: int = 0) -> Path:
    """Save a random `kind` (distilbert | bert) classifier for a GLUE `task` the way the pipeline does."""
    import torch
    from transformers import BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    from distilkit.models.loading import save_model

    torch.manual_seed(seed)
    labels = MRPC_LABELS if task == "mrpc" else SST2_LABELS
    maps = dict(num_labels=2, id2label=labels, label2id={v: k for k, v in labels.items()}, initializer_range=0.3)
    if kind == "bert":
        model = BertForSequenceClassification(tiny_bert_config(num_hidden_layers=2, **maps))
    else:
        config = DistilBertConfig(vocab_size=len(WORDS) + 5, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                                  max_position_embeddings=64, **maps)
        model = DistilBertForSequenceClassification(config)
    tokenizer = make_tokenizer(folder)
    with torch.no_grad():  # centre the logits so both labels occur
        texts = [s for s, _ in sentences(64, seed=seed + 100)]
        pairs = texts[::-1] if task == "mrpc" else None
        model.classifier.bias -= model.eval()(**tokenizer(texts, pairs, padding=True, return_tensors="pt")).logits.mean(0)
    save_model(model.eval(), tokenizer, folder, {"stage": "test", "task": task, "config": {"max_length": 32}})
    return folder


def make_embedding_teacher(folder: Path, mode: str = "mean", normalize: bool = True, seed: int = 0) -> Path:
    """A random tiny BERT saved as a sentence-transformers folder (large init range: texts differ)."""
    import torch
    from transformers import BertModel

    from distilkit.models.pooling import Pooling, write_sentence_transformers_files

    torch.manual_seed(seed)
    tokenizer = make_tokenizer(folder)
    BertModel(tiny_bert_config(initializer_range=0.3), add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_sentence_transformers_files(folder, Pooling(mode, normalize), 32, 64)
    return folder


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    """A DistilBERT SST-2 classifier folder, exported to ONNX fp32 and int8 (unchecked)."""
    from distilkit.deploy.export import export_onnx

    folder = make_classifier(tmp_path_factory.mktemp("deploy") / "student")
    export_onnx(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pair_model(tmp_path_factory) -> Path:
    """A BERT MRPC (text pair) classifier folder, torch only."""
    return make_classifier(tmp_path_factory.mktemp("deploy") / "pair", kind="bert", task="mrpc", seed=1)


@pytest.fixture(scope="session")
def dev_texts() -> list[str]:
    return [s for s, _ in sentences(40, seed=7)]


@pytest.fixture(scope="session")
def tiny_embedding_onnx(tmp_path_factory) -> Path:
    """A tiny sentence-embedding model (mean pooling, normalised) exported to an ONNX-only folder: fp32 and int8,
    config, tokenizer and pooling files, no safetensors weights (unchecked)."""
    from distilkit.deploy.export import export_onnx

    root = tmp_path_factory.mktemp("embed_deploy")
    out = root / "onnx"
    export_onnx(make_embedding_teacher(root / "model"), out)
    return out
