"""`distil pretrain --recipe headless` on tiny random models: the MiniLM-style losses by hand, the recomputed
attention against the models' own (eager) attention weights, training that measurably helps, bad options."""

from __future__ import annotations

import json
import math

import pytest
import torch

from distilkit import losses

from .conftest import tiny_bert_config
from .test_pretrain import cli, corpus_dir  # noqa: F401  (a fixture)

TINY = ["--max-len", "12", "--batch-size", "8", "--lr", "1e-3", "--no-bf16"]


def test_value_relation_kl_by_hand():
    student = torch.tensor([[[[1.0], [0.0]]]])  # (batch 1, head 1, seq 2, d 1): V·Vᵀ = [[1, 0], [0, 0]]
    teacher = torch.zeros(1, 1, 2, 1)  # V·Vᵀ = 0: uniform rows
    p = math.e / (math.e + 1)  # student row 0: [p, 1 − p]; row 1 uniform like the teacher's
    row0 = 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))
    assert losses.value_relation_kl(student, teacher).item() == pytest.approx(row0 / 2, rel=1e-5)
    # A padded third token changes nothing: not a query, and no key either (its huge value would dominate).
    padded_s = torch.cat([student, torch.full((1, 1, 1, 1), 50.0)], dim=2)
    padded_t = torch.cat([teacher, torch.full((1, 1, 1, 1), -50.0)], dim=2)
    mask = torch.tensor([[1, 1, 0]])
    assert losses.value_relation_kl(padded_s, padded_t, mask).item() == pytest.approx(row0 / 2, rel=1e-5)
    assert losses.value_relation_kl(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_self_attention_relation_by_hand():
    q = torch.tensor([[[[2.0, 0.0, 0.0, 0.0]]]])  # one query of head size 4: scores q·k / 2
    k = torch.tensor([[[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]]])
    attn = losses.self_attention_relation(q, k)
    assert attn[0, 0, 0].tolist() == pytest.approx([math.e / (math.e + 1), 1 / (math.e + 1)], rel=1e-6)


def test_recomputed_attention_is_the_models_own_in_every_layer():
    from transformers import BertModel

    from distilkit.models.student import build_student
    from distilkit.train.common import attention_qkv

    torch.manual_seed(0)
    teacher = BertModel(tiny_bert_config()).eval()
    student = build_student(teacher, [0, 2]).eval()
    assert type(student).__name__ == "DistilBertModel"
    ids = torch.randint(5, 24, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    for model in (teacher, student):
        model.set_attn_implementation("eager")  # SDPA returns no attention weights
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        real = mask.bool()[:, None, :, None].expand(-1, model.config.num_attention_heads, -1, 7)  # real query rows
        for layer, attentions in enumerate(out.attentions):
            with torch.no_grad():
                q, k, _ = attention_qkv(model, out.hidden_states[layer], layer)
                mine = losses.self_attention_relation(q, k, mask)
            assert torch.allclose(mine[real], attentions[real], atol=1e-6), (type(model).__name__, layer)


@pytest.fixture(scope="module")
def sharp_teacher(tiny_teacher, tmp_path_factory):
    """The tiny teacher's shape with larger random weights (peaked attention, layers that change the hidden
    states) and no dropout: the default init's near-uniform attention leaves a student little to learn."""
    from transformers import AutoTokenizer, BertModel

    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("sharp_teacher")
    BertModel(tiny_bert_config(initializer_range=0.2, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(folder)
    return folder


def test_headless_recipe_trains_a_student_that_gets_closer(sharp_teacher, corpus_dir, tmp_path):  # noqa: F811
    from transformers import AutoModel

    out = tmp_path / "headless"
    result = cli("pretrain", "--teacher", sharp_teacher, "--corpus", corpus_dir, "--out", out, "--recipe", "headless",
                 *TINY, "--layers", "first-2", "--max-steps", "20", "--save-steps", "10", "--logging-steps", "5")
    assert result.exit_code == 0, result.output
    assert "held-out last-layer attention KL" in result.output
    info = json.loads((out / "pretrain.json").read_text())
    assert info["recipe"] == "headless" and info["steps"] == 20 and not info["fit_mlm_head"]
    assert info["loss"] == {"alpha_attn": 1.0, "alpha_value": 1.0, "alpha_cos": 1.0}
    assert "student_mlm_accuracy" not in info and not (out / "teacher_with_head").exists()
    print({k: v for k, v in info.items() if k.endswith(("_before", "_after"))})
    assert info["attention_kl_after"] < 0.5 * info["attention_kl_before"]
    assert info["value_relation_kl_after"] < 0.5 * info["value_relation_kl_before"]
    assert info["hidden_cosine_before"] < info["hidden_cosine_after"] <= 1.0
    history = info["loss_history"]
    assert [h["step"] for h in history] == [5, 10, 15, 20]
    assert all(math.isfinite(h[f"loss_{t}"]) for h in history for t in ("attn", "value", "cos"))
    model = AutoModel.from_pretrained(out)  # a bare DistilBERT encoder, no head
    assert type(model).__name__ == "DistilBertModel" and model.config.n_layers == 2
    assert not (out / "checkpoints").exists()


def test_headless_resume_after_a_crash_repeats_the_uninterrupted_run(tiny_teacher, corpus_dir, tmp_path,  # noqa: F811
                                                                     monkeypatch):
    from distilkit.train.general import HeadlessDistillationTrainer

    args = ["pretrain", "--teacher", tiny_teacher, "--corpus", corpus_dir, "--recipe", "headless", *TINY,
            "--layers", "0,2", "--max-steps", "8", "--save-steps", "4", "--logging-steps", "1"]
    full = cli(*args, "--out", tmp_path / "full")
    assert full.exit_code == 0, full.output

    step = HeadlessDistillationTrainer.training_step

    def crash(self, model, inputs, num_items_in_batch=None):  # dies in step 7, after the checkpoint at step 4
        if self.state.global_step == 6:
            raise RuntimeError("simulated crash")
        return step(self, model, inputs, num_items_in_batch)

    out = tmp_path / "crashed"
    monkeypatch.setattr(HeadlessDistillationTrainer, "training_step", crash)
    crashed = cli(*args, "--out", out)
    assert isinstance(crashed.exception, RuntimeError) and not out.exists()
    monkeypatch.undo()
    resumed = cli(*args, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    a, b = (json.loads((folder / "pretrain.json").read_text()) for folder in (tmp_path / "full", out))
    assert b["resumed_from"] == "checkpoint-4"
    assert [h["step"] for h in a["loss_history"]] == [h["step"] for h in b["loss_history"]] == list(range(1, 9))
    for x, y in zip(a["loss_history"], b["loss_history"]):  # dropout and data order line up after the resume
        for key in ("loss", "loss_attn", "loss_value", "loss_cos"):
            assert y[key] == pytest.approx(x[key], rel=1e-5, abs=1e-6), (x["step"], key)
    for key in ("attention_kl_before", "attention_kl_after", "hidden_cosine_after"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key


@pytest.fixture(scope="module")
def two_head_student(tiny_teacher, tmp_path_factory):
    """A DistilBERT encoder as wide as the tiny teacher but with 2 attention heads instead of 4."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertModel

    folder = tmp_path_factory.mktemp("two_heads")
    DistilBertModel(DistilBertConfig(vocab_size=24, dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                                     max_position_embeddings=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_teacher).save_pretrained(folder)
    return folder


BAD_OPTIONS = {  # case → (arguments, what the message must say)
    "fit-head": (["--recipe", "headless", "--fit-mlm-head"], ["--fit-mlm-head is for --recipe triple",
                                                              "uses no masked-LM head"]),
    "no-head": ([], ["has no masked-LM head", "--fit-mlm-head", "--recipe headless"]),
    "other-recipe-alpha": (["--recipe", "headless", "--alpha-ce", "1"], ["--alpha-ce", "other recipe"]),
    "bad-recipe": (["--recipe", "minilm"], ["--recipe 'minilm'", "triple or headless"]),
    "alphas-zero": (["--recipe", "headless", "--alpha-attn", "0", "--alpha-value", "0", "--alpha-cos", "0"],
                    ["--alpha-attn", "not all zero"]),
    "heads": (["--recipe", "headless", "--student", "TWO"], ["2 attention heads", "4", "same number of heads"]),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_headless_options_are_refused(case, tiny_teacher, two_head_student, corpus_dir, tmp_path):  # noqa: F811
    extra, expected = BAD_OPTIONS[case]
    extra = [str(two_head_student) if a == "TWO" else a for a in extra]
    out = tmp_path / "out"
    result = cli("pretrain", "--teacher", tiny_teacher, "--corpus", corpus_dir, "--out", out, *TINY,
                 "--max-steps", "2", *extra)
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in result.output, result.output
    assert "trained" not in result.output
    assert not out.exists() and not (tmp_path / ".out.partial").exists()
