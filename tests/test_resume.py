"""Exact resume through the CLI on tiny random models, for the Trainer stages (teacher fine-tuning, task
distillation) and `distil embed`'s own loop: a run SIGKILLed right after a checkpoint, then resumed with --resume,
logs the same loss and grad norm at every step as a run that was never stopped, and ends with the same weights
(and dev metrics)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .test_pretrain import TESTS, child_env, cli

COMMON = ["--batch-size", "8", "--lr", "1e-3", "--max-length", "32", "--no-bf16", "--save-steps", "10",
          "--logging-steps", "1"]


@pytest.fixture(scope="module")
def finetuned_teacher(tiny_teacher, tiny_glue, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume") / "teacher"
    result = cli("finetune", "--teacher", tiny_teacher, "--data", tiny_glue, "--out", out, *COMMON, "--epochs", "1")
    assert result.exit_code == 0, result.output
    return out


def kill_after_checkpoint(step: int, args: list, out: Path) -> Path:
    """`distil ARGS --out OUT` in a subprocess that SIGKILLs itself once checkpoint STEP is written; then a
    half-written later checkpoint is faked beside it. Returns the stage's checkpoint folder."""
    log = out.with_name(out.name + ".log")
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, str(TESTS / "kill_after_save.py"), str(step), *map(str, args),
                               "--out", str(out)], env=child_env(), stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    assert not out.exists()
    checkpoints = out.with_name(f".{out.name}.partial") / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [f"checkpoint-{step}"]
    # A kill while writing the next checkpoint leaves it without trainer_state.json (written last).
    half = checkpoints / f"checkpoint-{2 * step}"
    shutil.copytree(checkpoints / f"checkpoint-{step}", half)
    (half / "trainer_state.json").unlink()
    (half / "model.safetensors").write_bytes(b"truncated")
    return checkpoints


def assert_same_run(full: Path, resumed: Path, step: int, steps: int, terms: tuple[str, ...] = (),
                    logged: list[int] | None = None) -> None:
    """Every logged step (`logged`, default every step), the final weights and the dev metrics of two stage
    folders agree."""
    from safetensors.torch import load_file

    a, b = (json.loads((p / "train_log.json").read_text()) for p in (full, resumed))
    assert a["resumed_from"] is None and b["resumed_from"] == f"checkpoint-{step}"
    assert a["steps"] == b["steps"] == steps
    la, lb = ([h for h in x["log_history"] if "loss" in h] for x in (a, b))
    assert [h["step"] for h in la] == [h["step"] for h in lb] == (logged or list(range(1, steps + 1)))
    for x, y in zip(la, lb):  # before the checkpoint (the killed run's log) and after it (the resumed run's)
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-6, abs=0), f"step {x['step']} (resumed at {step})"
        assert y["grad_norm"] == pytest.approx(x["grad_norm"], rel=1e-5), f"step {x['step']}"
        assert y["learning_rate"] == x["learning_rate"]
        for term in terms:
            assert y[term] == pytest.approx(x[term], rel=1e-6, abs=0), f"{term} at step {x['step']}"
    wa, wb = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6) for k in wa)
    ma, mb = (json.loads((p / "distil.json").read_text())["metrics"] for p in (full, resumed))
    assert mb == pytest.approx(ma, rel=1e-6)
    assert not (resumed / "checkpoints").exists() and not resumed.with_name(f".{resumed.name}.partial").exists()


