"""Masked-LM inputs the DistilBERT way (Sanh et al. 2019; their `distiller.prepare_batch_mlm`).

15% of the real tokens of a batch are chosen, with probabilities proportional to count^-0.7 of each
token id in the corpus (rare tokens are masked more); of those 80% become [MASK], 10% a random
token and 10% stay. Special tokens and padding are never chosen.
"""

from __future__ import annotations

import math

import torch


def token_weights(counts: torch.Tensor, smoothing: float = 0.7) -> torch.Tensor:
    """Per-vocabulary sampling weight count^-smoothing (unseen ids count as 1)."""
    return counts.double().clamp(min=1.0).pow(-smoothing).float()


def mask_tokens(
    input_ids: torch.Tensor,
    candidates: torch.Tensor,
    weights: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    rate: float = 0.15,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (masked input ids, labels): labels hold the original id at chosen positions, -100 elsewhere.

    input_ids (batch, seq); candidates (batch, seq) bool, True on tokens that may be masked (real,
    non-special); weights (vocab,) from `token_weights`.
    """
    n_candidates = int(candidates.sum())
    labels = torch.full_like(input_ids, -100)
    if n_candidates == 0:
        return input_ids.clone(), labels
    n_chosen = max(1, math.ceil(rate * n_candidates))
    probs = weights[input_ids].masked_fill(~candidates, 0.0).flatten()
    chosen = torch.zeros_like(probs, dtype=torch.bool)
    chosen[torch.multinomial(probs, n_chosen, replacement=False, generator=generator)] = True
    chosen = chosen.view_as(input_ids)
    labels[chosen] = input_ids[chosen]

    action = torch.multinomial(torch.tensor(split), n_chosen, replacement=True, generator=generator)
    replacement = input_ids[chosen].clone()
    replacement[action == 0] = mask_id
    random_ids = torch.randint(vocab_size, (n_chosen,), generator=generator, device=input_ids.device)
    replacement[action == 1] = random_ids[action == 1]
    masked = input_ids.clone()
    masked[chosen] = replacement
    return masked, labels
