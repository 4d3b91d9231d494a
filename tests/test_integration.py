"""A few checks on the real packaged all-MiniLM-L6-v2 teacher and the shared GLUE data."""

import json

import pytest
import torch

from distilkit.data.task import load_task_data
from distilkit.models.folders import load_tokenizer, resolve_model
from distilkit.models.loading import load_encoder
from distilkit.experiments.run import run_pipeline
from distilkit.models.student import build_student
from distilkit.train.common import TrainConfig
from distilkit.train.task import DistillConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minilm():
    path = resolve_model(None)
    return path, load_encoder(path), load_tokenizer(path)


def test_identity_student_of_minilm_reproduces_its_last_hidden_state(minilm):
    _, teacher, tokenizer = minilm
    student = build_student(teacher, list(range(6))).eval()
    for text in ["it 's a charming and often affecting journey .", "A man with a hard hat is dancing."]:
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            expected = teacher(**enc).last_hidden_state
            got = student(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        assert (got - expected).abs().max().item() <= 1e-5


def test_half_depth_minilm_student_is_40_percent_lighter_in_non_embedding_weights(minilm):
    from distilkit.models.loading import count_parameters

    _, teacher, _ = minilm
    t, s = count_parameters(teacher), count_parameters(build_student(teacher, [0, 2, 4]))
    assert s["non_embedding"] / t["non_embedding"] < 0.5
    assert t["total"] == 22_713_216  # all-MiniLM-L6-v2 as published


def test_small_run_on_real_teacher_and_sst2(minilm, glue_dir, tmp_path):
    path, _, _ = minilm
    data = load_task_data("sst2", glue_dir, train_limit=400, dev_limit=200)
    cfg = TrainConfig(epochs=1, batch_size=32, learning_rate=5e-5, save_steps=1000)
    metrics = run_pipeline(path, data, tmp_path / "run", cfg, cfg, DistillConfig())
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["train_examples"] == 400 and saved["dev_examples"] == {"dev": 200}
    assert saved["layer_map"] == [0, 2, 4]
    assert saved["models"]["student"]["parameters"]["total"] < 0.8 * saved["models"]["teacher"]["parameters"]["total"]
    assert metrics["retention"] == pytest.approx(saved["models"]["student"]["score"] / saved["models"]["teacher"]["score"])
