"""General-distillation pieces on tiny models: corpus packing, triple loss, a few Trainer steps."""

import math

import numpy as np
import pytest
import torch

from distilkit import losses
from distilkit.data.corpus import prepare_corpus, text_files
from distilkit.data.errors import DataError

from .conftest import make_tokenizer, sentences, tiny_bert_config


@pytest.fixture()
def corpus_dir(tmp_path):
    text = "\n".join(s for s, _ in sentences(200, 5)) + "\n\n   \n"
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text(text)
    return tmp_path / "corpus"


def test_prepare_corpus_packs_framed_sequences_and_counts(corpus_dir, tmp_path):
    import datasets

    tokenizer = make_tokenizer(tmp_path / "tok")
    stats = prepare_corpus(corpus_dir, tokenizer, tmp_path / "packed", max_len=8, min_len=4)
    ds = datasets.load_from_disk(str(tmp_path / "packed"))
    assert ds.features["input_ids"].feature.dtype == "uint16"
    assert stats["sequences"] == len(ds) > 0
    for ids in ds["input_ids"][:50]:
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and 4 <= len(ids) <= 8
    counts = np.load(tmp_path / "packed" / "token_counts.npy")
    assert counts.sum() == stats["tokens"] == sum(len(x) for x in ds["input_ids"])


def packed_by_hand(lines: list[str], tokenizer, max_len: int, min_len: int) -> list[list[int]]:
    """What prepare_corpus should store: each line's tokens in [CLS] ... [SEP] pieces of at most max_len."""
    rows = []
    for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
        for start in range(0, len(ids), max_len - 2):
            piece = ids[start : start + max_len - 2]
            if len(piece) + 2 >= min_len and piece.count(tokenizer.unk_token_id) <= 0.5 * len(piece):
                rows.append([tokenizer.cls_token_id, *piece, tokenizer.sep_token_id])
    return rows


@pytest.mark.parametrize("vocab_size, dtype", [(None, "uint16"), (70_000, "int32")])
def test_streamed_corpus_reads_back_the_same_ids(vocab_size, dtype, tmp_path):
    """A vocabulary over 65535 ids stores int32 (else uint16); either way the shards give back every id."""
    import datasets
    from transformers import BertTokenizerFast

    from .conftest import WORDS

    if vocab_size is None:
        tokenizer, words = make_tokenizer(tmp_path / "tok"), WORDS
    else:
        words = [f"w{i}" for i in range(vocab_size)]
        (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
        tokenizer = BertTokenizerFast(vocab=str(tmp_path / "vocab.txt"), do_lower_case=True)
        words = words[-5000:]  # ids above 65535
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, rng.integers(3, 30))) for _ in range(3000)]  # batches of 2000 lines: 2
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n\n")
    info = prepare_corpus(tmp_path / "corpus.txt", tokenizer, tmp_path / "packed", max_len=16, min_len=4)
    ds = datasets.load_from_disk(str(tmp_path / "packed"))
    assert ds.features["input_ids"].feature.dtype == info["token_dtype"] == dtype
    expected = packed_by_hand(lines, tokenizer, 16, 4)
    assert ds["input_ids"] == expected and info["sequences"] == len(expected)
    if vocab_size:
        assert max(max(row) for row in ds["input_ids"]) > 65535
    counts = np.load(tmp_path / "packed" / "token_counts.npy")
    assert counts.sum() == info["tokens"] == sum(len(r) for r in expected)
    assert counts[tokenizer.cls_token_id] == len(expected)
    assert not list(tmp_path.glob("*.arrow-build"))


def test_corpus_errors(tmp_path):
    tokenizer = make_tokenizer(tmp_path / "tok")
    (tmp_path / "empty.txt").write_text("\n  \n\n")
    with pytest.raises(DataError, match="empty"):
        prepare_corpus(tmp_path / "empty.txt", tokenizer, tmp_path / "o1")
    (tmp_path / "blob.txt").write_bytes(b"abc\x00\x01\x02" * 100)
    with pytest.raises(DataError, match="binary"):
        text_files(tmp_path / "blob.txt")
    with pytest.raises(DataError, match="not found"):
        text_files(tmp_path / "missing")


def test_triple_loss_terms_by_hand():
    vocab = 3
    s_logits = torch.zeros(1, 2, vocab)
    t_logits = torch.zeros(1, 2, vocab)
    t_logits[0, 0] = torch.tensor([2 * math.log(2.0), 0.0, 0.0])  # at T=2: probs [1/2, 1/4, 1/4]
    labels = torch.tensor([[0, -100]])
    hidden_s = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    hidden_t = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    mask = torch.tensor([[1, 1]])
    terms = losses.triple_loss_terms(s_logits, t_logits, labels, hidden_s, hidden_t, mask, temperature=2.0)
    kl = 0.5 * math.log(0.5 / (1 / 3)) + 2 * 0.25 * math.log(0.25 / (1 / 3))
    assert terms["ce"].item() == pytest.approx(4 * kl, rel=1e-5)
    assert terms["mlm"].item() == pytest.approx(math.log(3), rel=1e-6)
    assert terms["cos"].item() == pytest.approx(0.5)  # cos 0 on token 1, cos 1 on token 2
    assert terms["mse"].item() == pytest.approx((2 * math.log(2.0)) ** 2 / 3, rel=1e-5)


