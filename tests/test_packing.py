"""Packed model calls (deploy/packing.py): the packing itself on made-up token ids, and the packed graph of every
family's classifier against the same model run padded (torch, then the exported ONNX graph in ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import pytest

from distilkit.deploy.packing import pack_rows, packed_calls, round_up

from .family_fixtures import FAMILY_NAMES, make_family_teacher


def padded(lengths, right: bool = True, pad_id: int = 0, types: bool = False) -> dict[str, np.ndarray]:
    """Padded encodings of texts of `lengths` tokens whose ids are 100 * (text + 1) + position."""
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_id, np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        cols = slice(0, n) if right else slice(width - n, width)
        ids[i, cols] = 100 * (i + 1) + np.arange(n)
        mask[i, cols] = 1
    enc = {"input_ids": ids, "attention_mask": mask}
    if types:
        enc["token_type_ids"] = (ids % 2) * mask
    return enc


def test_pack_rows_places_every_text_once_within_the_capacity():
    lengths = [30, 5, 60, 12, 33, 7, 64, 2, 90]
    rows = pack_rows(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    for row in rows:
        assert sum(lengths[i] for i in row) <= 64 or len(row) == 1  # a text longer than a row gets one of its own
    assert [8] in rows and [6] in rows  # 90 tokens alone; 64 fills a row
    assert len(rows) == 5  # first fit decreasing: 90 | 64 | 60+2 | 33+30 | 12+7+5


@pytest.mark.parametrize("right", [True, False])
@pytest.mark.parametrize("lengths", [[9, 3, 17, 5, 40, 2, 11], [13]])  # several texts; one (its own short path)
def test_packed_calls_keep_each_texts_tokens_positions_and_types(right, lengths):
    enc = padded(lengths, right=right, types=True)
    calls = packed_calls(enc, pad_id=0, multiple=16, row_tokens=24, max_rows=2)
    seen = []
    for idx, feed in calls:
        rows, width = feed["input_ids"].shape
        assert rows <= 2 and width % 16 == 0 and len(feed["first_token"]) == len(idx)
        flat = {k: v.reshape(-1) for k, v in feed.items() if k != "first_token"}
        for k, (i, first) in enumerate(zip(idx, feed["first_token"])):
            n = lengths[i]
            tokens = slice(first, first + n)
            assert first // width == (first + n - 1) // width  # a text stays in one row
            np.testing.assert_array_equal(flat["input_ids"][tokens], 100 * (i + 1) + np.arange(n))
            np.testing.assert_array_equal(flat["position_ids"][tokens], np.arange(n))
            np.testing.assert_array_equal(flat["token_type_ids"][tokens], (100 * (i + 1) + np.arange(n)) % 2)
            assert (flat["text_index"][tokens] == k).all()
        assert (flat["text_index"] >= 0).sum() == sum(lengths[i] for i in idx)  # the rest is padding, marked -1
        assert (flat["input_ids"][flat["text_index"] < 0] == 0).all()
        seen += list(idx)
    assert sorted(seen) == list(range(len(lengths)))
    assert max(feed["input_ids"].shape[1] for _, feed in calls) == round_up(max(lengths), 16)  # the longest: its own row
    for _, feed in calls:
        assert (feed["position_ids"][feed["text_index"] < 0] == 0).all() and feed["first_token"].dtype == np.int64


def test_packing_needs_fewer_positions_than_padding():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 56, size=32))  # SST-2-like lengths, in arrival order
    calls = packed_calls(padded(lengths), pad_id=0)
    packed = sum(feed["input_ids"].size for _, feed in calls)
    assert packed < 1.25 * sum(lengths) and packed < 0.75 * 32 * 64  # padded: 32 texts x 55 tokens, in 16s


def family_classifier(family: str, folder):
    """A random classifier of `family` (2 labels) and its tokenizer, from the family fixtures' teacher."""
    from transformers import AutoModelForSequenceClassification

    from distilkit.models.folders import load_tokenizer

    make_family_teacher(family, folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, attn_implementation="eager")
    return model.eval(), load_tokenizer(str(folder))