def test_teacher_finetuning_resumes_exactly_after_sigkill(tiny_teacher, tiny_glue, tmp_path):
    # 96 rows, 12 steps of 8 per epoch, 3 epochs: the run is killed 8 steps into the second epoch (the data
    # order of a later epoch is where the Trainer's own sampler, drawing from the global RNG, differs).
    args = ["finetune", "--teacher", tiny_teacher, "--data", tiny_glue, *COMMON, "--epochs", "3"]
    full = cli(*args, "--out", tmp_path / "full")
    assert full.exit_code == 0, full.output

    kill_after_checkpoint(20, args, tmp_path / "killed")
    resumed = cli(*args, "--out", tmp_path / "killed", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(tmp_path / "full", tmp_path / "killed", 20, 36)


def test_task_distillation_with_perturbed_copies_resumes_exactly_after_sigkill(finetuned_teacher, tiny_glue,
                                                                                 tmp_path):
    # 96 rows + 96 perturbed copies, 24 steps of 8 per epoch, 2 epochs: killed 6 steps into the second. A log
    # every 3 steps, and one at each checkpoint, so no logged average (loss, loss_kd, loss_ce) spans the kill.
    args = ["task", "--teacher", finetuned_teacher, "--data", tiny_glue, *COMMON, "--logging-steps", "3",
            "--epochs", "2", "--augment", "1", "--num-layers", "2"]
    full = cli(*args, "--out", tmp_path / "full", "--cache-dir", tmp_path / "cache-full")
    assert full.exit_code == 0, full.output

    killed = [*args, "--cache-dir", tmp_path / "cache"]
    kill_after_checkpoint(30, killed, tmp_path / "killed")
    resumed = cli(*killed, "--out", tmp_path / "killed", "--resume")
    assert resumed.exit_code == 0, resumed.output
    logged = sorted({*range(3, 49, 3), 10, 20, 30, 40})
    assert_same_run(tmp_path / "full", tmp_path / "killed", 30, 48, terms=("loss_kd", "loss_ce"), logged=logged)
    # The resumed run perturbed the rows as the killed one did: it found their teacher outputs cached.
    assert len(list((tmp_path / "cache").glob("teacher-outputs-*"))) == 1
    assert "teacher outputs: reusing" in resumed.output
    info = json.loads((tmp_path / "killed" / "distil.json").read_text())
    assert info["transfer_examples"] == 192 and info["resumed_from"] == "checkpoint-30"


def test_embedding_distillation_resumes_exactly_after_sigkill(tmp_path):
    from safetensors.torch import load_file

    from .conftest import sentences
    from .deploy_fixtures import make_embedding_teacher

    teacher = make_embedding_teacher(tmp_path / "teacher")
    (tmp_path / "corpus.txt").write_text("\n".join(s for s, _ in sentences(200, seed=3)) + "\n")
    # 200 sentences, 13 batches of 16 per epoch, 2 epochs: killed 7 steps into the second.
    args = ["embed", "--teacher", teacher, "--corpus", tmp_path / "corpus.txt", "--num-layers", "2", "--epochs", "2",
            "--batch-size", "16", "--lr", "1e-3", "--max-length", "32", "--save-steps", "5", "--logging-steps", "1"]
    full = cli(*args, "--out", tmp_path / "full", "--cache-dir", tmp_path / "cache-full")
    assert full.exit_code == 0, full.output

    out, killed = tmp_path / "killed", [*args, "--cache-dir", tmp_path / "cache"]
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, str(TESTS / "kill_after_save.py"), "20", *map(str, killed), "--out",
                               str(out)], env=child_env(), stdout=fh, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    checkpoints = tmp_path / ".killed.partial" / "checkpoints"
    assert not out.exists() and sorted(p.name for p in checkpoints.iterdir()) == ["step-20"]
    (checkpoints / ".step-25.tmp").mkdir()  # a kill while writing the next checkpoint: never renamed into place
    (checkpoints / ".step-25.tmp" / "model.safetensors").write_bytes(b"truncated")

    resumed = cli(*killed, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    a, b = (json.loads((p / "distil.json").read_text())["train"] for p in (tmp_path / "full", out))
    assert a["resumed_from"] is None and b["resumed_from"] == "step-20"
    assert [h["step"] for h in a["history"]] == [h["step"] for h in b["history"]] == list(range(1, 27))
    for x, y in zip(a["history"], b["history"]):
        for key in ("loss", "mse", "cos", "sim", "grad_norm", "lr"):
            assert y[key] == pytest.approx(x[key], rel=1e-6, abs=0), f"{key} at step {x['step']}"
    wa, wb = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6) for k in wa)
    assert not (tmp_path / ".killed.partial").exists() and not (out / "checkpoints").exists()
