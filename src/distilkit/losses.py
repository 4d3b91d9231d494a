"""Distillation losses as small pure functions.

Shapes: logits (batch, classes) or (batch, seq, vocab); hidden states (batch, seq, dim);
attentions (batch, heads, seq, seq); mask (batch, seq) with 1 on real tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """KL(teacher ‖ student) between distributions softened at T, times T² (Hinton et al. 2015).

    Averaged over rows (all leading dimensions); the T² keeps gradient size independent of T.
    """
    t = temperature
    s_logp = F.log_softmax(student_logits.float() / t, dim=-1).reshape(-1, student_logits.size(-1))
    t_logp = F.log_softmax(teacher_logits.float() / t, dim=-1).reshape(-1, teacher_logits.size(-1))
    return F.kl_div(s_logp, t_logp, reduction="batchmean", log_target=True) * t * t


def hard_ce(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy with the gold labels (or masked-LM targets; `ignore_index` positions skipped)."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=ignore_index)


def classification_distillation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Task distillation for classification: α·T²·KL(teacher‖student at T) + (1−α)·CE(gold).

    Rows without a gold class (label < 0: perturbed copies, unlabelled inputs) count in the KL term only.
    Returns {"loss": the weighted sum, "kd": the KL term, "ce": the CE term}, the last two unweighted."""
    kd = soft_target_kl(student_logits, teacher_logits, temperature)
    ce = gold_ce(student_logits, labels)
    return {"loss": alpha * kd + (1.0 - alpha) * ce, "kd": kd, "ce": ce}


