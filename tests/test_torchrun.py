"""`torchrun --nproc_per_node 2` (gloo, CPU) for the task stages and `distil embed` on tiny random models: each
process trains on its own half of every epoch, the teacher's outputs are computed in shares and cached once, and
only the main process writes (by Hugging Face's design every process saves its RNG state into a checkpoint)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from .test_pretrain import LAUNCH_ERRORS, TESTS, child_env, free_port

COMMON = ["--batch-size", "8", "--lr", "1e-3", "--max-length", "32", "--no-bf16", "--logging-steps", "1"]


def torchrun(tmp_path: Path, name: str, *args, ok: bool = True) -> str:
    """`distil ARGS` on 2 processes, each recording its writes and training rows as tmp_path/NAME-<rank>.*;
    asserts it succeeded (`ok`) or failed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(TESTS / "record_writes.py"), str(tmp_path), str(tmp_path / f"{name}-"),
           *map(str, args)]
    run = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    if run.returncode != 0 and any(e in log for e in LAUNCH_ERRORS):
        pytest.skip(f"torchrun could not start here: {log[-2000:]}")
    assert (run.returncode == 0) == ok, log[-5000:]
    return log


def rows(tmp_path: Path, name: str, rank: int) -> Counter:
    return Counter((tmp_path / f"{name}-{rank}.rows").read_text().splitlines())


def dropout_seeds(tmp_path: Path, name: str) -> list[int]:
    """The seed of each rank's torch generator while it trained (its dropout stream)."""
    return [int((tmp_path / f"{name}-{rank}.seed").read_text()) for rank in (0, 1)]


def writes(tmp_path: Path, name: str, rank: int) -> list[tuple[str, Path]]:
    lines = (tmp_path / f"{name}-{rank}.tsv").read_text().splitlines()
    return [(event, Path(path)) for event, path in (line.split("\t") for line in lines)]


def assert_only_rng_state(tmp_path: Path, name: str, checkpoints: Path) -> None:
    """Rank 1 wrote nothing but its RNG state into the Trainer's checkpoints (and maybe made their folders)."""
    for event, path in writes(tmp_path, name, 1):
        assert (event == "torch.save" and path.name == "rng_state_1.pth" and path.parent.parent == checkpoints
                or event == "os.mkdir" and path.parent == checkpoints), (event, path)


