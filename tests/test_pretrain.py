"""`distil pretrain` through its CLI on tiny random models: exact resume after SIGKILL, torchrun (DDP),
bad input refused before any training, and a pretrained student as the start of `distil task`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from distilkit.cli import app

from .conftest import sentences

TESTS = Path(__file__).resolve().parent
# Small and fast: 97 training sequences of at most 12 tokens, 13 batches of 8 per epoch.
TINY = ["--fit-mlm-head", "--head-steps", "4", "--max-len", "12", "--batch-size", "8", "--lr", "1e-3", "--no-bf16"]


@pytest.fixture()
def corpus_dir(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("\n".join(s for s, _ in sentences(200, 5)) + "\n")
    return tmp_path / "corpus"


def child_env() -> dict:
    """Environment of the `distil` subprocesses: one thread each (as `cli()` in this process), quiet."""
    src = str(TESTS.parent / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "DISTILKIT_QUIET": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def cli(*args):
    """`distil ...` in this process, single-threaded like the subprocesses, so the floating point agrees."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        torch.set_num_threads(threads)


def read_info(out: Path) -> dict:
    return json.loads((out / "pretrain.json").read_text())


def test_resume_after_sigkill_repeats_the_uninterrupted_run(tiny_teacher, corpus_dir, tmp_path):
    from safetensors.torch import load_file

    # 7 optimizer steps of 2 micro-batches per epoch (the last one of 1): the first checkpoint, at step 10,
    # is 3 steps into the second epoch, and the resumed run crosses four more epoch boundaries.
    args = ["pretrain", "--teacher", tiny_teacher, "--corpus", corpus_dir, *TINY, "--grad-accum", "2",
            "--max-steps", "40", "--save-steps", "10", "--logging-steps", "1"]
    full = cli(*args, "--out", tmp_path / "full")
    assert full.exit_code == 0, full.output

    # The same run in a subprocess, SIGKILLed once its first checkpoint is completely written
    # (the Trainer writes trainer_state.json last).
    out = tmp_path / "killed"
    checkpoints = tmp_path / ".killed.partial" / "checkpoints"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "distilkit.cli", *map(str, args), "--out", str(out)],
                                env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not any(checkpoints.glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "ended early:\n" + (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists(), "the run finished before it was killed: too fast to test the kill"

    resumed = cli(*args, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "fitting a masked-LM head" in full.output and "fitting" not in resumed.output  # the fitted head is reused
    assert "rank 0/1: trained 40 steps" in resumed.output
    a, b = read_info(tmp_path / "full"), read_info(out)
    step = int(b["resumed_from"].removeprefix("checkpoint-"))
    assert step in (10, 20, 30)
    assert [h["step"] for h in b["loss_history"]] == [h["step"] for h in a["loss_history"]] == list(range(1, 41))
    # Every logged step, before and after the checkpoint (masks, data order and dropout all line up).
    for x, y in zip(a["loss_history"], b["loss_history"]):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-6, abs=0), f"step {x['step']} (resumed at {step})"
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-5)
    assert b["student_mlm_accuracy"] == a["student_mlm_accuracy"]
    wa, wb = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-7) for k in wa)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Failures of the launcher or of the process group itself (not of distil): the test skips on them.
LAUNCH_ERRORS = ("DistNetworkError", "RendezvousConnectionError", "Address already in use", "Connection refused",
                 "No module named torch.distributed.run")


def test_torchrun_trains_on_both_ranks_and_only_rank_0_writes(tiny_teacher, corpus_dir, tmp_path):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), str(TESTS / "record_writes.py"), str(tmp_path), str(tmp_path / "writes-"),
           "pretrain", "--teacher", str(tiny_teacher), "--corpus", str(corpus_dir), *TINY, "--max-steps", "6",
           "--save-steps", "3", "--logging-steps", "1", "--out", str(out)]
    run = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    if run.returncode != 0 and any(e in log for e in LAUNCH_ERRORS):
        pytest.skip(f"torchrun could not start here: {log[-2000:]}")
    assert run.returncode == 0, log[-5000:]
    trained = dict(re.findall(r"rank (\d)/2: trained 6 steps, last loss ([0-9.]+)", log))
    assert set(trained) == {"0", "1"}, log[-5000:]
    assert trained["0"] != trained["1"]  # different batches and masks on the two ranks
    info = read_info(out)
    assert info["world_size"] == 2 and info["steps"] == 6 and len(info["loss_history"]) == 6
    assert (out / "model.safetensors").exists() and not (tmp_path / ".ddp.partial").exists()

    writes = {rank: [line.split("\t") for line in (tmp_path / f"writes-{rank}.tsv").read_text().splitlines()]
              for rank in (0, 1)}
    checkpoints = tmp_path / ".ddp.partial" / "checkpoints"
    # Rank 1 writes nothing but its RNG state into each checkpoint: by Hugging Face's design every process
    # saves its random generators as rng_state_<rank>.pth (making the folder if it gets there first).
    for event, path in writes[1]:
        path = Path(path)
        assert (event == "torch.save" and path.name == "rng_state_1.pth" and path.parent.parent == checkpoints
                or event == "os.mkdir" and path.parent == checkpoints), (event, path)
    assert sorted(Path(p).parent.name for e, p in writes[1] if e == "torch.save") == ["checkpoint-3", "checkpoint-6"]
    # Rank 0 writes everything else: corpus, fitted head, each checkpoint (one model file), the output.
    for step in (3, 6):
        files = {Path(p).name for e, p in writes[0] if Path(p).parent == checkpoints / f"checkpoint-{step}"}
        assert {f for f in files if f.endswith(".safetensors")} == {"model.safetensors"}
        assert {"optimizer.pt", "scheduler.pt", "rng_state_0.pth", "trainer_state.json"} <= files
    assert any(e == "os.rename" and Path(p) == out for e, p in writes[0])


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory) -> Path:
    """A tiny teacher whose tokenizer has another vocabulary (the tiny one's words in reverse order)."""
    from transformers import BertModel, BertTokenizerFast

    from .conftest import WORDS, tiny_bert_config

    folder = tmp_path_factory.mktemp("other_teacher")
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS[::-1]]) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    BertModel(tiny_bert_config()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wide_student(tiny_teacher, tmp_path_factory) -> Path:
    """A DistilBERT masked LM twice as wide as the tiny teacher, with the teacher's tokenizer."""
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    folder = tmp_path_factory.mktemp("wide_student")
    tokenizer = AutoTokenizer.from_pretrained(tiny_teacher)
    DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(tokenizer), dim=64, hidden_dim=128, n_layers=2, n_heads=4,
                                           max_position_embeddings=64)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


