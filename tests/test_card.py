"""The model card of a student made by a tiny distil_task run: metadata parses back, values are distil.json's."""

import json
import shutil

import pytest
from huggingface_hub import ModelCard

from distilkit.experiments.card import CardError, model_card, write_model_card
from distilkit.data.task import load_task_data
from distilkit.stages.task import distil_task
from distilkit.train.common import TrainConfig
from distilkit.train.task import DistillConfig

from .deploy_fixtures import make_classifier

QUICK = TrainConfig(max_steps=2, batch_size=16, learning_rate=1e-3, max_length=32, bf16=False, save_steps=100,
                    logging_steps=1)


@pytest.fixture(scope="module")
def student(tiny_glue, tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    teacher = make_classifier(root / "teacher", kind="bert")  # a 2-layer BERT with an SST-2 head
    data = load_task_data("sst2", tiny_glue)
    distil_task(str(teacher), data, QUICK, DistillConfig(), root / "student", root / "cache", num_layers=1)
    return root / "student"


def with_record(folder, tmp_path, **changes):
    """A copy of the student folder whose distil.json has `changes` (None removes a key)."""
    copy = shutil.copytree(folder, tmp_path / "student", ignore=shutil.ignore_patterns("README.md"))
    info = json.loads((copy / "distil.json").read_text())
    for key, value in changes.items():
        info.pop(key) if value is None else info.__setitem__(key, value)
    (copy / "distil.json").write_text(json.dumps(info))
    return copy


def test_card_parses_back_with_metadata_and_exact_results(student):
    info = json.loads((student / "distil.json").read_text())
    path = write_model_card(student, teacher_metrics={"accuracy": 0.8, "score": 0.8})
    assert path == student / "README.md"
    card = ModelCard.load(path)
    meta = card.data.to_dict()
    assert meta["language"] == "en" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification" and meta["datasets"] == ["nyu-mll/glue"]
    assert {"distilkit", "distillation", "knowledge-distillation"} <= set(meta["tags"])
    assert "base_model" not in meta and "license" not in meta  # local teacher folder, license unknown
    results = card.data.eval_results
    assert [(r.metric_name, r.metric_value) for r in results] == [("accuracy", info["metrics"]["accuracy"])]
    r = results[0]
    assert (r.task_type, r.dataset_type, r.dataset_config, r.dataset_split, r.metric_type) == (
        "text-classification", "nyu-mll/glue", "sst2", "validation", "accuracy")
    text = card.text
    assert "1-layer distilbert student" in text and "teacher layers [0]" in text
    assert "| retention |" in text and "from transformers import pipeline" in text and str(student) in text
    for key, value in {**info["config"], **info["distillation"]}.items():
        assert f"{key}: {value}" in text
    assert "α = 0.5, T = 2.0" in text and "uncased" in text and "32 tokens" in text
    assert "- labels (output ids in order): negative, positive" in text


def test_hub_teacher_becomes_base_model(student, tmp_path):
    folder = with_record(student, tmp_path, teacher="google-bert/bert-base-uncased")
    meta = model_card(folder).data.to_dict()
    assert meta["base_model"] == "google-bert/bert-base-uncased"


def test_regression_and_mnli_metric_names_map_to_hub_types(student, tmp_path):
    metrics = {"dev_matched_accuracy": 0.8125, "dev_mismatched_accuracy": 0.75, "pearson": 0.5, "spearman": 0.25,
               "mcc": 0.1, "score": 0.5}
    card = model_card(with_record(student, tmp_path, metrics=metrics))
    got = {r.metric_name: (r.metric_type, r.dataset_split, r.metric_value) for r in card.data.eval_results}
    assert got == {"dev_matched_accuracy": ("accuracy", "validation_matched", 0.8125),
                   "dev_mismatched_accuracy": ("accuracy", "validation_mismatched", 0.75),
                   "pearson": ("pearsonr", "validation", 0.5), "spearman": ("spearmanr", "validation", 0.25),
                   "mcc": ("matthews_correlation", "validation", 0.1)}


def test_missing_metrics_is_a_clear_error(student, tmp_path):
    folder = with_record(student, tmp_path, metrics=None)
    with pytest.raises(CardError, match=r"distil.json has no 'metrics' field") as err:
        model_card(folder)
    assert str(folder / "distil.json") in str(err.value)
    with pytest.raises(CardError):
        write_model_card(folder)
    assert not (folder / "README.md").exists()


def test_card_names_each_optional_recipe_part_only_when_it_was_used(student, tmp_path):
    plain = model_card(student, teacher_metrics=None).text
    assert "intermediate-layer" not in plain
    info = json.loads((student / "distil.json").read_text())
    hidden = with_record(student, tmp_path, distillation={**info["distillation"], "hidden_weight": 1.0})
    assert "plus 1.0·MSE between the student's hidden states" in model_card(hidden, teacher_metrics=None).text
    assert "attention distributions" not in model_card(hidden, teacher_metrics=None).text
    assert "unlabelled inputs" not in plain
    (tmp_path / "unlabeled").mkdir()
    unlabeled = with_record(student, tmp_path / "unlabeled", unlabeled_examples=1379,
                            data={**info["data"], "unlabeled": "test"})
    assert "- unlabelled inputs, labelled by the teacher only: 1379 (from test)" in model_card(
        unlabeled, teacher_metrics=None).text
    (tmp_path / "attention").mkdir()
    attention = with_record(student, tmp_path / "attention", distillation={**info["distillation"], "attention_weight": 2.0})
    assert "plus 2.0·KL between the teacher's and the student's attention distributions" in model_card(
        attention, teacher_metrics=None).text
