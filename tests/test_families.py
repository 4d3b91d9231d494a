"""The family matrix: a tiny random teacher of every family in the family table (its own config class and
tokenizer kind) through `distil run` → ONNX export (fp32 and int8, each checked against torch on the dev data)
→ `distil eval` → `distil predict` → POST /v1/classify; two sentence-embedding families through `distil embed`
→ export → POST /v1/embed; the layer rules and layer losses on each family's own modules; and unsupported
families refused by name, by every command, before any work.

Set DISTILKIT_FAMILY_MATRIX=path.json to keep the matrix's numbers (one row per family)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from distilkit import losses
from distilkit.cli import app
from distilkit.data.task import load_task_data
from distilkit.deploy.backends import ONNX_INT8, OrtBackend, predict_all
from distilkit.deploy.export import export_onnx
from distilkit.deploy.serve import create_app
from distilkit.experiments.run import run_pipeline
from distilkit.models.families import FAMILIES, FamilyError, depth, family_of
from distilkit.models.folders import load_tokenizer
from distilkit.models.loading import load_classifier, load_encoder, save_model
from distilkit.models.pooling import Pooling, write_sentence_transformers_files
from distilkit.models.student import StudentError, build_student
from distilkit.stages.embedding import distil_embeddings
from distilkit.train.common import TrainConfig, attention_qkv
from distilkit.train.embedding import EmbedConfig
from distilkit.train.task import DistillConfig

from .conftest import make_tokenizer, sentences
from .family_fixtures import FAMILY_NAMES, make_family_teacher

pytestmark = pytest.mark.families
runner = CliRunner()
FAST = TrainConfig(epochs=1, batch_size=32, learning_rate=1e-3, max_length=32, bf16=False, save_steps=100,
                   logging_steps=10)
TOLERANCE = 10.0  # dev-score drop (points) an export may show: 3 of the 32 dev examples; random tiny models
MIN_INT8_AGREEMENT = 0.85
TEXTS = ["a good film", "the plot was very dull", "nice actor"]
MATRIX: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def matrix_record():
    """One torch thread (tiny models train 3x faster on a busy machine); after the module, the matrix's
    numbers to DISTILKIT_FAMILY_MATRIX when set."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    path = os.environ.get("DISTILKIT_FAMILY_MATRIX")
    if path and MATRIX:
        with open(path, "w") as f:
            json.dump(MATRIX, f, indent=1)


def test_the_matrix_covers_the_family_table():
    assert set(FAMILY_NAMES) <= set(FAMILIES)
    assert set(FAMILIES) - set(FAMILY_NAMES) == {"camembert", "deberta"}  # same code paths as roberta, deberta-v2


# --- task pipeline per family: run → export → eval → predict → /v1/classify ------------------------------------