def regression_distillation(
    student_pred: torch.Tensor, teacher_pred: torch.Tensor, labels: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """Task distillation for regression (STS-B): α·MSE(teacher prediction) + (1−α)·MSE(gold).

    Rows whose gold label is NaN (augmented copies, data/augment.py) count in the teacher term only."""
    student_pred, labels = student_pred.float().reshape(-1), labels.float().reshape(-1)
    loss = alpha * F.mse_loss(student_pred, teacher_pred.float().reshape(-1))
    gold = ~torch.isnan(labels)
    if not gold.any():
        return loss
    return loss + (1.0 - alpha) * F.mse_loss(student_pred[gold], labels[gold])


def multilabel_distillation(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 2.0,
) -> dict[str, torch.Tensor]:
    """Task distillation for multi-label classification (one sigmoid per label):
    α·T²·BCE(student at T, sigmoid(teacher_logits / T)) + (1−α)·BCE(student, gold).

    Each label is a binary problem of its own, so the soft targets are the teacher's per-label probabilities
    softened at T, and the student's logits are divided by the same T; as with the KL of
    `classification_distillation`, the term is multiplied by T² so its gradient keeps its size whatever T is.
    (Against soft targets the BCE does not reach 0: its minimum is the teacher's entropy, which has no gradient.)
    Both terms are means over rows and labels, like `BCEWithLogitsLoss`.

    `targets` (batch, labels) are 0/1 gold indicators; a row without gold (augmented copies, unlabelled
    inputs) is all NaN and counts in the teacher term only. Returns {"loss", "kd", "bce"}, the last two
    unweighted; "bce" is 0 when no row has gold."""
    t = temperature
    s = student_logits.float()
    soft = torch.sigmoid(teacher_logits.float() / t)
    kd = F.binary_cross_entropy_with_logits(s / t, soft) * t * t
    targets = targets.float().reshape(s.shape)
    gold = ~torch.isnan(targets).any(-1)
    if gold.any():
        bce = F.binary_cross_entropy_with_logits(s[gold], targets[gold])
    else:
        bce = s.sum() * 0.0
    return {"loss": alpha * kd + (1.0 - alpha) * bce, "kd": kd, "bce": bce}


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """Σ weight·term over the terms whose weight is not 0 (a term with weight 0 may be absent)."""
    return sum(w * terms[name] for name, w in weights.items() if w)


def gold_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the rows that have a gold class (label >= 0); 0 when none has one."""
    gold = labels.reshape(-1) >= 0
    if not gold.any():
        return logits.sum() * 0.0
    return hard_ce(logits.reshape(-1, logits.size(-1))[gold], labels.reshape(-1)[gold])


def hidden_cosine(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine embedding loss, mean of 1 − cos(student, teacher) over real tokens (DistilBERT's L_cos).

    Also works on pooled vectors of shape (batch, dim) with mask None.
    """
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)
    if mask is None:
        return (1.0 - cos).mean()
    mask = mask.to(cos.dtype)
    return ((1.0 - cos) * mask).sum() / mask.sum().clamp(min=1.0)


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between hidden states, over real tokens and all dimensions (TinyBERT)."""
    sq = (student_hidden.float() - teacher_hidden.float()).pow(2)
    if mask is None:
        return sq.mean()
    mask = mask.to(sq.dtype).unsqueeze(-1)
    return (sq * mask).sum() / (mask.sum().clamp(min=1.0) * sq.size(-1))


def projected_hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """`hidden_mse` of a narrower student's states mapped to the teacher's width, MSE(H_S·Wᵀ + b, H_T) (TinyBERT,
    Jiao et al. 2020, eq. 7; MobileBERT's bottleneck transfer): `weight` (teacher dim, student dim) is learned with
    the student and dropped after training."""
    return hidden_mse(F.linear(student_hidden.float(), weight.float(), None if bias is None else bias.float()),
                      teacher_hidden, mask)


def attention_kl(student_attn: torch.Tensor, teacher_attn: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher ‖ student) between attention distributions per head and query (MiniLM, Wang et al. 2020).

    Rows of both tensors are probabilities over keys; averaged over heads and real query tokens.
    """
    eps = 1e-12
    t = teacher_attn.float()
    kl = (t * (torch.log(t + eps) - torch.log(student_attn.float() + eps))).sum(-1)  # (batch, heads, seq)
    if mask is None:
        return kl.mean()
    mask = mask.to(kl.dtype).unsqueeze(1).expand_as(kl)
    return (kl * mask).sum() / mask.sum().clamp(min=1.0)


def self_attention_relation(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(x·yᵀ/√d) per head over the keys, padded keys left out: (batch, heads, seq, d) → (batch, heads, seq, seq).

    With x = queries and y = keys this is the attention distribution; with x = y = values, MiniLM's
    value relation (Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation", §3.1).
    """
    scores = x.float() @ y.float().transpose(-1, -2) / math.sqrt(x.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


def value_relation_kl(student_values: torch.Tensor, teacher_values: torch.Tensor,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher ‖ student) between the value relations softmax(V·Vᵀ/√d_k) per head and query (MiniLM's L_VR,
    Wang et al. 2020); values (batch, heads, seq, d_k), the two head sizes may differ. Averaged over heads and
    real query tokens, padded keys left out."""
    return attention_kl(self_attention_relation(student_values, student_values, mask),
                        self_attention_relation(teacher_values, teacher_values, mask), mask)


def triple_loss_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    student_hidden: torch.Tensor | None,
    teacher_hidden: torch.Tensor | None,
    attention_mask: torch.Tensor,
    temperature: float = 2.0,
) -> dict[str, torch.Tensor]:
    """DistilBERT's general-distillation terms (Sanh et al. 2019), each unweighted.

    ce: T²·KL(teacher‖student) over the vocabulary at masked positions; mlm: cross-entropy on the masked tokens; cos: 1 − cos of last hidden states
    on real tokens (left out when the hidden states are None); mse: MSE between the logits at the
    same positions as ce.
    Shapes: logits (batch, seq, vocab), labels (batch, seq) with -100 off the masked positions.
    """
    rows = labels != -100
    s, t = student_logits[rows], teacher_logits[rows]
    terms = {
        "ce": soft_target_kl(s, t, temperature),
        "mlm": hard_ce(student_logits, labels),
        "mse": F.mse_loss(s.float(), t.float()),
    }
    if student_hidden is not None:
        terms["cos"] = hidden_cosine(student_hidden, teacher_hidden, attention_mask)
    return terms


# --- sentence embeddings: pooled vectors of shape (batch, dim) -------------------------------------


def embedding_mse(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Mean squared error between student and teacher sentence embeddings, over rows and dimensions
    (Reimers & Gurevych 2020, multilingual distillation)."""
    return F.mse_loss(student_emb.float(), teacher_emb.float())


def embedding_cosine(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """Mean over rows of 1 − cos(student row, teacher row): 0 when every direction matches, scale-free."""
    return (1.0 - F.cosine_similarity(student_emb.float(), teacher_emb.float(), dim=-1)).mean()


def cosine_matrix(emb: torch.Tensor) -> torch.Tensor:
    """(batch, batch) cosine similarity of every row with every row."""
    unit = F.normalize(emb.float(), p=2, dim=-1)
    return unit @ unit.T


def similarity_mse(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """MSE between the in-batch cosine-similarity matrices of student and teacher (diagonal included,
    where both are 1): the student learns how the teacher relates the sentences of a batch to each other."""
    return F.mse_loss(cosine_matrix(student_emb), cosine_matrix(teacher_emb))


def embedding_distillation(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> dict[str, torch.Tensor]:
    """The unweighted terms of embedding distillation: mse, cos (1 − cos) and sim (similarity-matrix MSE)."""
    return {"mse": embedding_mse(student_emb, teacher_emb), "cos": embedding_cosine(student_emb, teacher_emb),
            "sim": similarity_mse(student_emb, teacher_emb)}
