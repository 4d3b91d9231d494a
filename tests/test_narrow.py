"""Narrow students (--hidden-size, --intermediate-size): the chosen teacher dimensions are copied exactly."""

from __future__ import annotations

import json

import pytest
import torch

from distilkit.errors import ConfigError
from distilkit.models.narrow import narrow_student


def _student(tiny_teacher, cls="BertForSequenceClassification"):
    import transformers

    from distilkit.models.student import build_student

    from .conftest import tiny_bert_config

    torch.manual_seed(1)
    teacher = getattr(transformers, cls)(tiny_bert_config(num_labels=2)).eval()
    return build_student(teacher, [0, 2]).eval()


@pytest.mark.parametrize("cls", ["BertForSequenceClassification", "BertForMaskedLM", "BertModel"])
def test_narrow_copies_the_chosen_dims_exactly(cls):
    wide = _student(None, cls)
    narrow, dims = narrow_student(wide, hidden_size=16, intermediate_size=24)
    h = torch.tensor(dims["hidden"])
    assert narrow.config.dim == 16 and narrow.config.hidden_dim == 24 and narrow.config.n_heads == 4
    assert len(h) == 16 and h.tolist() == sorted(set(h.tolist()))
    base, nb = wide.base_model, narrow.base_model
    assert torch.equal(nb.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight[:, h])
    assert torch.equal(nb.embeddings.LayerNorm.weight, base.embeddings.LayerNorm.weight[h])
    for i, (old, new) in enumerate(zip(base.transformer.layer, nb.transformer.layer)):
        a, f = torch.tensor(dims["attention"][i]), torch.tensor(dims["ffn"][i])
        assert len(a) == 16 and len(f) == 24
        assert [int(x) // 8 for x in a] == [k // 4 for k in range(16)]  # 4 dims from each of the 4 heads, in order
        assert torch.equal(new.attention.q_lin.weight, old.attention.q_lin.weight[a][:, h])
        assert torch.equal(new.attention.v_lin.bias, old.attention.v_lin.bias[a])
        assert torch.equal(new.attention.out_lin.weight, old.attention.out_lin.weight[h][:, a])
        assert torch.equal(new.ffn.lin1.weight, old.ffn.lin1.weight[f][:, h])
        assert torch.equal(new.ffn.lin2.weight, old.ffn.lin2.weight[h][:, f])
        assert torch.equal(new.output_layer_norm.bias, old.output_layer_norm.bias[h])
    if cls == "BertForSequenceClassification":
        assert torch.equal(narrow.pre_classifier.weight, wide.pre_classifier.weight[h][:, h])
        assert torch.equal(narrow.classifier.weight, wide.classifier.weight[:, h])
        assert torch.equal(narrow.classifier.bias, wide.classifier.bias)
    if cls == "BertForMaskedLM":
        assert narrow.vocab_projector.weight.data_ptr() == nb.embeddings.word_embeddings.weight.data_ptr()
        assert torch.equal(narrow.vocab_projector.bias, wide.vocab_projector.bias)
    out = narrow(input_ids=torch.tensor([[2, 7, 9, 3]]))
    assert torch.isfinite(out[0]).all()


def test_narrow_keeps_the_largest_dims_and_refuses_bad_sizes():
    wide = _student(None)
    with torch.no_grad():
        wide.base_model.embeddings.word_embeddings.weight[:, 5] *= 100  # a dominant residual dim
    _, dims = narrow_student(wide, hidden_size=4, intermediate_size=8)
    assert 5 in dims["hidden"]
    with pytest.raises(ConfigError, match="multiple of the 4 attention heads"):
        narrow_student(wide, hidden_size=10, intermediate_size=8)
    with pytest.raises(ConfigError, match="--intermediate-size in 1..64"):
        narrow_student(wide, hidden_size=16, intermediate_size=65)


def _batches():
    """Two batches of token ids (vocabulary of the tiny config), the second with a padded row."""
    return [{"input_ids": torch.tensor([[2, 7, 9, 3], [2, 11, 12, 3]]),
             "attention_mask": torch.ones(2, 4, dtype=torch.long)},
            {"input_ids": torch.tensor([[2, 8, 10, 13, 3], [2, 14, 3, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}]


def test_activation_norms_skip_padding():
    from distilkit.models.narrow import activation_norms

    wide = _student(None)
    padded = activation_norms(wide, _batches())
    rows = [{"input_ids": b["input_ids"][r:r + 1, : int(b["attention_mask"][r].sum())],
             "attention_mask": b["attention_mask"][r:r + 1, : int(b["attention_mask"][r].sum())]}
            for b in _batches() for r in range(2)]
    alone = activation_norms(wide, rows)
    for key in ("q", "context", "act"):
        for a, b in zip(padded[key], alone[key]):
            torch.testing.assert_close(a, b)
    assert padded["residual"].shape == (32,) and len(padded["act"]) == 2 and padded["act"][0].shape == (64,)


def test_activation_score_keeps_the_dims_with_large_activations_and_small_weights_and_copies_them_exactly():
    """Residual dim 5, query/key/value dim 2 (head 0) and FFN dim 3 of the first layer: tiny weights (so weight
    magnitude drops them) but large activations (LayerNorm gains, biases); the activation score keeps them."""
    wide = _student(None)
    base = wide.base_model
    layer = base.transformer.layer[0]
    with torch.no_grad():
        for w in (base.embeddings.word_embeddings.weight, base.embeddings.position_embeddings.weight):
            w[:, 5] *= 0.01
        for norm in (base.embeddings.LayerNorm, *[m for l in base.transformer.layer
                                                   for m in (l.sa_layer_norm, l.output_layer_norm)]):
            norm.weight[5] = 50.0
        for l in base.transformer.layer:
            l.attention.out_lin.weight[5] *= 0.01
            l.ffn.lin2.weight[5] *= 0.01
        for lin in (layer.attention.q_lin, layer.attention.k_lin, layer.attention.v_lin):
            lin.weight[2] *= 0.01
        layer.attention.v_lin.bias[2] = 20.0  # every token's value, so the context, is about 20 at dim 2
        layer.ffn.lin1.weight[3] *= 0.01
        layer.ffn.lin1.bias[3] = 20.0  # the activation is about 20 on every token
    _, by_weight = narrow_student(wide, hidden_size=16, intermediate_size=24)
    assert 5 not in by_weight["hidden"] and 2 not in by_weight["attention"][0] and 3 not in by_weight["ffn"][0]
    narrow, dims = narrow_student(wide, hidden_size=16, intermediate_size=24, batches=_batches())
    assert 5 in dims["hidden"] and 2 in dims["attention"][0] and 3 in dims["ffn"][0]
    h, a, f = (torch.tensor(d) for d in (dims["hidden"], dims["attention"][0], dims["ffn"][0]))
    new = narrow.base_model.transformer.layer[0]
    embeddings = base.embeddings.word_embeddings.weight
    assert torch.equal(narrow.base_model.embeddings.word_embeddings.weight, embeddings[:, h])
    assert torch.equal(new.attention.v_lin.weight, layer.attention.v_lin.weight[a][:, h])
    assert torch.equal(new.attention.out_lin.weight, layer.attention.out_lin.weight[h][:, a])
    assert torch.equal(new.ffn.lin1.bias, layer.ffn.lin1.bias[f])
    assert torch.equal(new.ffn.lin2.weight, layer.ffn.lin2.weight[h][:, f])
    assert torch.equal(new.output_layer_norm.weight, layer.output_layer_norm.weight[h])
    assert wide.training is False


def test_student_command_narrows(tiny_teacher, tmp_path):
    import json

    from typer.testing import CliRunner

    from distilkit.cli import app
    from distilkit.models.loading import load_any

    result = CliRunner().invoke(app, ["student", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "s"),
                                      "--hidden-size", "16", "--intermediate-size", "32"])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "s" / "distil.json").read_text())
    assert info["narrow"]["hidden_size"] == 16 and len(info["narrow"]["hidden_dims"]) == 16
    model = load_any(str(tmp_path / "s"))
    assert model.config.dim == 16 and model.config.hidden_dim == 32
    assert info["parameters"]["student"]["total"] < info["parameters"]["teacher"]["total"] / 3
    result = CliRunner().invoke(app, ["student", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "t"),
                                      "--hidden-size", "16"])
    assert result.exit_code == 2 and "go together" in result.output


