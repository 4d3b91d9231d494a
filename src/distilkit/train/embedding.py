"""Embedding distillation's training loop: the student alone learns to match the teacher's pooled sentence
embeddings (MSE + 1 − cos + in-batch similarity MSE), AdamW with linear warm-up and decay, length-grouped batches.

With a checkpoint folder it writes a checkpoint every `save_steps` steps, step-N/: the student's weights
(model.safetensors), the optimizer state (optimizer.pt, read back with `torch.load(weights_only=True)`), the
torch RNG that drives dropout (rng.safetensors), and state.json: the step, the epoch and the position in it, the
batch order's generator as it was at the start of that epoch, the scheduler, the running loss averages and the
log. A checkpoint is written into a hidden folder and renamed, so step-N/ is always complete. Resumed from one,
training goes on exactly as it would have without the interruption.

Under torchrun the student is wrapped in `DistributedDataParallel`: every process draws the same batch order and
trains on every world-th batch of it (the list wrapped round to a multiple of the world size), with its own
dropout stream (seed + rank); the main process writes the checkpoints, with every process's RNG state.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import losses
from ..models.pooling import pool
from .common import pad_batch, process_group


def take(ids, idx) -> list[list[int]]:
    """Rows `idx` of token ids held in a list, or in the `input_ids` column of a (memory-mapped) Arrow dataset."""
    if isinstance(ids, datasets.Dataset):
        return ids[[int(i) for i in idx]]["input_ids"]
    return [ids[i] for i in idx]


def row_lengths(ids) -> np.ndarray:
    """The length of each row of `ids` (a list, or an Arrow dataset's `input_ids`, read without a Python loop)."""
    if isinstance(ids, datasets.Dataset):
        import pyarrow.compute as pc

        column = ids.with_format("arrow")[:]["input_ids"]  # the rows in dataset order, as Arrow
        return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.array([len(row) for row in ids], dtype=np.int64)


@torch.no_grad()
def encode_ids(model, ids, pad_id: int, mode: str, batch_size: int = 128, description: str | None = None,
               rows=None) -> np.ndarray:
    """Pooled (unnormalised) embeddings of tokenised sentences (`take`'s `ids`), of `rows` (default all) in that
    order; batches sorted by length."""
    model.eval()
    rows = np.arange(len(ids)) if rows is None else np.asarray(rows, dtype=np.int64)
    order = np.argsort(-row_lengths(ids)[rows], kind="stable")
    out = np.zeros((len(rows), model.config.hidden_size), dtype=np.float32)
    with Progress(transient=True, disable=description is None) as progress:
        bar = progress.add_task(description or "", total=len(rows))
        for start in range(0, len(rows), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = pad_batch(take(ids, rows[idx]), pad_id)
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            out[idx] = pool(hidden, mask, mode).float().numpy()
            progress.advance(bar, len(idx))
    return out


@dataclass(kw_only=True)  # configs are built by keyword
class EmbedConfig:
    """Hyper-parameters of embedding distillation (written to distil.json)."""

    epochs: float = 3.0
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.06  # share of the steps
    max_length: int = 128
    seed: int = 42
    mse_weight: float = 1.0  # MSE between pooled (unnormalised) embeddings
    cos_weight: float = 1.0  # 1 - cos(student, teacher)
    sim_weight: float = 1.0  # MSE between in-batch cosine-similarity matrices
    logging_steps: int = 100

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainLog:
    steps: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    resumed_from: str | None = None


def _checkpoint_steps(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in Path(folder).glob("step-*") if (m := re.fullmatch(r"step-(\d+)", p.name)))


def last_embed_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint in `folder` (every step-N/ is complete: they are renamed into place)."""
    steps = _checkpoint_steps(folder) if Path(folder).is_dir() else []
    return Path(folder) / f"step-{steps[-1]}" if steps else None


def rng_states() -> dict[str, torch.Tensor]:
    """The torch RNG state of every process (under torchrun), as rng.safetensors stores them: torch_cpu (the
    main process), torch_cpu_<rank> (the others). Every process calls it; the main one gets them all."""
    rank, world = process_group()
    states = {"torch_cpu": torch.get_rng_state()}
    if world > 1:
        gathered = [None] * world if rank == 0 else None
        torch.distributed.gather_object(states["torch_cpu"], gathered, dst=0)
        states = {f"torch_cpu_{r}" if r else "torch_cpu": state for r, state in enumerate(gathered or [])}
    return states


def save_checkpoint(folder: Path, step: int, student, optimizer, state: dict,
                    rng: dict[str, torch.Tensor] | None = None, projection=None) -> Path:
    """Write checkpoint step-`step` into `folder` (hidden folder, then rename) and remove the older ones."""
    from safetensors.torch import save_file, save_model

    final = Path(folder) / f"step-{step}"
    tmp = Path(folder) / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(student, str(tmp / "model.safetensors"))
    if projection is not None:
        save_model(projection, str(tmp / "projection.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    save_file(rng or {"torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state))
    tmp.rename(final)
    for old in _checkpoint_steps(folder):
        if old != step:
            shutil.rmtree(Path(folder) / f"step-{old}", ignore_errors=True)
    return final


def load_checkpoint(checkpoint: Path, student, optimizer, projection=None) -> dict:
    """Restore the student (and projection), the optimizer and this process's torch RNG from `checkpoint`;
    returns its state.json."""
    from safetensors.torch import load_file, load_model

    rank, _ = process_group()
    load_model(student, str(checkpoint / "model.safetensors"))
    if projection is not None:
        load_model(projection, str(checkpoint / "projection.safetensors"))
    optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=True))
    torch.set_rng_state(load_file(str(checkpoint / "rng.safetensors"))[f"torch_cpu_{rank}" if rank else "torch_cpu"])
    return json.loads((checkpoint / "state.json").read_text())


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


def length_batches(lengths: list[int], batch_size: int, rng: random.Random, pool_batches: int = 50) -> list[list[int]]:
    """Batches of indices of similar length: shuffle, sort within pools of `pool_batches` batches, cut,
    shuffle the batches. Pads little, and each batch still mixes sentences from all over the corpus."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    chunk = batch_size * pool_batches
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train_student(student, ids, targets: np.ndarray, pad_id: int, mode: str,
                  cfg: EmbedConfig, progress_label: str = "distilling", checkpoints: Path | None = None,
                  save_steps: int = 500, resume: bool = False, projection: torch.nn.Linear | None = None) -> TrainLog:
    """Train `student` so its pooled embeddings match `targets` (the teacher's), with AdamW, linear
    warmup and decay, length-grouped batches; returns the loss history. `ids` is what `take` reads, `targets` may
    be memory-mapped.

    With `checkpoints`, a checkpoint is written there every `save_steps` steps; with `resume`, training
    continues from the newest one (see the module docstring). `projection` (a narrower student): the student's
    embedding is mapped to the teacher's width by it for the MSE and cosine terms (the similarity matrices need
    no map); it trains with the student, is checkpointed beside it and is not part of the student."""
    rank, world = process_group()
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed + rank)  # each process its own dropout stream
    lengths = row_lengths(ids).tolist()
    per_epoch = math.ceil(math.ceil(len(ids) / cfg.batch_size) / world)  # batches of each process
    total = max(1, math.ceil(per_epoch * cfg.epochs))
    warmup = int(cfg.warmup * total)
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        (no_decay if p.ndim == 1 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if projection is not None:
        groups.append({"params": list(projection.parameters()), "weight_decay": cfg.weight_decay})
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    # find_unused_parameters: a pooler, when the family has one, takes no part in the loss
    model = torch.nn.parallel.DistributedDataParallel(student, find_unused_parameters=True) if world > 1 else student
    mapper = (torch.nn.parallel.DistributedDataParallel(projection)  # its gradients averaged like the student's
              if world > 1 and projection is not None else projection)
    weights = {"mse": cfg.mse_weight, "cos": cfg.cos_weight, "sim": cfg.sim_weight}
    log, running = TrainLog(), {}
    step, epoch, position, seconds_before = 0, 0, 0, 0.0
    checkpoint = last_embed_checkpoint(checkpoints) if checkpoints is not None and resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, student, optimizer, projection)
        schedule.load_state_dict(state["scheduler"])
        _set_rng_state(rng, state["batch_rng"])  # as at the start of the epoch: its batches are drawn again
        step, epoch, position = state["step"], state["epoch"], state["position"]
        running, log.history, seconds_before = state["running"], state["history"], state["seconds"]
        log.resumed_from = checkpoint.name
    start = time.perf_counter()
    student.train()
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task(progress_label, total=total, loss="", completed=step)
        while step < total:
            epoch_rng = _rng_state(rng)
            batches = length_batches(lengths, cfg.batch_size, rng)
            batches = (batches + batches[: per_epoch * world - len(batches)])[rank::world]  # this process's share
            for batch in batches[position:]:
                if step >= total:
                    break
                input_ids, mask = pad_batch(take(ids, batch), pad_id)
                hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
                target = torch.from_numpy(np.asarray(targets[batch], dtype=np.float32))
                pooled = pool(hidden, mask, mode)
                if projection is None:
                    terms = losses.embedding_distillation(pooled, target)
                else:
                    mapped = mapper(pooled)
                    terms = {"mse": losses.embedding_mse(mapped, target),
                             "cos": losses.embedding_cosine(mapped, target),
                             "sim": losses.similarity_mse(pooled, target)}
                loss = losses.weighted_sum(terms, weights)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                position += 1
                for k, v in {"loss": loss, **terms, "grad_norm": grad_norm}.items():
                    running.setdefault(k, []).append(float(v.detach()))
                if step % cfg.logging_steps == 0 or step == total:
                    row = {"step": step, "epoch": round(step / per_epoch, 3), "lr": schedule.get_last_lr()[0],
                           **{k: round(sum(v) / len(v), 6) for k, v in running.items()}}
                    log.history.append(row)
                    running = {}
                    progress.update(bar, loss=f"loss {row['loss']:.4f} (cos {row['cos']:.4f}, sim {row['sim']:.5f})")
                progress.advance(bar)
                if checkpoints is not None and save_steps > 0 and step % save_steps == 0 and step < total:
                    rng_state = rng_states()
                    if rank == 0:
                        save_checkpoint(checkpoints, step, student, optimizer, {
                            "step": step, "epoch": epoch, "position": position, "batch_rng": epoch_rng,
                            "scheduler": schedule.state_dict(), "running": running, "history": log.history,
                            "seconds": seconds_before + time.perf_counter() - start}, rng_state, projection)
            epoch, position = epoch + 1, 0
    student.eval()
    log.steps, log.seconds = total, round(seconds_before + time.perf_counter() - start, 1)
    return log
