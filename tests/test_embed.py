"""Embedding distillation on tiny random models: pooling, losses and retrieval metrics by hand, the saved
folder (SentenceTransformer and AutoModel agree), cache, bad corpora, /v1/embed, export, predict, eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from distilkit.cli import app
from distilkit.data.errors import DataError
from distilkit.models.pooling import EmbedError, Pooling, is_embedding_model, pool, pool_numpy, read_pooling, write_sentence_transformers_files
from distilkit.stages.embedding import distil_embeddings
from distilkit.train.embedding import EmbedConfig
from distilkit.losses import embedding_cosine, embedding_mse, similarity_mse
from distilkit.metrics import retrieval_metrics, sts_spearman

from .conftest import make_tokenizer, sentences, tiny_bert_config
from .deploy_fixtures import make_embedding_teacher, tiny_student  # noqa: F401

runner = CliRunner()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return make_embedding_teacher(tmp_path_factory.mktemp("embed") / "teacher")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "sentences.txt"
    path.write_text("\n".join(s for s, _ in sentences(200, seed=3)) + "\n")
    return path


@pytest.fixture(scope="module")
def student(teacher, corpus, tmp_path_factory):
    """A 2-layer student distilled for one epoch; its folder."""
    root = tmp_path_factory.mktemp("embed_student")
    out = root / "student"
    distil_embeddings(str(teacher), [corpus], out, EmbedConfig(epochs=1, batch_size=16, max_length=32),
                      layers="0,2", cache_dir=root / "cache", say=lambda m: None)
    return out


# --- pooling ---------------------------------------------------------------------------------------


def test_read_pooling_from_modules_and_default_said_aloud(tmp_path, teacher):
    assert read_pooling(teacher) == (Pooling("mean", True), None)
    cls = tmp_path / "cls"
    cls.mkdir()
    write_sentence_transformers_files(cls, Pooling("cls", False), 32, 64)
    assert read_pooling(cls) == (Pooling("cls", False), None) and is_embedding_model(cls)
    plain = tmp_path / "plain"
    plain.mkdir()
    pooling, note = read_pooling(plain)
    assert pooling == Pooling("mean", False) and "no sentence-transformers pooling config" in note and "mean" in note
    assert not is_embedding_model(plain)
    config = json.loads((cls / "1_Pooling" / "config.json").read_text())
    config["pooling_mode_mean_sqrt_len_tokens"] = True
    (cls / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmbedError, match="not supported"):
        read_pooling(cls)


def test_pool_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, -4.0], [100.0, 100.0]]])  # the third token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, -1.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 2.0]]
    np.testing.assert_allclose(pool_numpy(hidden.numpy(), mask.numpy(), Pooling("max")), [[3.0, 2.0]])
    unit = pool_numpy(hidden.numpy(), mask.numpy(), Pooling("mean", normalize=True))
    np.testing.assert_allclose(unit, [[2 / 5**0.5, -1 / 5**0.5]], rtol=1e-6)


# --- losses and metrics, by hand -----------------------------------------------------------------------


def test_embedding_losses_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    # squared differences 1, 1, 0, 1 → mean 0.75
    assert embedding_mse(s, t).item() == pytest.approx(0.75)
    # cos: row 0 orthogonal (1 - 0), row 1 same direction (1 - 1) → mean 0.5
    assert embedding_cosine(s, t).item() == pytest.approx(0.5)
    # similarity matrices: student [[1, 0], [0, 1]], teacher [[1, 1], [1, 1]] → two of four entries differ by 1
    assert similarity_mse(s, t).item() == pytest.approx(0.5)
    assert similarity_mse(2 * s, s).item() == pytest.approx(0.0)  # scale-free
    assert embedding_cosine(3 * t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_retrieval_metrics_by_hand():
    passages = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    queries = np.array([[1.0, 0.1],   # ranks 0, 2, 1, 3 → relevant 2 at rank 2
                        [0.0, 1.0],   # ranks 1, 2, ... → relevant 1 at rank 1
                        [-1.0, 0.0]])  # ranks 3 first → relevant {0, 3}: 3 at rank 1, 0 last (rank 4)
    relevant = [{2}, {1}, {0, 3}]
    m = retrieval_metrics(queries, passages, relevant, ks=(1, 2), mrr_k=10)
    assert m["recall@1"] == pytest.approx((0 + 1 + 0.5) / 3)
    assert m["recall@2"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["mrr@10"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    assert retrieval_metrics(queries, passages, relevant, ks=(1,), mrr_k=1)["mrr@1"] == pytest.approx(2 / 3)


def test_sts_spearman_by_hand():
    e1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    e2 = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])  # cosines 1, 0.71, 0
    assert sts_spearman(e1, e2, [5.0, 3.0, 1.0]) == pytest.approx(1.0)
    assert sts_spearman(e1, e2, [1.0, 3.0, 5.0]) == pytest.approx(-1.0)


# --- the student folder ----------------------------------------------------------------------------------


def test_student_folder_loads_in_sentence_transformers_and_automodel(student, teacher):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    texts = ["a good film", "the plot was very dull", "not a great actor"]
    st = SentenceTransformer(str(student), device="cpu").encode(texts, convert_to_numpy=True)
    model, tok = AutoModel.from_pretrained(student).eval(), AutoTokenizer.from_pretrained(student)
    assert model.config.model_type == "distilbert" and model.config.n_layers == 2
    with torch.no_grad():
        enc = tok(texts, padding=True, return_tensors="pt")
        emb = torch.nn.functional.normalize(pool(model(**enc).last_hidden_state, enc["attention_mask"], "mean"), dim=-1)
    np.testing.assert_allclose(st, emb.numpy(), atol=1e-5)
    assert st.shape == (3, 32) and np.allclose(np.linalg.norm(st, axis=1), 1.0, atol=1e-5)  # teacher normalises
    info = json.loads((student / "distil.json").read_text())
    assert info["kind"] == "embedding" and info["layer_map"] == [0, 2] and info["corpus"]["sentences"] > 100
    assert info["train"]["steps"] > 0 and not info["teacher_embeddings"]["cached"]
    assert read_pooling(student) == read_pooling(teacher)


def test_distillation_moves_the_student_towards_the_teacher(student, teacher, corpus, tmp_path):
    from distilkit.deploy.backends import load_backend, predict_all

    truncated = tmp_path / "truncated"
    distil_embeddings(str(teacher), [corpus], truncated, EmbedConfig(epochs=0), layers="0,2", say=lambda m: None)
    texts = [s for s, _ in sentences(50, seed=11)]
    def embed(path):
        return predict_all(load_backend(path, "torch"), texts)

    t = embed(teacher)
    cos = {name: float((embed(path) * t).sum(1).mean()) for name, path in
           (("truncated", truncated), ("student", student))}
    assert cos["student"] > cos["truncated"]


def test_teacher_embeddings_are_cached(teacher, corpus, tmp_path, student):
    cache = tmp_path / "cache"
    cfg = EmbedConfig(epochs=0.1, batch_size=16, max_length=32)
    first = distil_embeddings(str(teacher), [corpus], tmp_path / "a", cfg, layers="0,2", cache_dir=cache, say=lambda m: None)
    second = distil_embeddings(str(teacher), [corpus], tmp_path / "b", cfg, layers="0,2", cache_dir=cache, say=lambda m: None)
    assert not first["teacher_embeddings"]["cached"] and second["teacher_embeddings"]["cached"]
    assert len(list(cache.glob("teacher-*.npy"))) == 1


def test_sentences_from_glue_folders_are_train_sentences_only(tiny_glue, tmp_path):
    from distilkit.data.sentences import load_sentences, split_sentences

    train = [line.split("\t")[0].strip() for line in (tiny_glue / "SST-2" / "train.tsv").read_text().splitlines()[1:]]
    dev = {line.split("\t")[0] for line in (tiny_glue / "SST-2" / "dev.tsv").read_text().splitlines()[1:]}
    got, report = load_sentences([tiny_glue], exclude=dev)
    assert got == [s for s in dict.fromkeys(train) if s not in dev]  # de-duplicated, order kept, dev excluded
    assert not any(s in ("0", "1") for s in got) and report[0]["new_sentences"] == len(got)
    assert split_sentences("It rained. Then it stopped! Why? \"Nobody knows.\" e.g. this") == [
        "It rained.", "Then it stopped!", "Why?", "\"Nobody knows.\" e.g. this"]


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content,message", [("", "the corpus file is empty"),
                                             ("\n  \n\t\n", "the corpus is empty (no non-blank lines)")])
def test_bad_corpus_is_a_clear_error_naming_the_file(teacher, tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    result = runner.invoke(app, ["embed", "--teacher", str(teacher), "--corpus", str(path), "--out",
                                 str(tmp_path / "out"), "--layers", "0,2"])
    assert result.exit_code == 2 and message in result.output and "bad.txt" in result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="corpus not found"):
        distil_embeddings(str(teacher), [tmp_path / "missing.txt"], tmp_path / "o", EmbedConfig(), say=lambda m: None)


def test_teacher_without_pooling_config_defaults_to_mean_said_aloud(tmp_path, corpus):
    from transformers import BertModel

    folder = tmp_path / "bare"
    make_tokenizer(folder).save_pretrained(folder)
    BertModel(tiny_bert_config()).save_pretrained(folder)
    result = runner.invoke(app, ["embed", "--teacher", str(folder), "--corpus", str(corpus), "--out",
                                 str(tmp_path / "out"), "--layers", "0,2", "--epochs", "0"])
    assert result.exit_code == 0, result.output
    assert "no sentence-transformers pooling config" in result.output and "mean pooling" in result.output
    assert read_pooling(tmp_path / "out") == (Pooling("mean", False), None)


# --- deploy: serve, export, predict, bench, eval -------------------------------------------------------------


def test_serve_embed_and_wrong_endpoints(student, tiny_student):
    with TestClient(create_app_for(student)) as client:
        r = client.post("/v1/embed", json={"texts": ["a good film", "bad plot"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["dimension"] == 32 and body["normalized"] is True
        assert [len(e) for e in body["embeddings"]] == [32, 32]
        assert np.linalg.norm(body["embeddings"][0]) == pytest.approx(1.0, abs=1e-5)
        r = client.post("/v1/classify", json={"texts": ["a good film"]})
        assert r.status_code == 404 and "is an embedding model: POST /v1/embed" in r.json()["detail"]
        r = client.post("/v1/embed", json={"texts": ["good"], "text_pairs": ["bad"]})
        assert r.status_code == 422 and "text_pairs" in r.json()["detail"]
        r = client.post("/v1/embed", json={"texts": ["good"] * 65})
        assert r.status_code == 413  # the same limits as /v1/classify
        assert client.get("/health").json()["kind"] == "embedding"
    with TestClient(create_app_for(tiny_student)) as client:
        r = client.post("/v1/embed", json={"texts": ["a good film"]})
        assert r.status_code == 404 and "is a classifier, not an embedding model" in r.json()["detail"]


def create_app_for(folder):
    from distilkit.deploy.serve import create_app

    return create_app(folder, "torch")


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory):
    from distilkit.deploy.export import export_onnx

    out = tmp_path_factory.mktemp("embed_onnx") / "onnx"
    texts = [s for s, _ in sentences(60, seed=5)]
    return out, export_onnx(student, out, data=texts, min_cosine=0.9)


def test_export_checks_int8_by_cosine(exported, student):
    from distilkit.deploy.backends import load_backend

    out, info = exported
    assert info["kind"] == "embedding" and info["passed"] and info["check"]["sentences"] == 60
    results = info["check"]["results"]
    assert results["onnx"]["mean_cosine"] > 0.99999 and results["onnx-int8"]["mean_cosine"] > 0.9
    texts = ["a good film", "the plot " * 20]
    np.testing.assert_allclose(load_backend(out, "onnx")(texts), load_backend(student, "torch")(texts), atol=1e-4)
    # auto: the file the export's short timing found fastest among those that passed the check
    assert info["timing"]["fastest"] in ("onnx", "onnx-int8")
    assert load_backend(out).name == info["timing"]["fastest"] and load_backend(out).output_dim == 32


def test_export_below_the_cosine_tolerance_fails_loudly(student, tmp_path):
    from distilkit.deploy.export import ExportCheckError, export_onnx

    with pytest.raises(ExportCheckError, match=r"mean cosine .* \(below --min-cosine 1.01"):
        export_onnx(student, tmp_path / "onnx", data=["a good film", "bad plot"], min_cosine=1.01)
    assert not (tmp_path / "onnx" / "model.int8.onnx").exists()


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_embedding_equals_sentence_transformers(student, exported, backend, tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = [s for s, _ in sentences(20, seed=9)]
    path = tmp_path / "in.txt"
    path.write_text("\n".join(texts))
    folder = student if backend == "torch" else exported[0]
    result = runner.invoke(app, ["predict", str(folder), "--embedding", "--file", str(path), "--backend", backend])
    assert result.exit_code == 0, result.output
    got = np.array([json.loads(line)["embedding"] for line in result.stdout.splitlines()])
    ref = SentenceTransformer(str(student), device="cpu").encode(texts, convert_to_numpy=True)
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert got.shape == ref.shape and cos.min() >= 0.9999


def test_predict_embedding_on_a_classifier_is_an_error(tiny_student):
    result = runner.invoke(app, ["predict", str(tiny_student), "--embedding", "good film"])
    assert result.exit_code == 2 and "not an embedding model" in result.output


def test_eval_embedding_side_by_side_with_retention(student, teacher, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"query": s, "passage": s + " film"} for s, _ in sentences(12, seed=21)] + [{"passage": "the actor"}]
    pairs.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["eval", str(student), "--embedding", "--teacher", str(teacher), "--compare",
                                 f"again={student}", "--retrieval", str(pairs), "--no-sts", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert set(metrics["models"]) == {"teacher", "student", "again"}
    assert metrics["sets"]["pairs"]["passages"] == 13 and metrics["sets"]["pairs"]["queries"] == 12
    s = metrics["models"]["student"]["pairs"]
    assert set(s) == {"recall@1", "recall@10", "mrr@10"} and 0 <= s["recall@1"] <= s["recall@10"] <= 1
    t = metrics["models"]["teacher"]["pairs"]["recall@10"]
    assert metrics["retention"]["student"]["pairs recall@10"] == pytest.approx(s["recall@10"] / t)
    bad = runner.invoke(app, ["eval", str(student), "--embedding", "--compare", "nodir", "--no-sts",
                              "--retrieval", str(pairs)])
    assert bad.exit_code == 2 and "expected NAME=DIR" in bad.output


def test_bench_accepts_embedding_folders(student, teacher):
    from distilkit.deploy.bench import run_bench

    result = run_bench({"teacher": teacher, "student": student}, seqs=[8], batch=2, repeats=1, warmup=0,
                       backends=["torch"], peak_size=64)
    assert {r["model"] for r in result["results"]} == {"teacher", "student"}
    assert result["models"]["student"]["kind"] == "embedding" and result["models"]["student"]["layers"] == 2


@pytest.mark.integration
def test_minilm_student_on_a_few_hundred_sentences(glue_dir, tmp_path):
    """The real MiniLM: distil 300 STS-B train sentences into layers 0,3,5; it loads in SentenceTransformer,
    keeps mean pooling and normalisation, and stays close to the teacher on 200 STS-B dev pairs."""
    from sentence_transformers import SentenceTransformer

    from distilkit.deploy.backends import load_backend, predict_all
    from distilkit.data.sentences import load_sentences
    from distilkit.data.retrieval import sts_pairs
    from distilkit.models.folders import resolve_model

    sentences_file = tmp_path / "s.txt"
    sentences_file.write_text("\n".join(load_sentences([glue_dir / "STS-B"])[0][:300]))
    out = tmp_path / "student"
    info = distil_embeddings(resolve_model(None), [sentences_file], out, EmbedConfig(epochs=1, batch_size=32),
                             layers="0,3,5", cache_dir=tmp_path / "cache", say=lambda m: None)
    assert info["layer_map"] == [0, 3, 5] and read_pooling(out) == (Pooling("mean", True), None)
    s1, s2, gold = (x[:200] for x in sts_pairs(glue_dir))
    scores = {}
    for name, folder in (("teacher", resolve_model(None)), ("student", out)):
        backend = load_backend(folder, "torch")
        scores[name] = sts_spearman(predict_all(backend, s1), predict_all(backend, s2), gold)
    assert scores["student"] >= 0.9 * scores["teacher"], scores
    st = SentenceTransformer(str(out), device="cpu").encode(s1[:8], convert_to_numpy=True)
    np.testing.assert_allclose(st, predict_all(load_backend(out, "torch"), s1[:8]), atol=1e-5)