def test_hidden_loss_of_a_narrow_student_goes_through_trained_projections_that_are_not_saved(tiny_teacher, tmp_path):
    """Width 32 → 16: the hidden-state loss maps the student's states through one Linear per compared layer,
    started as the copy undone, trained (its weights move), saved in checkpoints, never in the student."""
    import datasets
    from safetensors import safe_open

    from distilkit.models.folders import load_tokenizer
    from distilkit.models.loading import load_classifier
    from distilkit.models.student import build_student
    from distilkit.train.common import Collator, TrainConfig, encode, training_arguments
    from distilkit.train.task import PROJECTION_FILE, DistillConfig, DistillationTrainer, hidden_projections

    tokenizer = load_tokenizer(str(tiny_teacher))
    ds = encode(datasets.Dataset.from_dict({"text": ["good movie", "bad plot", "a dull story", "great film"] * 2,
                                            "label": [1, 0, 0, 1] * 2}), tokenizer, 16)
    ds = ds.add_column("teacher_logits", [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]] * 2)
    torch.manual_seed(0)
    teacher = load_classifier(str(tiny_teacher), num_labels=2).eval()
    student, dims = narrow_student(build_student(teacher, [0, 2]), hidden_size=16, intermediate_size=32)
    cfg = TrainConfig(max_steps=3, batch_size=4, bf16=False, save_steps=2, learning_rate=1e-2)
    trainer = DistillationTrainer(model=student, args=training_arguments(cfg, tmp_path / "ckpt"), train_dataset=ds,
                                  data_collator=Collator(tokenizer, {"input_ids", "attention_mask", "token_type_ids"}),
                                  distill=DistillConfig(hidden_weight=1.0), regression=False, teacher=teacher,
                                  projection_dims=dims["hidden"])
    start = hidden_projections(16, 32, 3, dims["hidden"])
    assert len(trainer.projections) == 3  # embeddings + 2 layers
    assert torch.equal(trainer.projections[0].weight, start[0].weight)
    assert torch.equal(start[1].weight[dims["hidden"][5]], torch.eye(16)[5])  # student dim 5 → its teacher dim
    trainer.train()
    assert all(not torch.equal(p.weight, s.weight) for p, s in zip(trainer.projections, start))  # trained
    assert any(p is trainer.projections[0].weight for g in trainer.optimizer.param_groups for p in g["params"])
    saved = torch.load(tmp_path / "ckpt" / "checkpoint-3" / PROJECTION_FILE)  # the last checkpoint: what --resume reads
    assert saved["0.weight"].shape == (32, 16) and torch.equal(saved["2.weight"], trainer.projections[2].weight)
    student.save_pretrained(tmp_path / "student")
    with safe_open(str(tmp_path / "student" / "model.safetensors"), "pt") as f:
        assert all(key.startswith(("distilbert.", "pre_classifier", "classifier")) for key in f.keys())
        assert f.get_tensor("distilbert.embeddings.word_embeddings.weight").shape[1] == 16
    assert student.config.dim == 16