PACKED_FAMILIES = {"bert", "distilbert", "roberta", "xlm-roberta", "electra", "mpnet"}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_packed_graph_gives_the_padded_logits(family, tmp_path):
    """BERT, DistilBERT, RoBERTa, XLM-R, ELECTRA and MPNet run packed: the exported graph in ONNX Runtime gives the
    padded torch logits on texts and pairs it was not checked on. DeBERTa-v2 (its embeddings are multiplied by a 2-d
    mask) and ModernBERT (which builds its own masks) are refused by the check and keep the padded graph."""
    import onnxruntime as ort
    import torch

    from distilkit.deploy.export import packed_onnx
    from distilkit.models.loading import model_inputs

    model, tokenizer = family_classifier(family, tmp_path / "model")
    record = packed_onnx(model, tokenizer, tmp_path / "packed.onnx")
    if family not in PACKED_FAMILIES:
        assert "skipped" in record and not (tmp_path / "packed.onnx").exists()
        return
    assert "skipped" not in record, record
    assert record["max_abs_diff"] < 1e-4
    texts = ["good film", "a very bad plot and bad actors", "fine", "the film was not good at all , sadly", "ok"]
    pairs = ["bad", "good film", "a long and good plot", "fine", "not good"]
    enc = {k: v.astype(np.int64) for k, v in tokenizer(texts, pairs, padding=True, return_tensors="np").items()}
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in enc.items() if k in model_inputs(model)}).logits.numpy()
    session = ort.InferenceSession(str(tmp_path / "packed.onnx"), providers=["CPUExecutionProvider"])
    got = np.zeros_like(ref)
    calls = packed_calls(enc, tokenizer.pad_token_id or 0, row_tokens=32, max_rows=2)
    assert any(len(idx) > feed["input_ids"].shape[0] for idx, feed in calls)  # several texts share a row
    for idx, feed in calls:
        got[idx] = session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_a_packing_backend_gets_texts_in_input_order_and_serves_calls_of_16():
    """predict_all sorts texts by length for padded calls only; a packing backend takes them as they come (mixed
    lengths pack better), and the server gives it 16 texts a call unless --sub-batch says otherwise."""
    from distilkit.deploy.backends import predict_all
    from distilkit.deploy.serve import Limits

    class Recording:
        output_dim, calls = 1, []

        def __call__(self, texts, pairs=None):
            self.calls.append(list(texts))
            return np.array([[len(t)] for t in texts], dtype=np.float32)

    texts = ["a much longer text", "b", "medium one", "cc", "a fairly long text again"]
    for packs, first_call in ((False, ["b", "cc"]), (True, texts[:2])):
        backend = Recording()
        backend.packs, backend.calls = packs, []
        logits = predict_all(backend, texts, batch_size=2)
        assert backend.calls[0] == first_call
        assert logits[:, 0].tolist() == [len(t) for t in texts]  # in input order either way
    assert (Limits().texts_per_call(False), Limits().texts_per_call(True)) == (8, 16)
    assert Limits(sub_batch=4).texts_per_call(True) == 4 and Limits(max_batch=10).texts_per_call(True) == 10


@pytest.mark.parametrize("mode", ["mean", "cls", "max"])
def test_packed_embedding_graph_pools_like_the_padded_model(mode, tmp_path):
    """An embedding model's packed graph pools each text's token states in the graph (mean or CLS) as the padded
    model does; max pooling is refused by name and keeps the padded graph."""
    import onnxruntime as ort
    import torch

    from distilkit.deploy.export import load_eager, packed_onnx
    from distilkit.models.folders import load_tokenizer
    from distilkit.models.pooling import pool

    from .deploy_fixtures import make_embedding_teacher

    folder = make_embedding_teacher(tmp_path / "model", mode=mode, normalize=False)
    model, tokenizer = load_eager(folder, embedding=True), load_tokenizer(str(folder))
    record = packed_onnx(model, tokenizer, tmp_path / "packed.onnx", pooling=mode)
    if mode == "max":
        assert record == {"skipped": "max pooling is not computed packed"}
        return
    assert record["output"] == "embeddings" and record["max_abs_diff"] < 1e-4
    texts = ["good film", "a very bad plot and bad actors", "fine", "the film was not good at all , sadly", "ok"]
    enc = {k: v.astype(np.int64) for k, v in tokenizer(texts, padding=True, return_tensors="np").items()}
    with torch.no_grad():
        feed = {k: torch.from_numpy(v) for k, v in enc.items()}
        ref = pool(model(**feed).last_hidden_state, feed["attention_mask"], mode).numpy()
    session = ort.InferenceSession(str(tmp_path / "packed.onnx"), providers=["CPUExecutionProvider"])
    got = np.zeros_like(ref)
    for idx, call in packed_calls(enc, tokenizer.pad_token_id or 0, row_tokens=32, max_rows=2):
        got[idx] = session.run(None, {i.name: call[i.name] for i in session.get_inputs()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4)
