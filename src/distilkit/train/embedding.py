"""Embedding distillation's training loop: the student alone learns to match the teacher's pooled sentence
embeddings (MSE + 1 − cos + in-batch similarity MSE), AdamW with linear warm-up and decay, length-grouped batches."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import losses
from ..models.pooling import pool
from .common import pad_batch


def tokenize(tokenizer, sentences: list[str], max_length: int) -> list[list[int]]:
    """Token ids per sentence ([CLS] ... [SEP], truncated), no padding."""
    ids = []
    for start in range(0, len(sentences), 4096):
        ids += tokenizer(sentences[start : start + 4096], truncation=True, max_length=max_length)["input_ids"]
    return ids


@torch.no_grad()
def encode_ids(model, ids: list[list[int]], pad_id: int, mode: str, batch_size: int = 128,
               description: str | None = None) -> np.ndarray:
    """Pooled (unnormalised) embeddings of tokenised sentences, in input order; batches sorted by length."""
    model.eval()
    order = np.argsort([-len(row) for row in ids], kind="stable")
    out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
    with Progress(transient=True, disable=description is None) as progress:
        bar = progress.add_task(description or "", total=len(ids))
        for start in range(0, len(ids), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in idx], pad_id)
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


def train_student(student, ids: list[list[int]], targets: np.ndarray, pad_id: int, mode: str,
                  cfg: EmbedConfig, progress_label: str = "distilling") -> TrainLog:
    """Train `student` so its pooled embeddings match `targets` (the teacher's), with AdamW, linear
    warmup and decay, length-grouped batches; returns the loss history."""
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    lengths = [len(row) for row in ids]
    per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total = max(1, math.ceil(per_epoch * cfg.epochs))
    warmup = int(cfg.warmup * total)
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        (no_decay if p.ndim == 1 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    target = torch.from_numpy(targets)
    weights = {"mse": cfg.mse_weight, "cos": cfg.cos_weight, "sim": cfg.sim_weight}
    log, running = TrainLog(), {}
    start = time.perf_counter()
    student.train()
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task(progress_label, total=total, loss="")
        step = 0
        while step < total:
            for batch in length_batches(lengths, cfg.batch_size, rng):
                if step >= total:
                    break
                input_ids, mask = pad_batch([ids[i] for i in batch], pad_id)
                hidden = student(input_ids=input_ids, attention_mask=mask).last_hidden_state
                terms = losses.embedding_distillation(pool(hidden, mask, mode), target[batch])
                loss = losses.weighted_sum(terms, weights)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                for k, v in {"loss": loss, **terms}.items():
                    running.setdefault(k, []).append(float(v.detach()))
                if step % cfg.logging_steps == 0 or step == total:
                    row = {"step": step, "epoch": round(step / per_epoch, 3), "lr": schedule.get_last_lr()[0],
                           **{k: round(sum(v) / len(v), 6) for k, v in running.items()}}
                    log.history.append(row)
                    running = {}
                    progress.update(bar, loss=f"loss {row['loss']:.4f} (cos {row['cos']:.4f}, sim {row['sim']:.5f})")
                progress.advance(bar)
    student.eval()
    log.steps, log.seconds = total, round(time.perf_counter() - start, 1)
    return log


