"""General distillation on raw text with DistilBERT's triple loss, on `transformers.Trainer`.

    loss = α_ce·L_ce + α_mlm·L_mlm + α_cos·L_cos (+ α_mse·L_mse)       defaults 5 / 2 / 1 (/ 0), T = 2

The teacher is frozen, in eval mode, on the student's device and runs under `torch.no_grad`;
batches are masked on the fly (data/masking.py). Under `torchrun` the Trainer runs DDP unchanged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from transformers import Trainer

from .. import losses
from ..data.masking import mask_tokens
from .common import add_loss_terms


@dataclass
class TripleLossConfig:
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    alpha_mse: float = 0.0
    temperature: float = 2.0
    all_positions: bool = False  # L_ce on every real token instead of the masked ones

    def check(self) -> None:
        weights = (self.alpha_ce, self.alpha_mlm, self.alpha_cos, self.alpha_mse)
        if any(a < 0 for a in weights) or sum(weights) == 0:
            raise ValueError(f"loss weights {weights} (ce, mlm, cos, mse): expected non-negative, not all zero")
        if self.temperature <= 0:
            raise ValueError(f"temperature {self.temperature}: expected > 0")


class MaskingCollator:
    """Pads a list of token sequences and masks them like DistilBERT (15%, 80/10/10, count^-0.7)."""

    def __init__(self, tokenizer, weights: torch.Tensor, rate: float = 0.15, seed: int | None = None):
        self.tokenizer, self.weights, self.rate = tokenizer, weights, rate
        self.special = torch.tensor(sorted(set(tokenizer.all_special_ids)))
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, features: list[dict]) -> dict:
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            mask[i, : len(f["input_ids"])] = 1
        candidates = mask.bool() & ~torch.isin(ids, self.special)
        masked, labels = mask_tokens(ids, candidates, self.weights, self.tokenizer.mask_token_id,
                                     len(self.tokenizer), self.rate, generator=self.generator)
        return {"input_ids": masked, "attention_mask": mask, "labels": labels}


class GeneralDistillationTrainer(Trainer):
    """`Trainer` whose loss is the triple loss against a frozen masked-LM teacher."""

    def __init__(self, *args, teacher, loss_config: TripleLossConfig, **kwargs):
        super().__init__(*args, **kwargs)
        loss_config.check()
        self.teacher = teacher.eval().requires_grad_(False).to(self.args.device)
        self.loss_config = loss_config
        self._terms = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        out = model(**inputs, output_hidden_states=True)
        with torch.no_grad():
            t_out = self.teacher(**inputs, output_hidden_states=True)
        c = self.loss_config
        terms = losses.triple_loss_terms(out.logits, t_out.logits, labels, out.hidden_states[-1],
                                         t_out.hidden_states[-1], inputs["attention_mask"], c.temperature,
                                         c.all_positions)
        loss = c.alpha_ce * terms["ce"] + c.alpha_mlm * terms["mlm"] + c.alpha_cos * terms["cos"]
        if c.alpha_mse:
            loss = loss + c.alpha_mse * terms["mse"]
        for name, value in terms.items():
            self._terms[f"loss_{name}"].append(value.item())
        return (loss, out) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        add_loss_terms(logs, self._terms)
        super().log(logs, *args, **kwargs)
