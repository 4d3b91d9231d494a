"""General distillation on raw text with DistilBERT's triple loss, on `transformers.Trainer`.

    loss = α_ce·L_ce + α_mlm·L_mlm + α_cos·L_cos (+ α_mse·L_mse)       defaults 5 / 2 / 1 (/ 0), T = 2

The teacher is frozen, in eval mode, on the student's device and runs under `torch.no_grad`.
Batches are only padded by the collator and masked (data/masking.py) inside the training step, by a
generator seeded from (seed, optimizer step, micro-batch, rank): the masks do not depend on RNG history,
so a run resumed from a checkpoint, or run under `torchrun`, masks exactly as an uninterrupted one.
The data order is likewise seeded by (seed, epoch). Dropout uses the global RNG, seeded seed + rank,
which the Trainer checkpoints and restores (per process).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import torch
from transformers import Trainer

from .. import losses
from ..data.masking import mask_tokens
from ..errors import ConfigError
from .common import EpochSampler  # noqa: F401  (its home before it served the task trainers too)
from .common import LogAtCheckpoints, add_loss_terms, attention_qkv, epoch_sampler, pad_batch


@dataclass(kw_only=True)  # configs are built by keyword
class TripleLossConfig:
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    alpha_mse: float = 0.0
    temperature: float = 2.0

    def check(self) -> None:
        weights = (self.alpha_ce, self.alpha_mlm, self.alpha_cos, self.alpha_mse)
        if any(a < 0 for a in weights) or sum(weights) == 0:
            raise ConfigError(f"loss weights --alpha-ce/--alpha-mlm/--alpha-cos/--alpha-mse = {weights}: "
                             "expected non-negative, not all zero")
        if self.temperature <= 0:
            raise ConfigError(f"--temperature {self.temperature}: expected > 0")


class PaddingCollator:
    """Pads a list of token sequences into `input_ids` + `attention_mask` (no masking)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        ids, mask = pad_batch([f["input_ids"] for f in features], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask}


class Masker:
    """Masks a padded batch like DistilBERT (15%, 80/10/10, count^-0.7); never special tokens or padding."""

    def __init__(self, tokenizer, weights: torch.Tensor, rate: float = 0.15):
        self.weights, self.rate = weights, rate
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.mask_id, self.vocab_size = tokenizer.mask_token_id, len(tokenizer)

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        ids, attention = batch["input_ids"].cpu(), batch["attention_mask"].cpu()
        candidates = attention.bool() & ~torch.isin(ids, self.special)
        masked, labels = mask_tokens(ids, candidates, self.weights, self.mask_id, self.vocab_size, self.rate,
                                     generator=generator)
        device = batch["input_ids"].device
        return {**batch, "input_ids": masked.to(device), "labels": labels.to(device)}


class MaskingCollator:
    """Pads and masks with its own generator: fixed masks for evaluation and head fitting."""

    def __init__(self, tokenizer, weights: torch.Tensor, rate: float = 0.15, seed: int | None = None):
        self.pad = PaddingCollator(tokenizer.pad_token_id)
        self.mask = Masker(tokenizer, weights, rate)
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, features: list[dict]) -> dict:
        return self.mask(self.pad(features), self.generator)


