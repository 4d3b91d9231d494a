"""The pipeline on tiny random models and tiny GLUE-layout data: stages, folders, errors."""

import json

import pytest
from typer.testing import CliRunner

from distilkit.artifacts import OutputExistsError, atomic_output_dir, write_json
from distilkit.cli import app
from distilkit.data.errors import DataError
from distilkit.data.task import load_task_data
from distilkit.errors import ConfigError
from distilkit.models.folders import ModelError, resolve_model
from distilkit.stages.task import distil_task, finetune_teacher, make_student, train_baseline
from distilkit.experiments.run import run_pipeline
from distilkit.models.student import StudentError
from distilkit.train.common import TrainConfig
from distilkit.train.task import DistillConfig

FAST = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-3, max_length=32, bf16=False, save_steps=3,
                   logging_steps=2)
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tiny_teacher, tiny_glue, tmp_path_factory):
    data = load_task_data("sst2", tiny_glue)
    out = tmp_path_factory.mktemp("runs") / "run"
    metrics = run_pipeline(str(tiny_teacher), data, out, FAST, FAST, DistillConfig(alpha=0.5, temperature=2.0),
                           layers="first-2")
    return out, metrics


def test_run_writes_every_stage_and_metrics(tiny_run):
    out, metrics = tiny_run
    for stage in ("teacher", "student_init", "student", "baseline"):
        assert (out / stage / "model.safetensors").exists()
        assert (out / stage / "distil.json").exists()
        assert not list((out / stage).glob("checkpoint*")) and not (out / stage / "checkpoints").exists()
    assert not list(out.parent.glob(".*partial"))
    assert (out / "student" / "README.md").exists()  # the Hugging Face model card
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["models"].keys() == {"teacher", "student", "baseline"}
    for model in on_disk["models"].values():
        assert 0.0 <= model["accuracy"] <= 1.0 and model["score"] == model["accuracy"]
        assert model["parameters"]["total"] > 0
    assert on_disk["retention"] == pytest.approx(on_disk["models"]["student"]["score"] / on_disk["models"]["teacher"]["score"])
    assert set(on_disk["train_seconds"]) == {"teacher", "teacher_outputs", "student", "baseline"}
    assert on_disk["layer_map"] == [0, 1]
    assert str(out) in json.loads((out / "student" / "distil.json").read_text())["teacher"]
    assert "partial" not in (out / "metrics.json").read_text()
    assert (out / "report.md").read_text().count("| teacher |") == 1 and (out / "report.png").stat().st_size > 0


