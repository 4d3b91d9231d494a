"""Build a student from a teacher: fewer layers, weights copied from chosen teacher layers.

BERT teachers become Hugging Face's own DistilBERT (token-type embeddings and pooler dropped,
token type 0 folded into the position embeddings), as in Sanh et al. 2019. Other families keep
their class with fewer layers; the family table (families.py) says where the layer stack is, which
per-layer config list travels with the copied layers (ModernBERT's local/global attention kinds) and
whether layer 0 is built differently (ModernBERT's has no attention norm, so a student starts with it).
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import (
    DistilBertConfig,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    DistilBertModel,
)

from ..errors import UserError
from .families import depth, family_of

# DistilBERT's own choice for a 12-layer teacher (Sanh et al. 2019, extract_distilbert.py).
DISTILBERT_12_LAYER_MAP = [0, 2, 4, 7, 9, 11]


# BERT layer parameter names → DistilBERT layer parameter names.
BERT_TO_DISTILBERT_LAYER = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


class StudentError(UserError):
    """A layer choice or teacher the student builder cannot use."""


def choose_layers(n_teacher: int, spec: str | list[int] | None = None, num_layers: int | None = None) -> list[int]:
    """Teacher layer indices the student's layers are copied from.

    spec: None or "alternate" (every other layer; DistilBERT's 0,2,4,7,9,11 for 12 layers),
    "first-k" / "first-3", "uniform" / "uniform-3" (evenly spaced, first and last included),
    or an explicit list such as "0,1,5". `num_layers` defaults to half the teacher's depth.
    """
    if isinstance(spec, str):
        spec = spec.strip().lower()
        match = re.fullmatch(r"(first|uniform)(?:-(\d+))?", spec)
        if match and match.group(2):
            spec, num_layers = match.group(1), int(match.group(2))
        elif spec == "first-k":
            spec = "first"
    k = num_layers if num_layers is not None else max(1, n_teacher // 2)
    if isinstance(spec, str) and spec not in ("alternate", "first", "uniform"):
        try:
            spec = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError as err:
            raise StudentError(
                f"--layers {spec!r}: expected alternate, first-k, uniform or a list like 0,2,4"
            ) from err
    if isinstance(spec, list):
        layers = list(spec)
    elif k > n_teacher:
        raise StudentError(f"a student of {k} layers is deeper than its teacher ({n_teacher} layers)")
    elif k < 1:
        raise StudentError(f"a student needs at least 1 layer, got {k}")
    elif spec in (None, "alternate"):
        layers = DISTILBERT_12_LAYER_MAP[:k] if n_teacher == 12 and k == 6 else list(range(0, n_teacher, 2))[:k]
        if len(layers) < k:  # more than half the depth: fill with the remaining layers, in order
            rest = [i for i in range(n_teacher) if i not in layers]
            layers = sorted(layers + rest[: k - len(layers)])
    elif spec == "first":
        layers = list(range(k))
    else:  # uniform
        layers = [round(i * (n_teacher - 1) / max(1, k - 1)) for i in range(k)] if k > 1 else [n_teacher - 1]
    if not layers:
        raise StudentError("--layers gave no layers")
    if len(layers) > n_teacher:
        raise StudentError(f"a student of {len(layers)} layers is deeper than its teacher ({n_teacher} layers)")
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if bad:
        raise StudentError(f"--layers {bad} out of range: the teacher has layers 0..{n_teacher - 1}")
    return layers


def choose_layer_map(config, spec: str | list[int] | None = None, num_layers: int | None = None) -> list[int]:
    """`choose_layers` for a teacher config: its family is checked first (an unsupported one is refused by
    name), then the layer choice against the family's rules."""
    layers = choose_layers(depth(config), spec, num_layers)
    check_layer_map(config, layers)
    return layers


def check_layer_map(config, layers: list[int]) -> None:
    """Refuse a layer map the teacher's family cannot build (a family whose layer 0 differs from the others
    needs it first, and only there)."""
    if family_of(config).first_layer_fixed and (layers[0] != 0 or 0 in layers[1:]):
        raise StudentError(f"--layers {','.join(map(str, layers))}: layer 0 of a {config.model_type} model is built "
                           "differently from the others (no attention norm), so a student's layers must start with "
                           "teacher layer 0 and use it only there (alternate, first-k and uniform all do)")


def build_student(teacher, layers: list[int], keep_class: bool = False):
    """Return a student model whose layer j is a copy of teacher layer layers[j].

    A BERT teacher gives a DistilBERT student (unless keep_class); the head follows the teacher:
    sequence classifier → DistilBertForSequenceClassification (pooler.dense → pre_classifier,
    classifier copied), masked LM → DistilBertForMaskedLM, bare encoder → DistilBertModel.
    """
    config = teacher.config
    check_layer_map(config, layers)  # raises for unsupported families
    if config.model_type == "bert" and not keep_class:
        return _bert_to_distilbert(teacher, layers)
    return _same_class_fewer_layers(teacher, layers)


def _same_class_fewer_layers(teacher, layers: list[int]):
    family = family_of(teacher.config)
    config = copy.deepcopy(teacher.config)
    setattr(config, family.depth_attr, len(layers))
    if family.layer_kinds:  # each copied layer keeps its kind (e.g. global or sliding-window attention)
        kinds = getattr(teacher.config, family.layer_kinds)
        setattr(config, family.layer_kinds, [kinds[i] for i in layers])
    student = type(teacher)(config)
    pattern = re.compile(rf"^((?:.*\.)?{re.escape(family.layer_stack)})\.(\d+)\.(.*)$")
    state = {}
    for name, tensor in teacher.state_dict().items():
        match = pattern.match(name)
        if match is None:
            state[name] = tensor.clone()
            continue
        old = int(match.group(2))
        for new, src in enumerate(layers):  # a teacher layer may be used twice
            if src == old:
                state[f"{match.group(1)}.{new}.{match.group(3)}"] = tensor.clone()
    student.load_state_dict(state, strict=True)
    return student


def distilbert_config_from_bert(config, n_layers: int) -> DistilBertConfig:
    """A DistilBERT config with the BERT teacher's width, vocabulary and labels."""
    return DistilBertConfig(
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_position_embeddings,
        sinusoidal_pos_embds=False,
        n_layers=n_layers,
        n_heads=config.num_attention_heads,
        dim=config.hidden_size,
        hidden_dim=config.intermediate_size,
        dropout=config.hidden_dropout_prob,
        attention_dropout=config.attention_probs_dropout_prob,
        activation=config.hidden_act,
        initializer_range=config.initializer_range,
        seq_classif_dropout=config.hidden_dropout_prob,
        pad_token_id=config.pad_token_id,
        num_labels=config.num_labels,
        id2label=dict(config.id2label),
        label2id=dict(config.label2id),
        problem_type=config.problem_type,
    )


def _bert_to_distilbert(teacher, layers: list[int]):
    config = distilbert_config_from_bert(teacher.config, len(layers))
    base_prefix = f"{teacher.base_model_prefix}." if teacher.base_model is not teacher else ""
    source = teacher.state_dict()

    def get(name: str) -> torch.Tensor:
        return source[base_prefix + name].clone()

    state = {
        "embeddings.word_embeddings.weight": get("embeddings.word_embeddings.weight"),
        # DistilBERT has no token types: fold type 0 into every position, so single-segment input is unchanged.
        "embeddings.position_embeddings.weight": get("embeddings.position_embeddings.weight")
        + get("embeddings.token_type_embeddings.weight")[0],
        "embeddings.LayerNorm.weight": get("embeddings.LayerNorm.weight"),
        "embeddings.LayerNorm.bias": get("embeddings.LayerNorm.bias"),
    }
    for new, old in enumerate(layers):
        for bert_name, distil_name in BERT_TO_DISTILBERT_LAYER.items():
            for kind in ("weight", "bias"):
                state[f"transformer.layer.{new}.{distil_name}.{kind}"] = get(
                    f"encoder.layer.{old}.{bert_name}.{kind}"
                )

    arch = type(teacher).__name__
    if arch.endswith("ForSequenceClassification"):
        student = DistilBertForSequenceClassification(config)
        state = {f"distilbert.{k}": v for k, v in state.items()}
        state["classifier.weight"] = source["classifier.weight"].clone()
        state["classifier.bias"] = source["classifier.bias"].clone()
        if "bert.pooler.dense.weight" in source:
            state["pre_classifier.weight"] = source["bert.pooler.dense.weight"].clone()
            state["pre_classifier.bias"] = source["bert.pooler.dense.bias"].clone()
        missing = {"pre_classifier.weight", "pre_classifier.bias"} - set(state)
    elif arch.endswith("ForMaskedLM") or arch.endswith("ForPreTraining"):
        student = DistilBertForMaskedLM(config)
        state = {f"distilbert.{k}": v for k, v in state.items()}
        state["vocab_transform.weight"] = source["cls.predictions.transform.dense.weight"].clone()
        state["vocab_transform.bias"] = source["cls.predictions.transform.dense.bias"].clone()
        state["vocab_layer_norm.weight"] = source["cls.predictions.transform.LayerNorm.weight"].clone()
        state["vocab_layer_norm.bias"] = source["cls.predictions.transform.LayerNorm.bias"].clone()
        state["vocab_projector.weight"] = state["distilbert.embeddings.word_embeddings.weight"]
        state["vocab_projector.bias"] = source["cls.predictions.bias"].clone()
        missing = set()
    else:
        student = DistilBertModel(config)
        missing = set()
    result = student.load_state_dict(state, strict=False)
    unexpected = set(result.unexpected_keys)
    still_missing = set(result.missing_keys) - missing - {"vocab_projector.weight"}
    if unexpected or still_missing:
        raise StudentError(f"weight copy mismatch: missing {sorted(still_missing)}, unexpected {sorted(unexpected)}")
    if hasattr(student, "tie_weights"):
        student.tie_weights()
    return student