def test_trainer_runs_the_triple_loss(corpus_dir, tmp_path):
    import datasets
    from transformers import BertForMaskedLM, TrainingArguments

    from distilkit.data.masking import token_weights
    from distilkit.models.student import build_student
    from distilkit.train.general import GeneralDistillationTrainer, Masker, PaddingCollator, TripleLossConfig

    tokenizer = make_tokenizer(tmp_path / "tok")
    prepare_corpus(corpus_dir, tokenizer, tmp_path / "packed", max_len=12, min_len=4)
    ds = datasets.load_from_disk(str(tmp_path / "packed"))
    weights = token_weights(torch.as_tensor(np.load(tmp_path / "packed" / "token_counts.npy")))
    torch.manual_seed(0)
    teacher = BertForMaskedLM(tiny_bert_config()).eval()
    student = build_student(teacher, [0, 2])
    before = student.distilbert.transformer.layer[0].ffn.lin1.weight.clone()
    args = TrainingArguments(str(tmp_path / "ckpt"), per_device_train_batch_size=8, max_steps=4, logging_steps=2,
                             learning_rate=1e-3, report_to="none", use_cpu=True, save_strategy="no",
                             remove_unused_columns=False, disable_tqdm=True)
    trainer = GeneralDistillationTrainer(model=student, args=args, train_dataset=ds, teacher=teacher,
                                         data_collator=PaddingCollator(tokenizer.pad_token_id),
                                         masker=Masker(tokenizer, weights), loss_config=TripleLossConfig())
    trainer.train()
    logged = [h for h in trainer.state.log_history if "loss_ce" in h]
    assert logged and all(math.isfinite(h[k]) for h in logged for k in ("loss_ce", "loss_mlm", "loss_cos"))
    assert not torch.equal(before, student.distilbert.transformer.layer[0].ffn.lin1.weight)
    assert all(not p.requires_grad for p in teacher.parameters())


def test_masks_and_data_order_do_not_depend_on_rng_history(tmp_path):
    from distilkit.train.general import EpochSampler, Masker, PaddingCollator, mask_seed

    tokenizer = make_tokenizer(tmp_path / "tok")
    lengths = [5 + i % 7 for i in range(64)]
    sampler = EpochSampler(lengths, batch_size=8, seed=42)
    first = list(sampler)
    torch.manual_seed(123)  # the global RNG plays no part
    assert list(sampler) == first and sorted(first) == list(range(64))
    sampler.set_epoch(1)
    assert list(sampler) != first

    seeds = {mask_seed(42, step, micro, rank) for step in range(50) for micro in range(4) for rank in range(4)}
    assert len(seeds) == 50 * 4 * 4
    batch = PaddingCollator(tokenizer.pad_token_id)([{"input_ids": [2] + [5 + i % 19 for i in range(30)] + [3]}] * 4)
    masker = Masker(tokenizer, torch.ones(len(tokenizer)))
    a = masker(batch, torch.Generator().manual_seed(mask_seed(42, 7, 1, 0)))
    torch.rand(1000)
    b = masker(batch, torch.Generator().manual_seed(mask_seed(42, 7, 1, 0)))
    c = masker(batch, torch.Generator().manual_seed(mask_seed(42, 7, 1, 1)))
    assert torch.equal(a["labels"], b["labels"]) and torch.equal(a["input_ids"], b["input_ids"])
    assert not torch.equal(a["labels"], c["labels"])  # another rank masks other tokens


def test_all_zero_weights_are_refused():
    from distilkit.train.general import TripleLossConfig

    with pytest.raises(ValueError, match="not all zero"):
        TripleLossConfig(alpha_ce=0, alpha_mlm=0, alpha_cos=0, alpha_mse=0).check()


def test_pretrain_stage_end_to_end_with_fitted_head(tiny_teacher, corpus_dir, tmp_path):
    from typer.testing import CliRunner

    from distilkit.cli import app

    out = tmp_path / "pre"
    result = CliRunner().invoke(app, ["pretrain", "--teacher", str(tiny_teacher), "--corpus", str(corpus_dir),
                                      "--out", str(out), "--fit-mlm-head", "--head-steps", "4", "--max-steps", "6",
                                      "--save-steps", "3", "--max-len", "12", "--batch-size", "8", "--no-bf16"])
    assert result.exit_code == 0, result.output
    import json

    info = json.loads((out / "pretrain.json").read_text())
    assert 0.0 <= info["student_mlm_accuracy"] <= 1.0 and 0.0 <= info["teacher_mlm_accuracy"] <= 1.0
    assert info["fit_mlm_head"] and info["loss_history"]
    assert (out / "model.safetensors").exists() and not (out / "checkpoints").exists()


def test_pretrain_refuses_a_headless_teacher_without_fit(tiny_teacher, corpus_dir, tmp_path):
    from typer.testing import CliRunner

    from distilkit.cli import app

    result = CliRunner().invoke(app, ["pretrain", "--teacher", str(tiny_teacher), "--corpus", str(corpus_dir),
                                      "--out", str(tmp_path / "pre")])
    assert result.exit_code == 2 and "--fit-mlm-head" in result.output