def test_fewer_heads_keeps_whole_heads_exactly():
    wide = _student(None)  # 4 heads of 8 dims, 32 wide
    narrow, dims = narrow_student(wide, hidden_size=16, intermediate_size=24, heads=2)
    assert narrow.config.n_heads == 2 and narrow.config.dim == 16
    h = torch.tensor(dims["hidden"])
    for i, (old, new) in enumerate(zip(wide.base_model.transformer.layer, narrow.base_model.transformer.layer)):
        a = torch.tensor(dims["attention"][i])
        heads = sorted({int(x) // 8 for x in a})
        assert len(heads) == 2 and a.tolist() == [k * 8 + j for k in heads for j in range(8)]  # 2 whole heads
        assert torch.equal(new.attention.k_lin.weight, old.attention.k_lin.weight[a][:, h])
        assert torch.equal(new.attention.out_lin.weight, old.attention.out_lin.weight[h][:, a])
    assert torch.isfinite(narrow(input_ids=torch.tensor([[2, 7, 9, 3]]))[0]).all()
    with pytest.raises(ConfigError, match="--heads must be in 1..4"):
        narrow_student(wide, hidden_size=16, intermediate_size=24, heads=5)
    with pytest.raises(ConfigError, match="12 dims a head, more than the teacher's 8"):
        narrow_student(wide, hidden_size=24, intermediate_size=24, heads=2)


def test_task_narrows_and_trims_a_student_that_trains_exports_predicts_and_serves(tiny_glue, tmp_path):
    """`distil task --hidden-size --intermediate-size --heads --trim-vocab --hidden-weight` on a tiny teacher: the
    student is narrow and trimmed, its record says so, it has no projection weights, and it exports and serves."""
    import numpy as np
    from fastapi.testclient import TestClient
    from safetensors import safe_open
    from typer.testing import CliRunner

    from distilkit.cli import app
    from distilkit.deploy.backends import load_backend
    from distilkit.deploy.export import export_onnx
    from distilkit.deploy.serve import create_app

    from .test_vocab import IN_VOCAB, UNSEEN, save_teacher

    teacher = save_teacher(tmp_path / "teacher", "BertForSequenceClassification")
    glue = tiny_glue
    runner = CliRunner()
    args = ["task", "--teacher", str(teacher), "--data", str(glue), "--layers", "0,2", "--epochs", "1",
            "--batch-size", "16", "--no-bf16", "--cache-dir", str(tmp_path / "cache"), "--hidden-size", "16",
            "--intermediate-size", "32", "--heads", "2", "--score-rows", "8", "--trim-vocab", "--hidden-weight", "1"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "s" / "distil.json").read_text())
    assert info["width"] == {"hidden_size": 16, "intermediate_size": 32, "heads": 2, "score_rows": 8}
    assert info["narrow"]["score"] == "activations on 8 training rows"
    assert len(info["narrow"]["hidden_dims"]) == 16 and info["vocab"]["kept"] < info["vocab"]["teacher_vocab"]
    assert info["distillation"]["hidden_weight"] == 1.0
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert (config["dim"], config["hidden_dim"], config["n_heads"]) == (16, 32, 2)
    with safe_open(str(tmp_path / "s" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "projection" in k]
    out = tmp_path / "onnx"
    export_onnx(tmp_path / "s", out)
    texts = IN_VOCAB + UNSEEN
    np.testing.assert_allclose(load_backend(out, "onnx")(texts), load_backend(tmp_path / "s", "torch")(texts),
                               atol=1e-4)
    result = runner.invoke(app, ["predict", str(out), "--backend", "onnx-int8", *texts])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == len(texts)
    with TestClient(create_app(out, "onnx-int8")) as client:
        r = client.post("/v1/classify", json={"texts": texts})
    assert r.status_code == 200, r.text
    result = runner.invoke(app, [*args[:-2], "--cls-weight", "1", "--out", str(tmp_path / "t")])
    assert result.exit_code == 2 and "--cls-weight compares [CLS] states of one width" in result.output
    result = runner.invoke(app, ["task", "--teacher", str(teacher), "--out", str(tmp_path / "u"), "--heads", "2"])
    assert result.exit_code == 2 and "--heads goes with --hidden-size" in result.output


def test_run_narrows_the_student_init_and_resumes_only_with_the_same_width(tiny_glue, tmp_path):
    from distilkit.data.task import load_task_data
    from distilkit.experiments.run import run_pipeline
    from distilkit.models.narrow import Width
    from distilkit.stages.reuse import StageConfigError
    from distilkit.stages.task import task_stages
    from distilkit.train.common import TrainConfig
    from distilkit.train.task import DistillConfig

    from .test_vocab import FAST, save_teacher

    teacher = save_teacher(tmp_path / "teacher", "BertForSequenceClassification")
    data = load_task_data("sst2", tiny_glue)
    cfg, width, out = TrainConfig(**FAST), Width(16, 32), tmp_path / "run"
    metrics = run_pipeline(str(teacher), data, out, cfg, cfg, DistillConfig(hidden_weight=1.0), layers="0,2",
                           width=width, size=True)
    sizes = metrics["size"]
    for name in ("teacher", "student"):
        s = sizes[name]
        assert s["parameters"] == metrics["models"][name]["parameters"]
        assert 0 < s["int8_mb"] < s["fp32_mb"] and 50 < s["runtime_rss_mb"] <= s["int8_peak_rss_mb"] < 1000
        assert json.loads((out / name / "size.json").read_text()) == s
    assert sizes["student"]["fp32_mb"] < sizes["teacher"]["fp32_mb"] / 2
    assert "int8 ONNX MB" in (out / "report.md").read_text()
    assert "## Size" in (out / "student" / "README.md").read_text()
    assert json.loads((out / "student" / "export.json").read_text())["model"] == str(out / "student")
    for name in ("student_init", "student", "baseline"):
        assert json.loads((out / name / "config.json").read_text())["dim"] == 16
    init = json.loads((out / "student_init" / "distil.json").read_text())
    assert init["width"] == {"hidden_size": 16, "intermediate_size": 32}
    assert init["narrow"]["score"] == "weight magnitude"
    models = metrics["models"]
    assert models["student"]["parameters"]["non_embedding"] < models["teacher"]["parameters"]["non_embedding"] / 4
    with pytest.raises(StageConfigError, match="width"):
        task_stages(str(teacher), data, cfg, cfg, DistillConfig(hidden_weight=1.0), out, out / "cache", layers="0,2")


def test_embedding_student_narrowed_trains_through_a_projection(tmp_path):
    from sentence_transformers import SentenceTransformer
    from transformers import BertModel

    from distilkit.models.narrow import Width
    from distilkit.models.pooling import Pooling, write_sentence_transformers_files
    from distilkit.stages.embedding import distil_embeddings
    from distilkit.train.embedding import EmbedConfig

    from .conftest import make_tokenizer, sentences, tiny_bert_config

    teacher = tmp_path / "teacher"
    torch.manual_seed(0)
    make_tokenizer(teacher).save_pretrained(teacher)
    BertModel(tiny_bert_config(), add_pooling_layer=False).save_pretrained(teacher)
    write_sentence_transformers_files(teacher, Pooling("mean", True), 32, 64)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(s for s, _ in sentences(40, 1)) + "\n")
    info = distil_embeddings(str(teacher), [corpus], tmp_path / "s", EmbedConfig(epochs=1, batch_size=8, max_length=32),
                             layers="0,2", cache_dir=tmp_path / "cache", say=lambda m: None, save_steps=2,
                             width=Width(16, 32, 2))
    assert info["width"]["heads"] == 2 and info["train"]["steps"] == 5
    assert SentenceTransformer(str(tmp_path / "s"), device="cpu").encode(["a good movie"]).shape == (1, 16)
