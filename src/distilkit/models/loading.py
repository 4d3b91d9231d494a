"""Loading and saving models in PyTorch: the head a folder was saved with, safetensors only, no remote code."""

from __future__ import annotations

import inspect
from pathlib import Path

from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from ..artifacts import write_json
from ..hardware import versions
from .folders import load_config


def load_encoder(name_or_path: str):
    """The bare encoder (no head) in eval mode."""
    return AutoModel.from_pretrained(name_or_path, use_safetensors=True, trust_remote_code=False).eval()


def load_classifier(name_or_path: str, num_labels: int | None = None, id2label: dict | None = None):
    """A sequence classifier; a new head is created when the folder has none (or a different size)."""
    kwargs = {}
    if num_labels is not None:
        kwargs["num_labels"] = num_labels
        kwargs["ignore_mismatched_sizes"] = True
    if id2label is not None:
        kwargs["id2label"] = {int(k): v for k, v in id2label.items()}
        kwargs["label2id"] = {v: int(k) for k, v in id2label.items()}
    return AutoModelForSequenceClassification.from_pretrained(
        name_or_path, use_safetensors=True, trust_remote_code=False, **kwargs
    )


def load_any(path: str):
    """A model with the head its folder was saved with (classifier, masked LM, or bare encoder)."""
    archs = load_config(path).architectures or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return load_classifier(path)
    if any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs):
        return AutoModelForMaskedLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    return AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False)


def model_shape(path: str | Path, embedding: bool = False):
    """The model a folder's config describes, on the meta device (shapes, no weights): what an export-only folder
    (ONNX / OpenVINO files, no safetensors) has parameters of."""
    import torch

    config = load_config(str(path))
    with torch.device("meta"):
        return (AutoModel if embedding else AutoModelForSequenceClassification).from_config(config)


def model_inputs(model) -> set[str]:
    """Names the model's forward accepts (DistilBERT takes no token_type_ids)."""
    return set(inspect.signature(model.forward).parameters)


def save_model(model, tokenizer, folder: Path, info: dict) -> None:
    """save_pretrained (safetensors) + tokenizer (only the inputs the model takes) + distil.json."""
    names = [n for n in tokenizer.model_input_names if n in model_inputs(model)]
    tokenizer.model_input_names = names
    tokenizer.init_kwargs["model_input_names"] = names  # so it is saved in tokenizer_config.json
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    write_json(Path(folder) / "distil.json", {**info, "versions": versions()})


def count_parameters(model) -> dict[str, int]:
    """Parameters: total, embedding (token/position/type embeddings and their LayerNorm), non-embedding."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." in f".{n}")
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
