"""Each loss against a value computed by hand."""

import math

import pytest
import torch

from distilkit import losses

LN3 = math.log(3.0)
# teacher softmax [0.75, 0.25] against student [0.5, 0.5]: 0.75 ln 1.5 + 0.25 ln 0.5
KL_HAND = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def test_soft_target_kl_at_t1():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    assert losses.soft_target_kl(s, t, temperature=1.0).item() == pytest.approx(KL_HAND, rel=1e-5)


def test_soft_target_kl_scales_by_t_squared():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * LN3, 0.0]])  # same distribution at T=2
    assert losses.soft_target_kl(s, t, temperature=2.0).item() == pytest.approx(4 * KL_HAND, rel=1e-5)


def test_soft_target_kl_is_zero_for_equal_logits_and_averages_rows():
    logits = torch.randn(5, 3)
    assert losses.soft_target_kl(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[LN3, 0.0], [0.0, 0.0]])
    assert losses.soft_target_kl(s, t, 1.0).item() == pytest.approx(KL_HAND / 2, rel=1e-5)


def test_hard_ce_and_ignore_index():
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0]])
    assert losses.hard_ce(logits[:1], torch.tensor([0])).item() == pytest.approx(math.log(2), rel=1e-6)
    assert losses.hard_ce(logits, torch.tensor([0, -100])).item() == pytest.approx(math.log(2), rel=1e-6)


def test_classification_distillation_mixes_kl_and_ce():
    s, t, y = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]]), torch.tensor([1])
    got = losses.classification_distillation(s, t, y, alpha=0.3, temperature=1.0)
    assert got["loss"].item() == pytest.approx(0.3 * KL_HAND + 0.7 * math.log(2), rel=1e-5)
    assert got["kd"].item() == pytest.approx(KL_HAND, rel=1e-5) and got["ce"].item() == pytest.approx(math.log(2))
    # a row without a gold class (label -1: a perturbed copy) counts in the KL term only
    two = losses.classification_distillation(s.repeat(2, 1), t.repeat(2, 1), torch.tensor([1, -1]), alpha=0.3,
                                             temperature=1.0)
    assert two["loss"].item() == pytest.approx(got["loss"].item(), rel=1e-5)


def test_regression_distillation():
    s, t, y = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 4.0])
    # MSE to teacher (0 + 1)/2 = 0.5; MSE to gold (1 + 4)/2 = 2.5
    assert losses.regression_distillation(s, t, y, alpha=0.25).item() == pytest.approx(0.25 * 0.5 + 0.75 * 2.5)


def test_hidden_cosine_with_mask():
    s = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    assert losses.hidden_cosine(s, t).item() == pytest.approx(0.5)  # cos 1 and cos 0
    assert losses.hidden_cosine(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(0.0, abs=1e-7)
    assert losses.hidden_cosine(s[:, 1], -s[:, 1]).item() == pytest.approx(2.0)


def test_hidden_mse_with_mask():
    s = torch.tensor([[[1.0, 1.0], [3.0, 3.0]]])
    t = torch.zeros(1, 2, 2)
    assert losses.hidden_mse(s, t).item() == pytest.approx(5.0)
    assert losses.hidden_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(1.0)


def test_projected_hidden_mse_maps_the_student_to_the_teacher_width():
    s = torch.tensor([[[1.0], [3.0]]])  # (1, 2 tokens, student width 1)
    t = torch.tensor([[[2.0, 5.0], [6.0, 5.0]]])  # teacher width 2
    weight, bias = torch.tensor([[2.0], [0.0]]), torch.tensor([0.0, 5.0])  # x ↦ (2x, 5): equal to t
    assert losses.projected_hidden_mse(s, t, weight, bias).item() == pytest.approx(0.0)
    assert losses.projected_hidden_mse(s, t, weight).item() == pytest.approx(12.5)  # (0+25+0+25)/4
    assert losses.projected_hidden_mse(s, t, weight * 0, bias, torch.tensor([[1, 0]])).item() == pytest.approx(2.0)


def test_attention_kl():
    t = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # (batch 1, head 1, query 2, key 2)
    s = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
    assert losses.attention_kl(t, t).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.attention_kl(s, t).item() == pytest.approx(math.log(2) / 2, rel=1e-5)
    assert losses.attention_kl(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(math.log(2), rel=1e-5)


def test_gold_ce_skips_rows_without_a_gold_class():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    labels = torch.tensor([0, -1, 1])
    expected = losses.hard_ce(logits[[0, 2]], labels[[0, 2]])
    assert losses.gold_ce(logits, labels).item() == pytest.approx(expected.item())
    none = losses.gold_ce(logits.requires_grad_(), torch.tensor([-1, -1, -1]))
    assert none.item() == 0.0 and none.requires_grad  # no NaN when a batch is all augmented rows


def test_regression_distillation_counts_nan_labels_in_the_teacher_term_only():
    s, t = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])
    y = torch.tensor([2.0, float("nan"), 3.0])
    got = losses.regression_distillation(s, t, y, alpha=0.25).item()
    assert got == pytest.approx(0.25 * (0 + 1 + 4) / 3 + 0.75 * (1 + 0) / 2)