def centre_logits(model_dir, out, texts: list[str]):
    """The classifier with its output bias shifted so its mean logits on `texts` are 0: a tiny random model after
    a few steps predicts nearly one label, and label agreement with one label would check nothing."""
    model, tokenizer = load_classifier(str(model_dir)).eval(), load_tokenizer(str(model_dir))
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)
            and m.out_features == model.config.num_labels][-1]  # the family's output layer, whatever its name
    with torch.no_grad():
        head.bias -= model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.mean(0)
    save_model(model, tokenizer, out, json.loads((model_dir / "distil.json").read_text()))
    return out


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def family_run(request, tiny_glue, tmp_path_factory):
    """(family, run folder, metrics.json, export.json): the run's student, logits centred (centred/), exported
    with int8 to its own folder (onnx/) and checked on the dev data."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    teacher = make_family_teacher(family, root / "teacher_in", init_range=0.3)
    data = load_task_data("sst2", tiny_glue)
    metrics = run_pipeline(str(teacher), data, root / "run", FAST, FAST, DistillConfig(alpha=0.5, temperature=2.0))
    centre_logits(root / "run" / "student", root / "centred", [s for s, _ in sentences(64, seed=100)])
    exported = export_onnx(root / "centred", root / "onnx", quantize=True, data=data, tolerance=TOLERANCE)
    student_type = json.loads((root / "run" / "student_init" / "distil.json").read_text())["student_type"]
    int8 = OrtBackend(root / "onnx", file=ONNX_INT8)
    dev_labels = predict_all(int8, [t for ds in data.dev.values() for t in ds["text"]]).argmax(-1)
    MATRIX[family] = {"student_type": student_type, "layer_map": metrics["layer_map"],
                      "student_accuracy": metrics["models"]["student"]["accuracy"],
                      "int8_dev_label_counts": np.bincount(dev_labels, minlength=2).tolist(),
                      "optimizer": exported["optimizer"], "check": exported["check"]["results"]}
    return family, root, metrics, exported


def test_run_builds_a_student_of_the_teachers_family(family_run):
    family, root, metrics, _ = family_run
    info = json.loads((root / "run" / "student_init" / "distil.json").read_text())
    assert info["teacher_type"] == family
    assert info["student_type"] == ("distilbert" if family == "bert" else family)  # BERT → DistilBERT
    assert metrics["layer_map"] == [0, 2]  # alternate layers of 4
    for model in ("teacher", "student", "baseline"):
        assert 0.0 <= metrics["models"][model]["accuracy"] <= 1.0
    from transformers import AutoConfig

    student = AutoConfig.from_pretrained(root / "run" / "student")
    assert depth(student) == 2 and student.model_type == info["student_type"]


def test_export_fp32_equals_torch_and_int8_is_checked(family_run):
    family, root, _, exported = family_run
    results = exported["check"]["results"]
    assert exported["passed"] and set(exported["files"]) == {"model.onnx", "model.int8.onnx"}
    assert results["onnx"]["max_abs_logit_diff"] < 1e-4 and results["onnx"]["label_agreement"] == 1.0
    assert results["onnx-int8"]["score_drop_points"] <= TOLERANCE
    assert results["onnx-int8"]["label_agreement"] >= MIN_INT8_AGREEMENT
    assert results["onnx-int8"]["max_abs_logit_diff"] < 1.0  # int8 weights move the logits, not far
    optimizer = json.loads((root / "onnx" / "export.json").read_text())["optimizer"]
    model_type = FAMILIES[MATRIX[family]["student_type"]].ort_model_type
    assert optimizer["ort_model_type"] == model_type
    assert optimizer["fused"] == (model_type is not None)  # fused with the family's type, else not at all


def test_eval_command_reproduces_the_run(family_run, tiny_glue):
    _, root, metrics, _ = family_run
    result = runner.invoke(app, ["eval", str(root / "run" / "student"), "--data", str(tiny_glue), "--max-length",
                                 "32", "--out", str(root / "eval.json")])
    assert result.exit_code == 0, result.output
    again = json.loads((root / "eval.json").read_text())["metrics"]
    assert again["accuracy"] == pytest.approx(metrics["models"]["student"]["accuracy"])


def _predict(folder, backend: str) -> list[dict]:
    result = runner.invoke(app, ["predict", str(folder), *TEXTS, "--backend", backend])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_predict_onnx_agrees_with_torch(family_run):
    family, root, _, _ = family_run
    onnx, torch_rows = _predict(root / "onnx", "onnx"), _predict(root / "centred", "torch")
    assert [r["label"] for r in onnx] == [r["label"] for r in torch_rows]
    assert [r["score"] for r in onnx] == pytest.approx([r["score"] for r in torch_rows], abs=1e-4)
    int8 = _predict(root / "onnx", "auto")  # the int8 file
    assert all(r["label"] in ("negative", "positive") and 0.5 <= r["score"] <= 1 for r in int8)
    MATRIX[family]["predict"] = [r["label"] for r in int8]


def test_classify_endpoint_answers_like_predict(family_run):
    family, root, _, _ = family_run
    with TestClient(create_app(root / "onnx", "auto")) as client:
        r = client.post("/v1/classify", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        rows = r.json()["results"]
    assert [row["label"] for row in rows] == MATRIX[family]["predict"]
    MATRIX[family]["classify"] = [row["label"] for row in rows]


# --- embedding families: embed → export → /v1/embed ---------------------------------------------------------


@pytest.fixture(scope="module", params=["bert", "mpnet"])
def embedding_export(request, tmp_path_factory):
    family = request.param
    root = tmp_path_factory.mktemp(f"embed-{family}")
    teacher = make_family_teacher(family, root / "teacher", init_range=0.3)
    write_sentence_transformers_files(teacher, Pooling("mean", True), 32, 32)
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(s for s, _ in sentences(128, seed=3)) + "\n")
    info = distil_embeddings(str(teacher), [corpus], root / "student", EmbedConfig(epochs=1, batch_size=32,
                             max_length=32), cache_dir=root / "cache", say=lambda m: None)
    check = [s for s, _ in sentences(40, seed=9)]
    exported = export_onnx(root / "student", root / "onnx", data=check, min_cosine=0.99)
    MATRIX[f"embed:{family}"] = {"student_type": info["student_type"], "check": exported["check"]["results"],
                                 "optimizer": exported["optimizer"]}
    return family, root, info, exported


def test_embedding_student_exports_checked_and_serves(embedding_export):
    family, root, info, exported = embedding_export
    assert info["student_type"] == ("distilbert" if family == "bert" else family)
    results = exported["check"]["results"]
    assert exported["passed"] and results["onnx"]["max_abs_diff"] < 1e-4
    assert results["onnx-int8"]["mean_cosine"] >= 0.99
    with TestClient(create_app(root / "onnx", "auto")) as client:
        r = client.post("/v1/embed", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["dimension"] == 32 and body["normalized"] is True
    assert np.linalg.norm(body["embeddings"], axis=1) == pytest.approx([1.0] * len(TEXTS), abs=1e-5)


# --- layer rules and layer losses on each family's own modules ----------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_layer_losses_read_each_familys_own_modules(family, tmp_path):
    """One hidden state per layer plus the embeddings (the hidden-state loss pairs them by depth); the attention
    recomputed from the family's q/k projections is the model's own (eager) attention in every layer, teacher
    and student, or the family is refused by name."""
    teacher = load_encoder(str(make_family_teacher(family, tmp_path / family, init_range=0.3)))
    student = build_student(teacher, [0, 2]).eval()
    ids = torch.randint(5, 20, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    for model in (teacher, student):
        model.set_attn_implementation("eager")
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        assert len(out.hidden_states) == depth(model.config) + 1
        if family_of(model.config).attention_qkv is None:
            with pytest.raises(FamilyError, match=family):
                attention_qkv(model, out.hidden_states[0], 0)
            continue
        real = mask.bool()[:, None, :, None].expand(-1, model.config.num_attention_heads, -1, 7)
        for layer, attentions in enumerate(out.attentions):
            with torch.no_grad():
                q, k, _ = attention_qkv(model, out.hidden_states[layer], layer)
                mine = losses.self_attention_relation(q, k, mask)
            assert torch.allclose(mine[real], attentions[real], atol=1e-6), (family, layer)


def test_modernbert_student_keeps_each_copied_layers_attention_kind(tmp_path):
    """Teacher layers alternate global/local (global every 2nd); layers 0 and 2 are both global, so the
    student must be global/global, not the fresh 2-layer pattern global/local, and a full copy is the teacher."""
    from transformers import AutoConfig

    teacher = load_encoder(str(make_family_teacher("modernbert", tmp_path / "t", init_range=0.3)))
    assert teacher.config.layer_types == ["full_attention", "sliding_attention"] * 2
    student = build_student(teacher, [0, 2]).eval()
    assert student.config.layer_types == ["full_attention", "full_attention"]
    assert [layer.attn.sliding_window for layer in student.layers] == [None, None]
    student.save_pretrained(tmp_path / "s")
    assert AutoConfig.from_pretrained(tmp_path / "s").layer_types == ["full_attention", "full_attention"]
    ids = torch.randint(5, 20, (2, 12))  # longer than the 4-token window: local and global differ
    full = build_student(teacher, [0, 1, 2, 3]).eval()
    with torch.no_grad():
        assert torch.allclose(full(input_ids=ids).last_hidden_state, teacher(input_ids=ids).last_hidden_state)
        wrong = type(student)(student.config.__class__(**{**student.config.to_dict(),
                                                          "layer_types": ["full_attention", "sliding_attention"]}))
        wrong.load_state_dict(student.state_dict())
        assert not torch.allclose(wrong.eval()(input_ids=ids).last_hidden_state,
                                  student(input_ids=ids).last_hidden_state, atol=1e-4)


def test_modernbert_student_must_start_with_layer_0(tmp_path):
    teacher = make_family_teacher("modernbert", tmp_path / "t")
    result = runner.invoke(app, ["student", "--teacher", str(teacher), "--out", str(tmp_path / "s"), "--layers", "1,3"])
    assert result.exit_code == 2 and "layer 0" in result.output and not (tmp_path / "s").exists()
    with pytest.raises(StudentError, match="layer 0"):
        build_student(load_encoder(str(teacher)), [0, 0])


@pytest.mark.parametrize("family", ["roberta", "electra", "distilbert"])
def test_headless_pretraining_runs_where_the_attention_can_be_recomputed(family, tmp_path):
    teacher = make_family_teacher(family, tmp_path / "t", init_range=0.2)
    (tmp_path / "corpus.txt").write_text("\n".join(s for s, _ in sentences(120, seed=5)) + "\n")
    out = tmp_path / "pretrain"
    result = runner.invoke(app, ["pretrain", "--teacher", str(teacher), "--corpus", str(tmp_path / "corpus.txt"),
                                 "--out", str(out), "--recipe", "headless", "--max-len", "12", "--batch-size", "8",
                                 "--max-steps", "2", "--save-steps", "2", "--no-bf16"])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "pretrain.json").read_text())
    assert info["recipe"] == "headless" and info["steps"] == 2 and info["attention_kl_after"] >= 0
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out).model_type == family and depth(AutoConfig.from_pretrained(out)) == 2


@pytest.mark.parametrize("family", ["mpnet", "deberta-v2", "modernbert"])
def test_attention_losses_refuse_families_whose_attention_cannot_be_recomputed(family, tmp_path, tiny_glue):
    teacher = make_family_teacher(family, tmp_path / "t")
    (tmp_path / "corpus.txt").write_text("\n".join(s for s, _ in sentences(50, seed=5)) + "\n")
    for argv in (["pretrain", "--teacher", str(teacher), "--corpus", str(tmp_path / "corpus.txt"), "--out",
                  str(tmp_path / "pretrain"), "--recipe", "headless"],
                 ["task", "--teacher", str(teacher), "--data", str(tiny_glue), "--out", str(tmp_path / "task"),
                  "--attention-weight", "1"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 2, result.output
        assert family in result.output and "recomputes the attention" in result.output
    assert not (tmp_path / "pretrain").exists() and not (tmp_path / "task").exists()


# --- unsupported families: refused by name, before any work, by every command ---------------------------------


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    from transformers import GPT2Config, GPT2Model

    folder = tmp_path_factory.mktemp("gpt2")
    tokenizer = make_tokenizer(folder)
    GPT2Model(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64)).save_pretrained(
        folder)
    return folder


@pytest.mark.parametrize("argv", [
    ["student", "--teacher", "{m}", "--out", "{tmp}/out"],
    ["finetune", "--teacher", "{m}", "--data", "{data}", "--out", "{tmp}/out"],
    ["task", "--teacher", "{m}", "--data", "{data}", "--out", "{tmp}/out"],
    ["run", "--teacher", "{m}", "--data", "{data}", "--out", "{tmp}/out"],
    ["embed", "--teacher", "{m}", "--corpus", "{data}", "--out", "{tmp}/out"],
    ["pretrain", "--teacher", "{m}", "--corpus", "{data}", "--out", "{tmp}/out", "--recipe", "headless"],
    ["eval", "{m}", "--data", "{data}", "--out", "{tmp}/out"],
    ["export", "{m}", "--data", "{data}", "--out", "{tmp}/out"],
    ["predict", "{m}", "a good film"],
    ["serve", "{m}", "--port", "0"],
], ids=lambda argv: argv[0])
def test_unsupported_family_is_refused_by_name_before_any_work(argv, gpt2_folder, tiny_glue, tmp_path):
    args = [a.format(m=gpt2_folder, data=tiny_glue, tmp=tmp_path) for a in argv]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "'gpt2' is not supported" in result.output and "modernbert" in result.output  # names the supported ones
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".*"))
    assert not (gpt2_folder / "model.onnx").exists()


def test_run_pipeline_refuses_an_unsupported_family_before_any_work(gpt2_folder, tiny_glue, tmp_path):
    with pytest.raises(FamilyError, match="'gpt2' is not supported"):
        run_pipeline(str(gpt2_folder), load_task_data("sst2", tiny_glue), tmp_path / "run", FAST, FAST,
                     DistillConfig())
    assert list(tmp_path.iterdir()) == []
