"""Narrow students: a DistilBERT student made thinner (--hidden-size H, --intermediate-size I, optionally fewer
heads, --heads A), initialised by copying the teacher's most important dimensions exactly.

Three index sets are chosen by a score per dimension:
  - residual dims (H of them, shared by every layer);
  - per layer, the A heads (default: all) whose H / A best query/key/value dims score highest, and in each of them
    those dims, kept head by head, so heads stay heads (with A = H / teacher head size, whole heads: 256 wide = 8 of
    12 heads of 32 dims);
  - per layer, I FFN dims.
Two scores: by weight magnitude (`weight_scores`, no data needed), or from activations on a sample of the task's
training texts (`activation_scores`, Wanda-style: a weight's norm times its input's norm over tokens).
Every weight is the teacher student's weight at those rows and columns, unscaled (LayerNorm then normalises over
the kept dims only, so outputs differ from the wide model's: training recovers them).
"""

from __future__ import annotations

import re

import torch

from dataclasses import dataclass

from ..errors import ConfigError

_LAYER = re.compile(r"^(.*transformer\.layer\.(\d+)\.)(.*)$")


@dataclass(frozen=True)
class Width:
    """A narrower student's sizes: hidden (residual) size, FFN size, attention heads (None: the teacher's)."""

    hidden_size: int
    intermediate_size: int
    heads: int | None = None
    score_rows: int = 0  # training rows whose activations score the dims (0: weight magnitude)

    def to_dict(self) -> dict:
        """As recorded in distil.json (heads and score_rows only when set, so older records still match)."""
        return {"hidden_size": self.hidden_size, "intermediate_size": self.intermediate_size,
                **({"heads": self.heads} if self.heads else {}),
                **({"score_rows": self.score_rows} if self.score_rows else {})}


def _norm_rows(w: torch.Tensor) -> torch.Tensor:
    return w.float().norm(dim=1)


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, k).indices).values


def weight_scores(model) -> dict:
    """Importance by weight magnitude: {"hidden": per residual dim, "attention": [per layer, per q/k/v dim],
    "ffn": [per layer, per FFN dim]}. Residual: each embedding column's norm plus the norms of the rows that write
    into it (attention output, FFN output) in every layer; attention dim j: ||q_j||·||k_j|| + ||v_j||·||out_j||
    (weight rows, out's column); FFN dim j: ||lin1_j||·||lin2_j||."""
    base = model.base_model
    emb = base.embeddings
    residual = emb.word_embeddings.weight.float().norm(dim=0) + emb.position_embeddings.weight.float().norm(dim=0)
    attention, ffn = [], []
    for layer in base.transformer.layer:
        a, f = layer.attention, layer.ffn
        residual = residual + _norm_rows(a.out_lin.weight) + _norm_rows(f.lin2.weight)
        attention.append(_norm_rows(a.q_lin.weight) * _norm_rows(a.k_lin.weight)
                         + _norm_rows(a.v_lin.weight) * a.out_lin.weight.float().norm(dim=0))
        ffn.append(_norm_rows(f.lin1.weight) * f.lin2.weight.float().norm(dim=0))
    return {"hidden": residual, "attention": attention, "ffn": ffn}