def train_rows(tokenizer_dir: Path, glue: Path) -> Counter:
    """The tiny SST-2's training rows as the stages tokenise them (max length 32)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    texts = [line.split("\t")[0] for line in (glue / "SST-2" / "train.tsv").read_text().splitlines()[1:]]
    return Counter(" ".join(map(str, ids)) for ids in tokenizer(texts, truncation=True, max_length=32)["input_ids"])


def test_finetune_and_task_split_the_data_and_only_rank_0_writes(tiny_teacher, tiny_glue, tmp_path):
    import datasets

    from distilkit.data.task import load_task_data
    from distilkit.models.folders import load_tokenizer
    from distilkit.stages.task import _task_model
    from distilkit.train.common import encode
    from distilkit.train.task import add_teacher_outputs

    # 96 rows, 12 batches of 8 per epoch: 6 steps on each process.
    teacher = tmp_path / "teacher"
    log = torchrun(tmp_path, "finetune", "finetune", "--teacher", tiny_teacher, "--data", tiny_glue, "--out", teacher,
                   *COMMON, "--epochs", "1", "--save-steps", "3")
    expected = train_rows(tiny_teacher, tiny_glue)
    r0, r1 = rows(tmp_path, "finetune", 0), rows(tmp_path, "finetune", 1)
    assert r0.total() == r1.total() == 48 and r0 + r1 == expected, log[-3000:]  # two halves of one epoch
    assert dropout_seeds(tmp_path, "finetune") == [42, 43]  # one data order, each process its own dropout stream
    info = json.loads((teacher / "distil.json").read_text())
    assert info["steps"] == 6 and info["world_size"] == 2 and 0.0 <= info["metrics"]["score"] <= 1.0
    assert not (tmp_path / ".teacher.partial").exists()
    assert_only_rng_state(tmp_path, "finetune", tmp_path / ".teacher.partial" / "checkpoints")
    assert any(e == "os.rename" and p == teacher for e, p in writes(tmp_path, "finetune", 0))

    student, cache = tmp_path / "student", tmp_path / "cache"
    torchrun(tmp_path, "task", "task", "--teacher", teacher, "--data", tiny_glue, "--out", student, "--num-layers", "2",
             "--cache-dir", cache, *COMMON, "--epochs", "1", "--save-steps", "100")
    r0, r1 = rows(tmp_path, "task", 0), rows(tmp_path, "task", 1)
    assert r0.total() == r1.total() == 48 and r0 + r1 == expected
    info = json.loads((student / "distil.json").read_text())
    assert info["steps"] == 6 and info["teacher_outputs_seconds"] > 0
    assert info["world_size"] == 2
    assert_only_rng_state(tmp_path, "task", tmp_path / ".student.partial" / "checkpoints")  # the final checkpoint
    ours = {p for _, p in writes(tmp_path, "task", 0)}
    assert any(p.parent == cache for p in ours) and student in ours

    # Rank 0's error (OUT exists: checked by rank 0 alone) stops rank 1 too, with the same message.
    log = torchrun(tmp_path, "again", "task", "--teacher", teacher, "--data", tiny_glue, "--out", student, ok=False)
    assert log.count(f"{student} already exists") == 2, log[-3000:]

    # The cached teacher logits, computed half on each process and gathered, are those of one process, in order.
    [cached] = cache.glob("teacher-outputs-*")
    data = load_task_data(data_dir=tiny_glue, task="sst2")
    tokenizer = load_tokenizer(str(teacher))
    alone = add_teacher_outputs(_task_model(str(teacher), data).eval(), tokenizer, encode(data.train, tokenizer, 32))
    got = datasets.load_from_disk(str(cached))
    assert got["input_ids"] == alone["input_ids"]
    np.testing.assert_allclose(np.array(got["teacher_logits"]), np.array(alone["teacher_logits"]), atol=1e-5)


def test_embed_splits_the_data_and_only_rank_0_writes(tmp_path):
    from transformers import AutoTokenizer

    from .conftest import sentences
    from .deploy_fixtures import make_embedding_teacher

    teacher = make_embedding_teacher(tmp_path / "teacher")
    texts = [s for s, _ in sentences(96, seed=3)]
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")
    out, cache = tmp_path / "emb", tmp_path / "cache"
    # 96 sentences, 6 batches of 16 per epoch: 3 steps an epoch on each process, 2 epochs, a checkpoint at step 4.
    log = torchrun(tmp_path, "embed", "embed", "--teacher", teacher, "--corpus", tmp_path / "corpus.txt", "--out", out,
                   "--num-layers", "2", "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--max-length", "32",
                   "--save-steps", "4", "--logging-steps", "1", "--cache-dir", cache)
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    ids = tokenizer(texts, truncation=True, max_length=32)["input_ids"]
    expected = Counter(" ".join(map(str, row)) for row in ids)
    r0, r1 = rows(tmp_path, "embed", 0), rows(tmp_path, "embed", 1)
    assert r0.total() == r1.total() == 96 and r0 + r1 == expected + expected, log[-3000:]  # halves of 2 epochs
    assert r0 != r1
    assert dropout_seeds(tmp_path, "embed") == [42, 43]
    info = json.loads((out / "distil.json").read_text())
    assert info["train"]["steps"] == 6 and info["world_size"] == 2 and info["train"]["history"]
    assert writes(tmp_path, "embed", 1) == []
    ours = {p for _, p in writes(tmp_path, "embed", 0)}
    assert any(p.parent == cache for p in ours) and out in ours
    assert any(p.parent.parent == tmp_path / ".emb.partial" / "checkpoints" for p in ours)


def test_run_pipeline_under_torchrun_trains_every_stage_on_both_ranks_and_only_rank_0_writes(tiny_teacher, tiny_glue,
                                                                                             tmp_path):
    out = tmp_path / "run"
    log = torchrun(tmp_path, "run", "run", "--teacher", tiny_teacher, "--data", tiny_glue, "--out", out,
                   *COMMON, "--teacher-epochs", "1", "--epochs", "1", "--augment", "0", "--no-size")
    # teacher fine-tune, student and baseline: each an epoch of 96 rows, half on each process
    r0, r1 = rows(tmp_path, "run", 0), rows(tmp_path, "run", 1)
    once = train_rows(tiny_teacher, tiny_glue)
    assert r0.total() == r1.total() == 3 * 48 and r0 + r1 == once + once + once, log[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("teacher", "student", "baseline"):
        assert json.loads((out / stage / "distil.json").read_text())["world_size"] == 2, stage
        assert 0.0 <= metrics["models"][stage]["score"] <= 100.0
    assert (out / "report.md").exists() and (out / "student" / "README.md").exists()
    assert not list(tmp_path.glob(".run.partial*"))
    for event, path in writes(tmp_path, "run", 1):  # rank 1: only RNG states in the stages' checkpoints
        assert (event == "torch.save" and path.name == "rng_state_1.pth" or event == "os.mkdir"
                and path.name.startswith("checkpoint")), (event, path)


def test_glue_suite_under_torchrun_splits_every_stage_and_only_rank_0_writes(tiny_teacher, tiny_glue, tmp_path):
    out = tmp_path / "glue"
    log = torchrun(tmp_path, "glue", "glue", "--tasks", "sst2", "--teacher", tiny_teacher, "--data", tiny_glue,
                   "--out", out, "--batch-size", "8", "--max-length", "32", "--no-bf16", "--teacher-epochs", "1",
                   "--epochs", "1", "--augment", "0", "--no-size")
    once = train_rows(tiny_teacher, tiny_glue)
    r0, r1 = rows(tmp_path, "glue", 0), rows(tmp_path, "glue", 1)
    assert r0.total() == r1.total() == 3 * 48 and r0 + r1 == once + once + once, log[-3000:]
    for stage in ("teacher", "student", "baseline"):
        assert json.loads((out / "sst2" / "seed-42" / stage / "distil.json").read_text())["world_size"] == 2, stage
    assert "student" in json.loads((out / "glue.json").read_text())["models"]
    for event, path in writes(tmp_path, "glue", 1):  # rank 1: only RNG states in the stages' checkpoints
        assert (event == "torch.save" and path.name == "rng_state_1.pth" or event == "os.mkdir"
                and path.name.startswith("checkpoint")), (event, path)
