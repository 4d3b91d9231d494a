"""DistilBERT-style masking: rate, 80/10/10 split, frequency smoothing, never special tokens."""

import torch

from distilkit.data.masking import mask_tokens, token_weights

MASK, VOCAB = 4, 1000


def batch(n=64, seq=50):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, VOCAB, (n, seq), generator=g)
    candidates = torch.ones_like(ids, dtype=torch.bool)
    candidates[:, 0] = candidates[:, -1] = False  # [CLS] ... [SEP]
    candidates[: n // 2, seq // 2 :] = False  # padding
    return ids, candidates


def test_masks_15_percent_of_candidates_only():
    ids, candidates = batch()
    masked, labels = mask_tokens(ids, candidates, torch.ones(VOCAB), MASK, VOCAB, generator=torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert chosen.sum().item() == -(-15 * candidates.sum().item() // 100)  # ceil(0.15 n)
    assert not (chosen & ~candidates).any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_80_10_10_split():
    ids, candidates = batch(400)
    masked, labels = mask_tokens(ids, candidates, torch.ones(VOCAB), MASK, VOCAB, generator=torch.Generator().manual_seed(2))
    chosen = labels != -100
    n = chosen.sum().item()
    as_mask = (masked[chosen] == MASK).float().mean().item()
    kept = (masked[chosen] == ids[chosen]).float().mean().item()
    assert abs(as_mask - 0.8) < 0.02
    assert abs(kept - 0.1) < 0.02  # random replacements rarely hit the same id
    assert n > 1000


def test_rare_tokens_are_masked_more():
    counts = torch.ones(VOCAB)
    counts[10:500] = 10_000  # frequent ids; ids 500.. stay rare
    weights = token_weights(counts)
    assert weights[600].item() == 1.0 and abs(weights[10].item() - 10_000 ** -0.7) < 1e-9
    ids, candidates = batch(400)
    _, labels = mask_tokens(ids, candidates, weights, MASK, VOCAB, generator=torch.Generator().manual_seed(3))
    chosen_ids = labels[labels != -100]
    rare_share = (chosen_ids >= 500).float().mean().item()
    assert rare_share > 0.9  # about half the tokens are rare, but they get ~630x the weight


def test_no_candidates_masks_nothing():
    ids = torch.randint(10, VOCAB, (2, 5))
    masked, labels = mask_tokens(ids, torch.zeros_like(ids, dtype=torch.bool), torch.ones(VOCAB), MASK, VOCAB)
    assert torch.equal(masked, ids) and (labels == -100).all()