BAD_INPUTS = {  # case → (extra arguments, what the message must say)
    "empty": ([], ["empty.txt", "empty", "expected UTF-8 text"]),
    "binary": ([], ["blob.txt", "binary", "expected UTF-8 text"]),
    "too-short": ([], ["short.txt", "no sequence of at least 8 tokens"]),
    "other-tokenizer": ([], ["corpus.json", "prepared with tokenizer", "expected the teacher's tokenizer"]),
    "alphas-zero": (["--alpha-ce", "0", "--alpha-mlm", "0", "--alpha-cos", "0"], ["--alpha-ce", "not all zero"]),
    "wider-student": (["--student", "WIDE"], ["wide_student", "wider than its teacher", "64 > 32"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_before_any_training(case, tiny_teacher, other_teacher, wide_student, corpus_dir,
                                                  tmp_path):
    extra, expected = BAD_INPUTS[case]
    corpus = corpus_dir
    if case == "empty":
        corpus = tmp_path / "empty.txt"
        corpus.write_text("\n   \n\n")
    elif case == "binary":
        corpus = tmp_path / "blob.txt"
        corpus.write_bytes(b"PK\x03\x04\x00\x00" + bytes(range(256)) * 4)
    elif case == "too-short":  # text, but no line makes a sequence of 8 tokens: found while preparing
        corpus = tmp_path / "short.txt"
        corpus.write_text("good\nbad film\n")
    elif case == "other-tokenizer":
        corpus = tmp_path / "prepared"
        made = cli("corpus", corpus_dir, "--teacher", other_teacher, "--out", corpus, "--max-len", "12")
        assert made.exit_code == 0, made.output
    extra = [str(wide_student) if a == "WIDE" else a for a in extra]
    out = tmp_path / "out"
    result = cli("pretrain", "--teacher", tiny_teacher, "--corpus", corpus, "--out", out, *TINY, "--max-steps", "2",
                 *extra)
    assert result.exit_code == 2, result.output
    for text in expected:
        assert text in result.output
    assert "trained" not in result.output and "fitting" not in result.output
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_a_pretrained_student_starts_task_distillation(tiny_teacher, corpus_dir, tiny_glue, tmp_path):
    from safetensors.torch import load_file

    from distilkit.data.task import load_task_data
    from distilkit.stages.task import _task_model

    prepared = tmp_path / "prepared"  # a prepared corpus is reused as it is, and never overwritten by accident
    assert cli("corpus", corpus_dir, "--teacher", tiny_teacher, "--out", prepared, "--max-len", "12").exit_code == 0
    again = cli("corpus", corpus_dir, "--teacher", tiny_teacher, "--out", prepared)
    assert again.exit_code == 2 and "already exists" in again.output
    assert json.loads((prepared / "corpus.json").read_text())["vocab_size"] == 24

    pre = tmp_path / "pre"
    result = cli("pretrain", "--teacher", tiny_teacher, "--corpus", prepared, "--out", pre, *TINY, "--max-steps", "3")
    assert result.exit_code == 0, result.output
    assert read_info(pre)["corpus_stats"]["sequences"] == 107

    common = ["--data", tiny_glue, "--epochs", "1", "--batch-size", "16", "--lr", "1e-3", "--max-length", "32",
              "--no-bf16"]
    assert cli("finetune", "--teacher", tiny_teacher, "--out", tmp_path / "ft", *common).exit_code == 0
    task = cli("task", "--teacher", tmp_path / "ft", "--student", pre, "--out", tmp_path / "task",
               "--cache-dir", tmp_path / "cache", *common)
    assert task.exit_code == 0, task.output
    info = json.loads((tmp_path / "task" / "distil.json").read_text())
    assert info["student_init"] == str(pre) and info["parameters"]["total"] > 0

    # The classifier distil task trains starts from the pretrained encoder, weight for weight.
    pretrained = load_file(pre / "model.safetensors")
    classifier = _task_model(str(pre), load_task_data("sst2", tiny_glue)).state_dict()
    encoder = [k for k in pretrained if k.startswith("distilbert.")]
    assert "distilbert.transformer.layer.1.ffn.lin1.weight" in encoder
    assert all(torch.equal(classifier[k], pretrained[k]) for k in encoder)