def activation_norms(model, batches) -> dict:
    """L2 norms per dimension over every non-padding token of `batches` (dicts of input_ids and attention_mask),
    from one forward pass without gradients: "residual" (the embedding output and each layer's two LayerNorm
    outputs, norms summed), and per layer "q", "k" (q_lin, k_lin outputs), "context" (out_lin's input: the
    attention-weighted values) and "act" (lin2's input: the FFN activation)."""
    base, sums, mask = model.base_model, {}, {}

    def add(key, x) -> None:
        m = mask["now"].to(x.dtype)[..., None]
        sums[key] = sums.get(key, 0) + (x.detach().float() ** 2 * m).sum((0, 1))

    def out_hook(key):
        return lambda module, args, output: add(key, output)

    def in_hook(key):
        return lambda module, args: add(key, args[0])

    hooks = [base.embeddings.register_forward_hook(out_hook(("residual", -1, "emb")))]
    for i, layer in enumerate(base.transformer.layer):
        a = layer.attention
        hooks += [a.q_lin.register_forward_hook(out_hook(("q", i))), a.k_lin.register_forward_hook(out_hook(("k", i))),
                  a.out_lin.register_forward_pre_hook(in_hook(("context", i))),
                  layer.ffn.lin2.register_forward_pre_hook(in_hook(("act", i))),
                  layer.sa_layer_norm.register_forward_hook(out_hook(("residual", i, "sa"))),
                  layer.output_layer_norm.register_forward_hook(out_hook(("residual", i, "out")))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                mask["now"] = batch["attention_mask"]
                base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    if not sums:
        raise ConfigError("no rows to score the narrow student's dimensions on")
    norms = {key: value.sqrt() for key, value in sums.items()}
    layers = range(len(base.transformer.layer))
    return {"residual": sum(v for k, v in norms.items() if k[0] == "residual"),
            **{name: [norms[(name, i)] for i in layers] for name in ("q", "k", "context", "act")}}


def activation_scores(model, batches) -> dict:
    """Importance from activations on `batches` (Wanda: |weight| × ||input||₂ over tokens; Sun et al. 2024, "A
    Simple and Effective Pruning Approach for Large Language Models"), structured, as `weight_scores`'s dict:
    residual dim d: its summed norm (`activation_norms`); attention dim j: ||q_j||·||k_j|| + ||context_j||·||out_j||
    (activations, out's weight column); FFN dim j: ||activation_j||·||lin2 column j||."""
    norms = activation_norms(model, batches)
    attention, ffn = [], []
    for i, layer in enumerate(model.base_model.transformer.layer):
        out, lin2 = layer.attention.out_lin.weight.float(), layer.ffn.lin2.weight.float()
        attention.append(norms["q"][i] * norms["k"][i] + norms["context"][i] * out.norm(dim=0))
        ffn.append(norms["act"][i] * lin2.norm(dim=0))
    return {"hidden": norms["residual"], "attention": attention, "ffn": ffn}


def choose_dims(model, hidden_size: int, intermediate_size: int, heads: int | None = None,
                scores: dict | None = None) -> dict:
    """{"hidden": residual dims, "attention": [per layer], "ffn": [per layer]} (sorted teacher indices), the
    highest of `scores` (`activation_scores` or, by default, `weight_scores`)."""
    config = model.config
    old_heads, width = config.n_heads, config.dim
    if heads is not None and not 0 < heads <= old_heads:
        raise ConfigError(f"--heads must be in 1..{old_heads} (the teacher's heads), got {heads}")
    heads = heads or old_heads
    if hidden_size % heads:
        raise ConfigError(f"--hidden-size {hidden_size} must be a multiple of the {heads} attention heads")
    if not 0 < hidden_size <= width or not 0 < intermediate_size <= config.hidden_dim:
        raise ConfigError(f"--hidden-size must be in 1..{width} and --intermediate-size in 1..{config.hidden_dim}, "
                          f"got {hidden_size} and {intermediate_size}")
    if hidden_size // heads > width // old_heads:
        raise ConfigError(f"--hidden-size {hidden_size} over {heads} heads is {hidden_size // heads} dims a head, more "
                          f"than the teacher's {width // old_heads}: keep more heads (--heads)")
    scores = scores if scores is not None else weight_scores(model)
    per_head, old_head = hidden_size // heads, width // old_heads
    attention = []
    for score in scores["attention"]:
        by_head = score.view(old_heads, old_head)
        kept = _top(by_head.topk(per_head, dim=1).values.sum(1), heads)  # the heads whose best dims score highest
        attention.append(torch.cat([h * old_head + _top(by_head[h], per_head) for h in kept.tolist()]))
    return {"hidden": _top(scores["hidden"], hidden_size), "attention": attention,
            "ffn": [_top(score, intermediate_size) for score in scores["ffn"]]}


def _index(name: str, shape: tuple, dims: dict) -> tuple:
    """(row index or None, column index or None) of one DistilBERT parameter."""
    hidden = dims["hidden"]
    match = _LAYER.match(name)
    if match:
        i, rest = int(match.group(2)), match.group(3)
        att, ffn = dims["attention"][i], dims["ffn"][i]
        if re.match(r"attention\.[qkv]_lin\.", rest):
            return att, hidden if rest.endswith("weight") else None
        if rest.startswith("attention.out_lin."):
            return hidden, att if rest.endswith("weight") else None
        if rest.startswith("ffn.lin1."):
            return ffn, hidden if rest.endswith("weight") else None
        if rest.startswith("ffn.lin2."):
            return hidden, ffn if rest.endswith("weight") else None
        if "layer_norm" in rest:
            return hidden, None
    if name.endswith(("word_embeddings.weight", "position_embeddings.weight", "vocab_projector.weight",
                      "classifier.weight")) and not name.startswith("pre_classifier"):
        return None, hidden
    if name.endswith(("LayerNorm.weight", "LayerNorm.bias", "vocab_layer_norm.weight", "vocab_layer_norm.bias",
                      "pre_classifier.bias", "vocab_transform.bias")):
        return hidden, None
    if name.endswith(("pre_classifier.weight", "vocab_transform.weight")):
        return hidden, hidden
    if name.endswith(("classifier.bias", "vocab_projector.bias")):
        return None, None
    raise ConfigError(f"narrowing does not know the parameter {name} {tuple(shape)}")


def narrow_student(model, hidden_size: int, intermediate_size: int, heads: int | None = None,
                   batches=None) -> tuple[object, dict]:
    """(a new, narrower model of the same class, the chosen dims as lists) from a DistilBERT `model`;
    `heads` (None: the model's) attention heads are kept; the dims are scored by their activations on `batches`
    (dicts of input_ids and attention_mask), or by weight magnitude when None."""
    if model.config.model_type != "distilbert":
        raise ConfigError(f"--hidden-size/--intermediate-size narrow DistilBERT students (from BERT teachers); "
                          f"this student is {model.config.model_type}")
    scores = activation_scores(model, batches) if batches is not None else None
    dims = choose_dims(model, hidden_size, intermediate_size, heads, scores)
    config = model.config.__class__.from_dict({**model.config.to_dict(), "dim": hidden_size,
                                               "hidden_dim": intermediate_size, "n_heads": heads or model.config.n_heads})
    narrow = type(model)(config)
    state = {}
    for name, tensor in model.state_dict().items():
        rows, cols = _index(name, tensor.shape, dims)
        value = tensor
        if rows is not None:
            value = value.index_select(0, rows)
        if cols is not None:
            value = value.index_select(1, cols)
        state[name] = value.clone()
    narrow.load_state_dict(state, strict=True)
    if hasattr(narrow, "tie_weights"):
        narrow.tie_weights()
    return narrow.eval(), {"hidden": dims["hidden"].tolist(), "attention": [a.tolist() for a in dims["attention"]],
                           "ffn": [f.tolist() for f in dims["ffn"]]}