def test_student_folder_loads_as_standard_distilbert(tiny_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    out, _ = tiny_run
    model = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert model.config.model_type == "distilbert" and model.config.n_layers == 2
    tokenizer = AutoTokenizer.from_pretrained(out / "student")
    assert "token_type_ids" not in tokenizer("good movie")
    classify = pipeline("text-classification", model=str(out / "student"))
    assert classify("good movie")[0]["label"] in ("negative", "positive")


def test_eval_command_reproduces_run_metrics(tiny_run, tiny_glue):
    out, metrics = tiny_run
    result = runner.invoke(app, ["eval", str(out / "student"), "--data", str(tiny_glue), "--out",
                                 str(out.parent / "eval.json")])
    assert result.exit_code == 0, result.output
    again = json.loads((out.parent / "eval.json").read_text())["metrics"]
    assert again["accuracy"] == pytest.approx(metrics["models"]["student"]["accuracy"])


def test_run_refuses_existing_output_without_overwrite(tiny_run):
    out, _ = tiny_run
    before = (out / "metrics.json").read_text()
    result = runner.invoke(app, ["run", "--out", str(out)])
    assert result.exit_code == 2 and "already exists" in result.output and "--overwrite" in result.output
    assert (out / "metrics.json").read_text() == before


def test_resume_reuses_finished_stages(tiny_teacher, tiny_glue, tmp_path):
    data = load_task_data("sst2", tiny_glue)
    out = tmp_path / "run"
    partial = tmp_path / ".run.partial"
    # a run killed after its teacher stage: only the teacher folder is finished
    finetune_teacher(str(tiny_teacher), data, FAST, partial / "teacher")
    stamp = (partial / "teacher" / "model.safetensors").stat().st_mtime_ns
    metrics = run_pipeline(str(tiny_teacher), data, out, FAST, FAST, DistillConfig(), layers="first-2", resume=True)
    assert (out / "teacher" / "model.safetensors").stat().st_mtime_ns == stamp
    assert metrics["train_seconds"]["teacher"] > 0 and (out / "baseline" / "model.safetensors").exists()


def test_resume_refuses_a_finished_stage_made_with_another_configuration(tiny_teacher, tiny_glue, tmp_path):
    from distilkit.stages.reuse import StageConfigError

    data = load_task_data("sst2", tiny_glue)
    partial = tmp_path / ".run.partial"
    finetune_teacher(str(tiny_teacher), data, FAST, partial / "teacher")  # killed after its teacher stage
    other = TrainConfig(**{**FAST.to_dict(), "learning_rate": 5e-4})
    with pytest.raises(StageConfigError, match=r"teacher holds a finished stage made with config="):
        run_pipeline(str(tiny_teacher), data, tmp_path / "run", other, FAST, DistillConfig(), layers="first-2",
                     resume=True)
    result = runner.invoke(app, ["run", "--teacher", str(tiny_teacher), "--data", str(tiny_glue), "--out",
                                 str(tmp_path / "run"), "--resume", "--teacher-lr", "5e-4", "--max-length", "32"])
    assert result.exit_code == 2 and "made with config=" in result.output


def test_distillation_uses_cached_teacher_outputs(tiny_teacher, tiny_glue, tmp_path):
    data = load_task_data("sst2", tiny_glue)
    teacher = tmp_path / "teacher"
    finetune_teacher(str(tiny_teacher), data, FAST, teacher)
    first = distil_task(str(teacher), data, FAST, DistillConfig(), tmp_path / "s1", tmp_path / "cache", layers="first-2")
    second = distil_task(str(teacher), data, FAST, DistillConfig(), tmp_path / "s2", tmp_path / "cache", layers="first-2")
    assert first["teacher_outputs_seconds"] > 0 and second["teacher_outputs_seconds"] == 0.0
    assert len(list((tmp_path / "cache").iterdir())) == 1
    assert second["metrics"] == first["metrics"]  # same seed, same cached targets
    # The same first rows but fewer of them (or more, with --augment) must not reuse those targets.
    fewer = distil_task(str(teacher), load_task_data("sst2", tiny_glue, train_limit=90), FAST, DistillConfig(),
                        tmp_path / "s3", tmp_path / "cache", layers="first-2")
    more = distil_task(str(teacher), data, FAST, DistillConfig(augment=1), tmp_path / "s4", tmp_path / "cache",
                       layers="first-2")
    assert fewer["teacher_outputs_seconds"] > 0 and more["teacher_outputs_seconds"] > 0
    assert len(list((tmp_path / "cache").iterdir())) == 3


def test_regression_task_from_user_files(tiny_teacher, tmp_path):
    rows = [("good movie", 4.5), ("bad plot", 0.5), ("a fine film", 3.0), ("dull story", 1.0)] * 6
    for name in ("train.csv", "dev.csv"):
        (tmp_path / name).write_text("sentence,score\n" + "\n".join(f"{t},{y}" for t, y in rows) + "\n")
    data = load_task_data(None, None, tmp_path / "train.csv", tmp_path / "dev.csv", "sentence", None, "score", True)
    teacher = tmp_path / "teacher"
    info = finetune_teacher(str(tiny_teacher), data, FAST, teacher)
    assert set(info["metrics"]) == {"pearson", "spearman", "score"}
    student = distil_task(str(teacher), data, FAST, DistillConfig(), tmp_path / "student", tmp_path / "cache",
                          layers="first-2")
    assert student["parameters"]["total"] < info["parameters"]["total"]
    base = train_baseline(str(tmp_path / "student"), data, FAST, tmp_path / "baseline")
    assert "pearson" in base["metrics"]


def test_student_command_prints_parameters_and_writes_folder(tiny_teacher, tmp_path):
    result = runner.invoke(app, ["student", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "non-embedding" in result.output and "teacher" in result.output
    info = json.loads((tmp_path / "s" / "distil.json").read_text())
    assert info["layer_map"] == [0, 2] and info["student_type"] == "distilbert"


def test_student_deeper_than_teacher_is_refused(tiny_teacher, tmp_path):
    result = runner.invoke(app, ["student", "--teacher", str(tiny_teacher), "--out", str(tmp_path / "s"),
                                 "--num-layers", "5"])
    assert result.exit_code == 2 and "deeper than its teacher (4 layers)" in result.output
    assert not (tmp_path / "s").exists()
    with pytest.raises(StudentError):
        make_student(str(tiny_teacher), tmp_path / "s", "0,9")


def test_teacher_folder_without_weights_is_refused(tiny_teacher, tmp_path):
    folder = tmp_path / "noweights"
    folder.mkdir()
    (folder / "config.json").write_text((tiny_teacher / "config.json").read_text())
    with pytest.raises(ModelError, match="no weights: expected model.safetensors"):
        resolve_model(str(folder))
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(ModelError, match="pickles we do not load"):
        resolve_model(str(folder))
    result = runner.invoke(app, ["student", "--teacher", str(folder), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "noweights" in result.output


def test_bad_data_is_reported_with_file_and_line(tiny_teacher, tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood movie\t1\nbad movie\t7\n")
    (tmp_path / "SST-2" / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    result = runner.invoke(app, ["run", "--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "train.tsv, line 3" in result.output and "'7'" in result.output
    assert not (tmp_path / "out").exists()


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            write_json(tmp / "a.json", {"x": 1})
            raise RuntimeError("killed")
    assert not out.exists()
    with atomic_output_dir(out) as tmp:
        write_json(tmp / "a.json", {"x": 2})
    with pytest.raises(OutputExistsError):
        with atomic_output_dir(out):
            pass
    with atomic_output_dir(out, overwrite=True) as tmp:
        write_json(tmp / "a.json", {"x": 3})
    assert json.loads((out / "a.json").read_text()) == {"x": 3}


def test_finetune_is_skipped_for_a_teacher_with_a_fitting_head(tiny_run, tiny_glue, tmp_path):
    out, metrics = tiny_run
    data = load_task_data("sst2", tiny_glue)
    info = finetune_teacher(str(out / "teacher"), data, FAST, tmp_path / "again")
    assert info["skipped"] and info["train_seconds"] == 0.0
    assert info["metrics"]["accuracy"] == pytest.approx(metrics["models"]["teacher"]["accuracy"])
    forced = finetune_teacher(str(out / "teacher"), data, FAST, tmp_path / "forced", force=True)
    assert not forced["skipped"] and forced["train_seconds"] > 0


def test_task_command_needs_a_finetuned_teacher(tiny_teacher, tiny_glue, tmp_path):
    result = runner.invoke(app, ["task", "--teacher", str(tiny_teacher), "--data", str(tiny_glue),
                                 "--out", str(tmp_path / "s"), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 2 and "fine-tune it first" in result.output


def test_model_after_bf16_training_predicts_like_its_saved_fp32_copy(tiny_teacher, tiny_glue, tmp_path):
    """Mixed-precision training must not leave an autocast wrapper on the model we then evaluate."""
    import numpy as np

    from distilkit.models.folders import load_tokenizer
    from distilkit.models.loading import load_classifier
    from distilkit.train.common import encode, predict_logits
    from distilkit.train.task import finetune

    data = load_task_data("sst2", tiny_glue)
    tokenizer = load_tokenizer(str(tiny_teacher))
    model = load_classifier(str(tiny_teacher), num_labels=2)
    ds = encode(data.train, tokenizer, 32)
    finetune(model, tokenizer, ds, TrainConfig(**{**FAST.to_dict(), "bf16": True}), tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "saved")
    reloaded = load_classifier(str(tmp_path / "saved"))
    dev = encode(data.dev["dev"], tokenizer, 32)
    np.testing.assert_allclose(predict_logits(model, dev, tokenizer), predict_logits(reloaded, dev, tokenizer),
                               atol=1e-5)


def test_distillation_step_is_the_same_with_gradient_accumulation(tiny_teacher, tiny_glue, tmp_path):
    """One step on 8 rows has the loss and gradient of two accumulated micro-batches of 4."""
    import copy

    import torch

    from distilkit.models.folders import load_tokenizer
    from distilkit.models.loading import load_classifier
    from distilkit.models.loading import model_inputs
    from distilkit.train.common import Collator, encode, training_arguments
    from distilkit.train.task import DistillationTrainer

    data = load_task_data("sst2", tiny_glue)
    tokenizer = load_tokenizer(str(tiny_teacher))
    ds = encode(data.train.select(range(8)), tokenizer, 32)
    ds = ds.add_column("teacher_logits", [[1.0, -1.0] if i % 2 else [-0.5, 0.5] for i in range(8)])
    torch.manual_seed(0)
    start = load_classifier(str(tiny_teacher), num_labels=2)
    for module in start.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    logged = {}
    for batch, accumulation in ((8, 1), (4, 2)):
        model = copy.deepcopy(start)
        cfg = TrainConfig(max_steps=1, batch_size=batch, gradient_accumulation=accumulation, bf16=False,
                          save_steps=100, logging_steps=1)
        trainer = DistillationTrainer(model=model, args=training_arguments(cfg, tmp_path / f"ckpt{batch}"),
                                      train_dataset=ds, data_collator=Collator(tokenizer, model_inputs(model)),
                                      distill=DistillConfig(), regression=False)
        trainer.train()
        logged[accumulation] = next(h for h in trainer.state.log_history if "grad_norm" in h)
    assert logged[2]["grad_norm"] == pytest.approx(logged[1]["grad_norm"], rel=1e-4)
    assert float(logged[2]["loss"]) == pytest.approx(float(logged[1]["loss"]), rel=1e-3)


def test_matching_layers_is_uniform_and_includes_the_embeddings():
    from distilkit.train.task import matching_layers

    assert matching_layers(3, 6) == [(0, 0), (1, 2), (2, 4), (3, 6)]
    assert matching_layers(1, 6) == [(0, 0), (1, 6)]
    assert matching_layers(4, 4) == [(m, m) for m in range(5)]


def test_matching_attention_layers_pair_the_layers_whose_outputs_are_matched():
    from distilkit.train.task import matching_attention_layers

    assert matching_attention_layers(3, 6) == [(0, 1), (1, 3), (2, 5)]
    assert matching_attention_layers(1, 6) == [(0, 5)]
    assert matching_attention_layers(2, 4) == [(0, 1), (1, 3)]


LAYER_LOSS_CFG = TrainConfig(epochs=4, batch_size=16, learning_rate=1e-3, max_length=32, bf16=False, save_steps=100)


@pytest.fixture(scope="module")
def teacher_and_plain_student(tiny_teacher, tiny_glue, tmp_path_factory):
    """A tiny SST-2 teacher and a plain-KD 2-layer student of it (LAYER_LOSS_CFG), shared by the layer-loss tests."""
    root = tmp_path_factory.mktemp("layer-losses")
    data = load_task_data("sst2", tiny_glue)
    finetune_teacher(str(tiny_teacher), data, FAST, root / "teacher")
    plain = distil_task(str(root / "teacher"), data, LAYER_LOSS_CFG, DistillConfig(), root / "plain", root / "cache",
                        layers="0,2")
    return root, data, plain


def _attention_gap(student_dir, teacher_dir, data, layers) -> float:
    """Mean attention KL(teacher ‖ student) over the dev rows at the matching layers, from the models' own
    (eager) attention weights rather than the trainer's recomputation."""
    import torch

    from distilkit import losses
    from distilkit.models.folders import load_tokenizer
    from distilkit.models.loading import load_classifier
    from distilkit.train.task import matching_attention_layers

    tokenizer = load_tokenizer(str(teacher_dir))
    teacher = load_classifier(str(teacher_dir)).eval()
    student = load_classifier(str(student_dir)).eval()
    batch = tokenizer(list(next(iter(data.dev.values()))["text"]), padding=True, return_tensors="pt")
    mask = batch["attention_mask"]
    for model in (teacher, student):
        model.set_attn_implementation("eager")  # SDPA returns no attention weights
    with torch.no_grad():
        t = teacher(**batch, output_attentions=True).attentions
        s = student(input_ids=batch["input_ids"], attention_mask=mask, output_attentions=True).attentions
    pairs = matching_attention_layers(layers, teacher.config.num_hidden_layers)
    return float(sum(losses.attention_kl(s[i], t[j], mask) for i, j in pairs) / len(pairs))


def test_attention_loss_brings_student_attention_towards_the_teacher(teacher_and_plain_student, tmp_path):
    root, data, plain = teacher_and_plain_student
    teacher = root / "teacher"
    attention = distil_task(str(teacher), data, LAYER_LOSS_CFG, DistillConfig(attention_weight=10.0),
                            tmp_path / "attention", root / "cache", layers="0,2")
    assert "attention_weight" not in plain["distillation"] and attention["distillation"]["attention_weight"] == 10.0
    gap_plain = _attention_gap(root / "plain", teacher, data, 2)
    gap_attention = _attention_gap(tmp_path / "attention", teacher, data, 2)
    assert gap_attention < 0.5 * gap_plain, (gap_attention, gap_plain)


def _hidden_gap(student_dir, teacher_dir, data, layers) -> float:
    """Mean hidden-state MSE between student and teacher over the dev rows, at the matching layers."""
    import torch

    from distilkit import losses
    from distilkit.models.folders import load_tokenizer
    from distilkit.models.loading import load_classifier
    from distilkit.train.task import matching_layers

    tokenizer = load_tokenizer(str(teacher_dir))
    teacher = load_classifier(str(teacher_dir)).eval()
    student = load_classifier(str(student_dir)).eval()
    batch = tokenizer(list(next(iter(data.dev.values()))["text"]), padding=True, return_tensors="pt")
    with torch.no_grad():
        t = teacher(**batch, output_hidden_states=True).hidden_states
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=True).hidden_states
    pairs = matching_layers(layers, teacher.config.num_hidden_layers)
    return float(sum(losses.hidden_mse(s[i], t[j], batch["attention_mask"]) for i, j in pairs) / len(pairs))


def test_intermediate_layer_loss_brings_student_states_towards_the_teacher(teacher_and_plain_student, tmp_path):
    root, data, plain = teacher_and_plain_student
    teacher = root / "teacher"
    hidden = distil_task(str(teacher), data, LAYER_LOSS_CFG, DistillConfig(hidden_weight=10.0), tmp_path / "hidden",
                         root / "cache", layers="0,2")
    assert "hidden_weight" not in plain["distillation"] and hidden["distillation"]["hidden_weight"] == 10.0
    assert hidden["teacher_outputs_seconds"] == 0.0  # the logits are still the cached ones
    gap_plain = _hidden_gap(root / "plain", teacher, data, 2)
    gap_hidden = _hidden_gap(tmp_path / "hidden", teacher, data, 2)
    assert gap_hidden < 0.5 * gap_plain, (gap_hidden, gap_plain)


def test_unlabeled_inputs_join_the_transfer_set_and_the_record(teacher_and_plain_student, tiny_glue, tmp_path):
    from .conftest import sentences

    extra = tmp_path / "extra.tsv"
    extra.write_text("sentence\n" + "\n".join(s for s, _ in sentences(20, 7)) + "\n")
    teacher = teacher_and_plain_student[0] / "teacher"
    data = load_task_data("sst2", tiny_glue, unlabeled=extra)
    info = distil_task(str(teacher), data, FAST, DistillConfig(augment=1), tmp_path / "student", tmp_path / "cache",
                       layers="0,2")
    assert info["unlabeled_examples"] == 20 and info["train_examples"] == 96
    assert info["transfer_examples"] == 2 * (96 + 20)  # the perturbed copies include the unlabelled rows'
    assert info["data"]["unlabeled"] == str(extra)
    plain = distil_task(str(teacher), load_task_data("sst2", tiny_glue), FAST, DistillConfig(), tmp_path / "plain",
                        tmp_path / "cache", layers="0,2")
    assert "unlabeled" not in plain["data"] and "unlabeled_examples" not in plain


def test_mined_pairs_join_the_transfer_set_and_the_record(teacher_and_plain_student, tmp_path):
    from distilkit.experiments.card import card_body

    from .conftest import sentences

    for split, n, seed in (("train", 24, 3), ("dev", 8, 4)):
        rows = [f"{a},{b},{int(x or y)}" for (a, x), (b, y) in zip(sentences(n, seed), sentences(n, seed + 10))]
        (tmp_path / f"{split}.csv").write_text("text,text_pair,label\n" + "\n".join(rows) + "\n")
    data = load_task_data(None, train_file=tmp_path / "train.csv", dev_file=tmp_path / "dev.csv",
                          text_pair_column="text_pair")
    teacher = teacher_and_plain_student[0] / "teacher"  # a 2-class head: any two-class pair task fits it
    info = distil_task(str(teacher), data, FAST, DistillConfig(augment=1, mined_pairs=2), tmp_path / "student",
                       tmp_path / "cache", layers="0,2")
    assert info["train_examples"] == 24 and info["transfer_examples"] == 24 + 24 + 2 * 24
    assert info["distillation"]["mined_pairs"] == 2
    assert "2 new pairs per training row" in card_body(tmp_path / "student", info, None)


def test_online_teacher_gets_token_type_ids_the_student_does_not_take(tiny_teacher, tmp_path):
    """Pairs: the DistilBERT student takes no token_type_ids, but the BERT teacher's states need them."""
    import datasets

    from distilkit.models.folders import load_tokenizer
    from distilkit.models.loading import load_classifier
    from distilkit.models.student import build_student
    from distilkit.train.common import encode
    from distilkit.train.task import distill

    tokenizer = load_tokenizer(str(tiny_teacher))
    rows = {"text": ["good movie", "bad plot"] * 4, "text_pair": ["the film was great", "a dull story"] * 4,
            "label": [1, 0] * 4}
    ds = encode(datasets.Dataset.from_dict(rows), tokenizer, 32)
    ds = ds.add_column("teacher_logits", [[0.0, 1.0], [1.0, 0.0]] * 4)
    teacher = load_classifier(str(tiny_teacher), num_labels=2).eval()
    student = build_student(teacher, [0, 2])
    seen = []
    teacher.register_forward_pre_hook(lambda module, args, kwargs: seen.append(set(kwargs)), with_kwargs=True)
    cfg = TrainConfig(max_steps=2, batch_size=4, bf16=False, save_steps=100)
    distill(student, tokenizer, ds, cfg, DistillConfig(hidden_weight=1.0), False, tmp_path / "ckpt", teacher=teacher)
    assert student.config.model_type == "distilbert"
    assert len(seen) == 2 and all("token_type_ids" in keys for keys in seen)
    with pytest.raises(ValueError, match="needs the teacher model"):
        distill(student, tokenizer, ds, cfg, DistillConfig(hidden_weight=1.0), False, tmp_path / "ckpt2")
    with pytest.raises(ValueError, match="needs the teacher model"):
        distill(student, tokenizer, ds, cfg, DistillConfig(attention_weight=1.0), False, tmp_path / "ckpt3")
    other_heads = type(student)(student.config.__class__(**{**student.config.to_dict(), "n_heads": 2}))
    with pytest.raises(ValueError, match="head by head: the teacher has 4 heads, the student 2"):
        distill(other_heads, tokenizer, ds, cfg, DistillConfig(attention_weight=1.0), False, tmp_path / "ckpt4",
                teacher=teacher)


def test_reuse_sees_one_data_folder_spelt_two_ways(tmp_path, monkeypatch):
    from distilkit.stages.reuse import StageConfigError, reuse_or_run

    (tmp_path / "glue").mkdir()
    (tmp_path / "other").mkdir()
    stage = tmp_path / "stage"
    stage.mkdir()
    write_json(stage / "distil.json", {"stage": "finetune", "data": {"glue_task": "cola", "data_dir": str(tmp_path / "glue")}})
    monkeypatch.chdir(tmp_path / "other")

    def build():
        raise AssertionError("a finished stage was rebuilt")

    info = reuse_or_run(stage, {"stage": "finetune", "data": {"glue_task": "cola", "data_dir": "../glue"}}, build)
    assert info["stage"] == "finetune"
    with pytest.raises(StageConfigError, match="data="):
        reuse_or_run(stage, {"stage": "finetune", "data": {"glue_task": "cola", "data_dir": "."}}, build)
    with pytest.raises(StageConfigError, match="data="):
        reuse_or_run(stage, {"stage": "finetune", "data": {"glue_task": "sst2", "data_dir": "../glue"}}, build)


def test_run_on_own_binary_files_says_which_label_f1_is_of(tiny_teacher, tiny_run, tmp_path):
    from .conftest import sentences

    for split, n, seed in (("train", 32, 5), ("dev", 16, 6)):
        rows = [f"{text},{'spam' if y else 'ham'}" for text, y in sentences(n, seed)]
        (tmp_path / f"{split}.csv").write_text("text,label\n" + "\n".join(rows) + "\n")
    data = load_task_data(None, train_file=tmp_path / "train.csv", dev_file=tmp_path / "dev.csv")
    metrics = run_pipeline(str(tiny_teacher), data, tmp_path / "run", FAST, FAST, DistillConfig(), layers="first-2")
    assert metrics["f1_label"] == "spam" and "f1" in metrics["models"]["student"]
    assert "f1: of the label `spam`" in (tmp_path / "run" / "report.md").read_text()
    assert "f1_label" not in tiny_run[1]  # GLUE tasks: F1 of the task's positive class, as GLUE defines it

    chosen = load_task_data(None, train_file=tmp_path / "train.csv", dev_file=tmp_path / "dev.csv",
                            positive_label="ham")
    assert chosen.label_names == ["spam", "ham"] and chosen.source["positive_label"] == "ham"
    assert chosen.train["label"] == [1 - y for y in data.train["label"]]  # ham is label id 1 now
    assert chosen.dev["dev"]["label"] == [1 - y for y in data.dev["dev"]["label"]]
    metrics = run_pipeline(str(tiny_teacher), chosen, tmp_path / "run-ham", FAST, FAST, DistillConfig(),
                           layers="first-2")
    assert metrics["f1_label"] == "ham"
    from distilkit.stages.task import training_data

    assert training_data(str(tmp_path / "run-ham" / "teacher")).label_names == ["spam", "ham"]  # sweep's data
    assert "f1: of the label `ham` (--positive-label)" in (tmp_path / "run-ham" / "report.md").read_text()
    scored = runner.invoke(app, ["eval", str(tmp_path / "run-ham" / "student"), "--dev", str(tmp_path / "dev.csv"),
                                 "--out", str(tmp_path / "eval.json")])
    assert scored.exit_code == 0, scored.output  # `distil eval` on the user's file names F1's label too
    assert json.loads((tmp_path / "eval.json").read_text())["f1_label"] == "ham" and "of the label `ham`" in scored.output
    with pytest.raises(DataError, match=r"--positive-label 'eggs': expected one of the two labels of .*train.csv"):
        load_task_data(None, train_file=tmp_path / "train.csv", dev_file=tmp_path / "dev.csv", positive_label="eggs")
    with pytest.raises(ConfigError, match="--positive-label is for your own"):
        load_task_data("sst2", positive_label="positive")
