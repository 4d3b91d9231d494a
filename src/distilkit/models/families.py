"""The one table of encoder families: where each keeps its depth and its layer stack, the names of the
query/key/value projections in a layer's self-attention (None where the attention cannot be recomputed
from them, with the reason), the ONNX Runtime optimizer model type whose fusions fit its graph (None: no
fusion, ORT's generic graph optimisations only), and the per-layer facts a student must keep.
Student construction, the layer losses, the attention recomputation and the ONNX export all read it."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


class FamilyError(UserError):
    """A teacher whose model_type is not in the family table, or a family a feature cannot serve."""


@dataclass(frozen=True)
class Family:
    depth_attr: str  # config attribute holding the number of layers
    layer_stack: str  # the layer list inside the base model (also the state-dict prefix of the layers)
    attention_qkv: tuple[str, str, str] | None  # query, key, value projections inside one layer
    ort_model_type: str | None  # onnxruntime.transformers.optimizer MODEL_TYPES key; None: not fused
    no_attention: str = ""  # why the attention cannot be recomputed from the projections (attention_qkv None)
    layer_kinds: str | None = None  # config list with one entry per layer (kept for the copied layers)
    first_layer_fixed: bool = False  # layer 0 is built differently: a student starts with it and uses it only there


_BERT_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
_BERT_LIKE = Family("num_hidden_layers", "encoder.layer", _BERT_QKV, "bert")

FAMILIES = {
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    # ORT has no DistilBERT or MPNet model type; the BERT fusions match their graphs (checked on export).
    "distilbert": Family("n_layers", "transformer.layer", ("attention.q_lin", "attention.k_lin", "attention.v_lin"),
                         "bert"),
    "mpnet": Family("num_hidden_layers", "encoder.layer", None, "bert",
                    no_attention="a relative position bias is added to its attention scores"),
    "deberta": Family("num_hidden_layers", "encoder.layer", None, None,
                      no_attention="its attention is disentangled (content and relative-position terms)"),
    "deberta-v2": Family("num_hidden_layers", "encoder.layer", None, None,
                         no_attention="its attention is disentangled (content and relative-position terms)"),
    # ModernBERT: fused Wqkv, rotary positions applied to queries and keys, and layers alternating between
    # global and sliding-window (local) attention (config.layer_types); layer 0 has no attention norm.
    "modernbert": Family("num_hidden_layers", "layers", None, None,
                         no_attention="rotary positions and sliding-window masks are applied after the projections",
                         layer_kinds="layer_types", first_layer_fixed=True),
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


def attention_families() -> list[str]:
    """The model types whose attention can be recomputed (attention losses, --recipe headless)."""
    return sorted(name for name, family in FAMILIES.items() if family.attention_qkv)


def check_attention(config, what: str) -> Family:
    """The family of `config`, or a FamilyError when `what` (a loss or recipe) needs its attention recomputed
    and the family's cannot be."""
    family = family_of(config)
    if family.attention_qkv is None:
        raise FamilyError(f"{what} recomputes the attention from the query and key projections, which a "
                          f"{config.model_type} model does not allow ({family.no_attention}); supported: "
                          f"{', '.join(attention_families())}")
    return family
