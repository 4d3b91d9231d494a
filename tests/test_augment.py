"""Transfer-set augmentation: perturbed copies without gold labels, and distillation on them."""

import math
import random

import datasets
import pytest
import torch

from distilkit.data.augment import NO_CLASS, augment, embedding_neighbours, mine_pairs, perturb, words_of
from distilkit.data.task import load_task_data


def test_perturb_edits_and_repeats_with_the_seed():
    words = "the movie was very good".split()
    vocab = ["dull", "plot"]
    a = perturb(words, vocab, random.Random(1))
    assert a == perturb(words, vocab, random.Random(1)) and a != words
    assert perturb([], vocab, random.Random(1)) == []


def test_embedding_neighbours_are_the_nearest_whole_word_tokens():
    vocab = {"[PAD]": 0, "run": 1, "ran": 2, "running": 3, "table": 4, "##s": 5, "chair": 6}
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.1], [1.0, 0.0], [0.9, 0.2], [0.0, 1.0], [1.0, 0.05], [0.1, 1.0]])
    table = embedding_neighbours(["ran", "table", "unknown", "[PAD]"], vocab, emb, k=2)
    assert table == {"ran": ["run", "running"], "table": ["chair", "running"]}  # "##s" and "[PAD]" are no candidates
    assert words_of(["Ran, quickly.", "the (table)"]) == ["quickly", "ran", "table", "the"]


def test_replacements_come_from_the_neighbour_table_keeping_case_and_punctuation():
    table = {"ran": ["run"], "he": ["him"]}
    words = "He ran.".split()
    seen = set()
    for seed in range(200):
        out = perturb(words, ["zzz"], random.Random(seed), rate=1.0, neighbours=table)
        seen.update(out)
    assert {"Him", "run."} <= seen  # capital and full stop kept around the neighbour
    assert "zzz" not in seen  # every word has neighbours, so no random replacement


def test_augment_keeps_originals_first_and_drops_gold_labels():
    classes = datasets.Dataset.from_dict(
        {"text": ["a good film", "a bad plot here"], "label": [1, 0]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["0", "1"])}))
    out = augment(classes, copies=3, seed=0)
    assert len(out) == 8 and out[:2] == classes[:2]
    assert out["label"][2:] == [NO_CLASS] * 6
    assert augment(classes, 0) is classes
    pairs = datasets.Dataset.from_dict(
        {"text": ["a man runs", "a dog sits"], "text_pair": ["a man jogs", "a cat sits"], "label": [4.0, 1.5]},
        features=datasets.Features({"text": datasets.Value("string"), "text_pair": datasets.Value("string"),
                                    "label": datasets.Value("float32")}))
    out = augment(pairs, copies=2, seed=0)
    assert len(out) == 6 and all(math.isnan(x) for x in out["label"][2:])
    for i in range(2, 6):  # copies of row (i - 2) // 2: one of its two texts is kept as it was
        src = (i - 2) // 2
        assert out["text"][i] == pairs["text"][src] or out["text_pair"][i] == pairs["text_pair"][src]


def _pairs(first, second, labels):
    return datasets.Dataset.from_dict(
        {"text": first, "text_pair": second, "label": labels},
        features=datasets.Features({"text": datasets.Value("string"), "text_pair": datasets.Value("string"),
                                    "label": datasets.Value("float32")}))


def test_mined_pairs_join_a_text_with_its_most_similar_sentence_never_its_own_partner():
    ds = _pairs(["a man plays a guitar", "a man plays the flute", "the stock market fell"],
                ["the stock market fell sharply", "a dog runs in the park", "a puppy runs in a park"], [0.0, 0.5, 0.2])
    mined = mine_pairs(ds, per_row=4, seed=0, nearest=1)
    assert len(mined) == 12 and mined.features == ds.features and all(math.isnan(x) for x in mined["label"])
    nearest = {"a man plays a guitar": "a man plays the flute", "a man plays the flute": "a man plays a guitar",
               "the stock market fell": "the stock market fell sharply",
               "the stock market fell sharply": "the stock market fell",
               "a dog runs in the park": "a puppy runs in a park", "a puppy runs in a park": "a dog runs in the park"}
    assert all(nearest[first] == second for first, second in zip(mined["text"], mined["text_pair"]))
    assert len(set(mined["text"])) > 3  # both texts of a row serve as anchors
    again = mine_pairs(ds, per_row=4, seed=0, nearest=1)  # repeatable with the seed
    assert again["text"] == mined["text"] and again["text_pair"] == mined["text_pair"]
    assert len(mine_pairs(ds, per_row=0)) == 0
    few = mine_pairs(ds, per_row=3, seed=1)  # 10 nearest of 6 sentences: every other one but the partner
    assert len(few) == 9 and all(a != b for a, b in zip(few["text"], few["text_pair"]))


def test_mined_pairs_need_a_pair_task():
    single = datasets.Dataset.from_dict({"text": ["a film"], "label": [1]})
    with pytest.raises(ValueError, match="mined pairs need a pair task"):
        mine_pairs(single, per_row=1)


def test_distillation_with_augmented_copies(tiny_teacher, tiny_glue, tmp_path):
    from distilkit.stages.task import distil_task, finetune_teacher
    from distilkit.train.common import TrainConfig
    from distilkit.train.task import DistillConfig

    fast = TrainConfig(epochs=1, batch_size=16, learning_rate=1e-3, max_length=32, bf16=False, save_steps=50,
                       logging_steps=2)
    data = load_task_data("sst2", tiny_glue)
    finetune_teacher(str(tiny_teacher), data, fast, tmp_path / "teacher")
    info = distil_task(str(tmp_path / "teacher"), data, fast, DistillConfig(augment=2, augment_neighbours=4),
                       tmp_path / "student", tmp_path / "cache", layers="first-2")
    assert info["train_examples"] == len(data.train) and info["transfer_examples"] == 3 * len(data.train)
    assert info["distillation"]["augment"] == 2 and info["distillation"]["augment_neighbours"] == 4
    assert all(math.isfinite(v) for v in info["metrics"].values())


def test_records_without_augmentation_keep_their_old_shape():
    from distilkit.train.task import DistillConfig

    assert DistillConfig().to_dict() == {"alpha": 0.5, "temperature": 2.0, "cls_weight": 0.0}  # as before --augment
    assert DistillConfig(augment=2).to_dict()["augment"] == 2
    assert DistillConfig(augment=2, augment_neighbours=8).to_dict()["augment_neighbours"] == 8
    assert DistillConfig(mined_pairs=2).to_dict()["mined_pairs"] == 2


def test_bad_distillation_options_are_refused_with_their_names(tmp_path):
    from typer.testing import CliRunner

    from distilkit.cli import app
    from distilkit.train.task import DistillConfig

    with pytest.raises(ValueError, match="augment-neighbours must be >= 0, got -1"):
        DistillConfig(augment=2, augment_neighbours=-1)
    with pytest.raises(ValueError, match="alpha must be in \\[0, 1\\], got 1.5.*temperature must be > 0"):
        DistillConfig(alpha=1.5, temperature=0)
    result = CliRunner().invoke(app, ["task", "--teacher", str(tmp_path), "--task", "sst2", "--out",
                                      str(tmp_path / "s"), "--augment", "-2"])
    assert result.exit_code != 0 and "augment must be >= 0, got -2" in result.output
    assert not (tmp_path / "s").exists()
