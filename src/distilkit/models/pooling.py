"""Sentence-transformers pooling: how token states become one sentence vector, read from and written to a
folder's sentence-transformers files (modules.json → Transformer, Pooling[, Normalize]).

`pool` works on torch tensors and `pool_numpy` on numpy arrays (ONNX Runtime outputs); this module imports
neither torch nor transformers, so serving an exported embedding model needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import read_json, write_json
from ..errors import UserError
from ..hardware import version_of

POOLING_MODES = ("mean", "cls", "max")


ST_TRANSFORMER = "sentence_transformers.models.Transformer"


ST_POOLING = "sentence_transformers.models.Pooling"


ST_NORMALIZE = "sentence_transformers.models.Normalize"


_MODE_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}


_UNSUPPORTED_KEYS = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


class EmbedError(UserError):
    """An embedding model or setting that cannot be used, with what was expected."""


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector: mean, cls or max over real tokens; then L2-normalised?"""

    mode: str = "mean"
    normalize: bool = False

    def __post_init__(self):
        if self.mode not in POOLING_MODES:
            raise EmbedError(f"pooling {self.mode!r} is not supported: expected one of {', '.join(POOLING_MODES)}")


def is_embedding_model(model_dir: str | Path) -> bool:
    """A sentence-transformers folder: modules.json with a Pooling module."""
    path = Path(model_dir) / "modules.json"
    if not path.is_file():
        return False
    try:
        return any(str(m.get("type", "")).endswith(".Pooling") for m in read_json(path))
    except (ValueError, AttributeError):
        return False


def read_pooling(model_dir: str | Path) -> tuple[Pooling, str | None]:
    """The pooling of a model folder and a note to show the user when it had to be assumed.

    From modules.json (a Pooling module whose config.json sets exactly one of mean / cls / max; a
    Normalize module after it). A folder without modules.json or without a Pooling module gets
    mean pooling, not normalised, and the note says so; an unsupported pooling mode is an error.
    """
    folder = Path(model_dir)
    modules_path = folder / "modules.json"
    if not folder.is_dir() or not modules_path.is_file():
        return Pooling("mean", False), (f"{model_dir} has no sentence-transformers pooling config (modules.json): "
                                        "using mean pooling over tokens, not normalised")
    try:
        modules = read_json(modules_path)
    except ValueError as err:
        raise EmbedError(f"{modules_path}: not valid JSON ({err})") from None
    if not isinstance(modules, list):
        raise EmbedError(f"{modules_path}: expected a list of modules")
    normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    pool = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if pool is None:
        return Pooling("mean", normalize), (f"{modules_path} has no Pooling module: using mean pooling over tokens"
                                            f"{', normalised' if normalize else ', not normalised'}")
    config_path = folder / pool.get("path", "") / "config.json"
    if not config_path.is_file():
        return Pooling("mean", normalize), f"{config_path} not found: using mean pooling over tokens"
    config = read_json(config_path)
    if isinstance(config.get("pooling_mode"), str):  # newer sentence-transformers write the mode by name
        modes = [{"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max"}.get(config["pooling_mode"],
                                                                                        config["pooling_mode"])]
    else:
        modes = [mode for mode, key in _MODE_KEYS.items() if config.get(key)]
    unsupported = [k for k in _UNSUPPORTED_KEYS if config.get(k)]
    if unsupported or len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise EmbedError(f"{config_path}: pooling {modes + unsupported} is not supported: "
                         "expected exactly one of mean, cls or max")
    return Pooling(modes[0], normalize), None


def pool(hidden, mask, mode: str):
    """(batch, seq, dim) token states → (batch, dim): mean or max over real tokens, or the first token.

    As sentence-transformers' Pooling: padded positions are left out of the mean and set to -1e9 for max.
    """
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, -1e9).max(1).values
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def pool_numpy(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """`pool` (then L2 normalisation when the pooling asks) on numpy arrays, for ONNX Runtime outputs."""
    if pooling.mode == "cls":
        out = hidden[:, 0]
    elif pooling.mode == "max":
        out = np.where(mask[..., None] > 0, hidden, np.float32(-1e9)).max(1)
    else:
        m = mask[..., None].astype(hidden.dtype)
        out = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    out = out.astype(np.float32)
    if pooling.normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def write_sentence_transformers_files(folder: Path, pooling: Pooling, dim: int, max_seq_length: int) -> None:
    """modules.json (Transformer → Pooling [→ Normalize]), 1_Pooling/config.json, sentence_bert_config.json,
    config_sentence_transformers.json, beside a save_pretrained model and tokenizer in `folder`."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING}]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_NORMALIZE})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    write_json(folder / "modules.json", modules)
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim,
        **{key: pooling.mode == mode for mode, key in _MODE_KEYS.items()},
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True})
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"transformers": version_of("transformers"), "pytorch": version_of("torch")},
        "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})