def mask_seed(seed: int, step: int, micro_batch: int, rank: int) -> int:
    """A 64-bit generator seed for the masks of one micro-batch of one process."""
    digest = hashlib.sha256(f"mask/{seed}/{step}/{micro_batch}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class GeneralDistillationTrainer(Trainer):
    """`Trainer` whose loss is the triple loss against a frozen masked-LM teacher.

    Batches without `labels` are masked by `masker` in `training_step` (see the module docstring).
    """

    def __init__(self, *args, teacher, loss_config: TripleLossConfig, masker: Masker | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        loss_config.check()
        self.teacher = teacher.eval().requires_grad_(False).to(self.args.device)
        self.loss_config = loss_config
        self.masker = masker
        self.model_accepts_loss_kwargs = False  # compute_loss averages per micro-batch: scale by accumulation
        self.last_loss = float("nan")  # this process's loss on its last micro-batch
        self._terms = defaultdict(list)
        self._micro = (-1, 0)  # (optimizer step, micro-batch index within it)
        self.add_callback(LogAtCheckpoints())

    def _get_train_sampler(self, train_dataset=None):
        return epoch_sampler(self.args, train_dataset if train_dataset is not None else self.train_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if "labels" not in inputs:
            if self.masker is None:
                raise ValueError("batches without labels need a masker (GeneralDistillationTrainer(masker=...))")
            step, micro = self._micro
            self._micro = (self.state.global_step, micro + 1 if step == self.state.global_step else 0)
            seed = mask_seed(self.args.data_seed, *self._micro, self.args.process_index)
            inputs = self.masker(inputs, torch.Generator().manual_seed(seed))
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        c = self.loss_config
        hidden = c.alpha_cos > 0  # L_cos needs the last hidden states (of equal width)
        out = model(**inputs, output_hidden_states=hidden)
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=hidden)
        terms = losses.triple_loss_terms(out.logits, t_out.logits, labels,
                                         out.hidden_states[-1] if hidden else None,
                                         t_out.hidden_states[-1] if hidden else None,
                                         inputs["attention_mask"], c.temperature)
        loss = losses.weighted_sum(terms, {"ce": c.alpha_ce, "mlm": c.alpha_mlm, "cos": c.alpha_cos,
                                           "mse": c.alpha_mse})
        for name, value in terms.items():
            self._terms[f"loss_{name}"].append(value.item())
        self.last_loss = loss.item()
        return (loss, out) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        add_loss_terms(logs, self._terms)
        super().log(logs, *args, **kwargs)


# --- the headless recipe: no masking, no MLM head ---------------------------------------------------
#
#     loss = α_attn·L_attn + α_value·L_value + α_cos·L_cos                defaults 1 / 1 / 1
#
# L_attn: KL(teacher‖student) between the last layers' attention distributions, L_value: between their
# value relations softmax(V·Vᵀ/√d_k) (MiniLM, Wang et al. 2020), both per head over real query tokens;
# L_cos: 1 − cos of the last hidden states on real tokens. Both models see the plain text. The attention
# is recomputed from the last layer's input with that layer's own projections rather than taken from
# `output_attentions`: that needs eager attention and, in training, returns the weights after dropout.


@dataclass(kw_only=True)  # configs are built by keyword
class HeadlessLossConfig:
    alpha_attn: float = 1.0
    alpha_value: float = 1.0
    alpha_cos: float = 1.0

    def check(self) -> None:
        weights = (self.alpha_attn, self.alpha_value, self.alpha_cos)
        if any(a < 0 for a in weights) or sum(weights) == 0:
            raise ConfigError(f"loss weights --alpha-attn/--alpha-value/--alpha-cos = {weights}: "
                             "expected non-negative, not all zero")


def headless_terms(student, teacher, inputs: dict, value: bool = True, cos: bool = True,
                   student_core=None) -> tuple[dict[str, torch.Tensor], object]:
    """The unweighted headless terms (attn, and value / cos when asked) and the student's output.

    `student` is called (it may be DDP-wrapped); `student_core` is the bare model, for its projections.
    """
    core = student_core if student_core is not None else student
    mask = inputs["attention_mask"]
    out = student(**inputs, output_hidden_states=True)
    with torch.no_grad():
        t_out = teacher(**inputs, output_hidden_states=True)
        tq, tk, tv = attention_qkv(teacher, t_out.hidden_states[-2])
    sq, sk, sv = attention_qkv(core, out.hidden_states[-2])
    terms = {"attn": losses.attention_kl(losses.self_attention_relation(sq, sk, mask),
                                         losses.self_attention_relation(tq, tk, mask), mask)}
    if value:
        terms["value"] = losses.value_relation_kl(sv, tv, mask)
    if cos:
        terms["cos"] = losses.hidden_cosine(out.hidden_states[-1], t_out.hidden_states[-1], mask)
    return terms, out


class HeadlessDistillationTrainer(GeneralDistillationTrainer):
    """`Trainer` whose loss is the headless recipe against a frozen encoder: no masking, no head.

    The data order, checkpoints and resume are the parent's (seeded `EpochSampler`).
    """

    def __init__(self, *args, teacher, loss_config: HeadlessLossConfig, **kwargs):
        super().__init__(*args, teacher=teacher, loss_config=loss_config, masker=None, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        return Trainer.training_step(self, model, inputs, num_items_in_batch)  # the plain text, never masked

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        c = self.loss_config
        terms, out = headless_terms(model, self.teacher, inputs, value=c.alpha_value > 0, cos=c.alpha_cos > 0,
                                    student_core=self.accelerator.unwrap_model(model))
        loss = losses.weighted_sum(terms, {"attn": c.alpha_attn, "value": c.alpha_value, "cos": c.alpha_cos})
        if not c.alpha_cos:  # zero gradients for the last layer's output side, which DDP (find_unused_parameters off) awaits
            loss = loss + 0.0 * out.hidden_states[-1].sum()
        for name, value in terms.items():
            self._terms[f"loss_{name}"].append(value.item())
        self.last_loss = loss.item()
        return (loss, out) if return_outputs else loss
