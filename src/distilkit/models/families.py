"""The one table of encoder families: where each keeps its depth and its layer stack, and the names of the
query/key/value projections in a layer's self-attention (None where the attention cannot be recomputed
from them). Student construction, the layer losses and the attention recomputation all read it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


class FamilyError(UserError):
    """A teacher whose model_type is not in the family table."""


@dataclass(frozen=True)
class Family:
    depth_attr: str  # config attribute holding the number of layers
    layer_stack: str  # the layer list inside the base model (also the state-dict prefix of the layers)
    attention_qkv: tuple[str, str, str] | None  # query, key, value projections inside one layer


_BERT_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")

FAMILIES = {
    "bert": Family("num_hidden_layers", "encoder.layer", _BERT_QKV),
    "roberta": Family("num_hidden_layers", "encoder.layer", _BERT_QKV),
    "xlm-roberta": Family("num_hidden_layers", "encoder.layer", _BERT_QKV),
    "camembert": Family("num_hidden_layers", "encoder.layer", _BERT_QKV),
    "electra": Family("num_hidden_layers", "encoder.layer", _BERT_QKV),
    "mpnet": Family("num_hidden_layers", "encoder.layer", None),
    "deberta": Family("num_hidden_layers", "encoder.layer", None),
    "deberta-v2": Family("num_hidden_layers", "encoder.layer", None),
    "distilbert": Family("n_layers", "transformer.layer", ("attention.q_lin", "attention.k_lin", "attention.v_lin")),
}


def family_of(config) -> Family:
    """The family of a model config, or a FamilyError naming its model_type and the supported ones."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise FamilyError(f"model_type {config.model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}")
    return family


def depth(config) -> int:
    """The number of transformer layers of a model config."""
    return int(getattr(config, family_of(config).depth_attr))
