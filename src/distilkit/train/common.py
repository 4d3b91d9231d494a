"""What the training stages share: tokenising, batching, batched inference, Trainer arguments, checkpoints."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import Sampler
from transformers import DataCollatorWithPadding, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import get_length_grouped_indices

from ..artifacts import partial_dir, publish, start_partial
from ..hardware import bf16_supported
from ..models.families import check_attention
from ..models.loading import model_inputs


@dataclass(kw_only=True)  # configs are built by keyword
class TrainConfig:
    """Hyper-parameters of one training stage (written to distil.json as they are)."""

    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.06
    max_length: int = 128
    seed: int = 42
    bf16: bool | None = None  # None: on when the CPU/GPU supports bf16
    save_steps: int = 500
    gradient_accumulation: int = 1
    logging_steps: int = 50

    def to_dict(self) -> dict:
        return asdict(self)


def encode(ds, tokenizer, max_length: int = 128):
    """Tokenise a text/text_pair/label dataset (batched `datasets.map`); adds a `length` column."""
    has_pair = "text_pair" in ds.column_names

    def tokenize(batch):
        enc = tokenizer(batch["text"], batch["text_pair"] if has_pair else None, truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    drop = [c for c in ("text", "text_pair") if c in ds.column_names]
    return ds.map(tokenize, batched=True, remove_columns=drop, desc="tokenising")


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The one padding helper: right-padded input ids and attention mask, as long as the longest row."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return input_ids, mask


class Collator:
    """Pads token fields per batch; stacks `teacher_*` fields; drops fields the model does not take."""

    def __init__(self, tokenizer, accepted: set[str]):
        self.pad = DataCollatorWithPadding(tokenizer)
        self.accepted = accepted

    def __call__(self, features: list[dict]) -> dict:
        extra = {}
        for key in [k for k in features[0] if k.startswith("teacher_")]:
            extra[key] = torch.tensor(np.array([f.pop(key) for f in features]), dtype=torch.float32)
        keep = self.accepted | {"label", "labels"}
        batch = self.pad([{k: v for k, v in f.items() if k in keep} for f in features])
        batch.update(extra)
        return batch


@torch.no_grad()
def predict_logits(model, ds, tokenizer, batch_size: int = 64, description: str = "predicting", hidden: bool = False):
    """Logits for every row of an encoded dataset, in row order (batches sorted by length for speed).

    With `hidden`, also returns the last hidden state at the first token ([CLS]) per row.
    """
    model.eval()
    columns = {k: ds[k] for k in model_inputs(model) & set(ds.column_names)}
    pad = DataCollatorWithPadding(tokenizer)
    order = np.argsort([-len(ids) for ids in columns["input_ids"]], kind="stable")
    logits = np.zeros((len(ds), model.config.num_labels), dtype=np.float32)
    cls = np.zeros((len(ds), model.config.hidden_size), dtype=np.float32)
    device = next(model.parameters()).device
    with Progress(transient=True) as progress:
        bar = progress.add_task(description, total=len(ds))
        for start in range(0, len(ds), batch_size):
            idx = order[start : start + batch_size]
            batch = pad([{k: v[i] for k, v in columns.items()} for i in idx])
            out = model(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=hidden)
            logits[idx] = out.logits.float().cpu().numpy()
            if hidden:
                cls[idx] = out.hidden_states[-1][:, 0].float().cpu().numpy()
            progress.advance(bar, len(idx))
    return (logits, cls) if hidden else logits


def add_loss_terms(logs: dict, terms: dict[str, list[float]]) -> None:
    """Put the mean of each loss term since the last log into `logs`, then forget them."""
    for name, values in terms.items():
        if values:
            logs[name] = round(sum(values) / len(values), 4)
    terms.clear()


def training_arguments(cfg: TrainConfig, output_dir: Path) -> TrainingArguments:
    """Trainer arguments for a stage: CPU unless a GPU is present, bf16 when supported, resumable checkpoints;
    under torchrun the data order is shared and the dropout seed is seed + rank."""
    bf16 = bf16_supported() if cfg.bf16 is None else cfg.bf16
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup,
        seed=cfg.seed,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        logging_steps=cfg.logging_steps,
        report_to="none",
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",
        dataloader_num_workers=0,
        disable_tqdm=os.environ.get("DISTILKIT_QUIET") == "1",
    )
    # Under torchrun: one data order (data_seed) for all, and each process its own dropout stream (seed + rank).
    args.data_seed, args.seed = cfg.seed, cfg.seed + args.process_index
    return args


class EpochSampler(Sampler):
    """Length-grouped shuffling seeded by (seed, epoch): the same order after a resume and in every process.

    (The Trainer's own length-grouped sampler draws from the global RNG at the start of each epoch, which a
    resumed run has in another state then: its resumed epoch would see other batches.)"""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def epoch_sampler(args: TrainingArguments, ds) -> EpochSampler:
    """The seeded training order of a Trainer on `ds` (its `length` column, else the length of `input_ids`)."""
    lengths = list(ds["length"]) if "length" in ds.column_names else [len(x) for x in ds["input_ids"]]
    seed = args.data_seed if args.data_seed is not None else args.seed
    return EpochSampler(lengths, args.train_batch_size * args.gradient_accumulation_steps, seed)


class LogAtCheckpoints(TrainerCallback):
    """Log at every checkpoint too, so no running average (the loss, the loss terms) spans a checkpoint: a
    run resumed from one logs the same values as a run that was never stopped."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            control.should_log = True
        return control


def last_checkpoint(work_dir: Path) -> str | None:
    """The newest complete Trainer checkpoint (trainer_state.json is written last) in `work_dir`, if any."""
    steps = [(int(m.group(1)), p) for p in Path(work_dir).glob("checkpoint-*")
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and (p / "trainer_state.json").exists()]
    return str(max(steps)[1]) if steps else None


def drop_incomplete_checkpoints(work_dir: Path) -> None:
    """Remove checkpoint folders a kill left half-written (no trainer_state.json)."""
    for p in Path(work_dir).glob("checkpoint-*"):
        if p.is_dir() and not (p / "trainer_state.json").exists():
            shutil.rmtree(p, ignore_errors=True)


T = TypeVar("T")


def process_group() -> tuple[int, int]:
    """(rank, world size) of this process. Launched by torchrun, it joins the process group first
    (accelerate's `PartialState`: gloo on CPU, NCCL on GPUs, rendezvous from torchrun's environment)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def on_main(fn: Callable[[], T], share: bool = False) -> T | None:
    """Run `fn` on the main process only while the others wait (under torchrun).

    The others get None (with `share`, the main process's result), or re-raise the main process's error,
    so no process is left waiting.
    """
    rank, world = process_group()
    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as err:  # handed to the other processes, then raised here too
            error = err
    if world > 1:
        box = [error, result if share else None]
        torch.distributed.broadcast_object_list(box, src=0)
        error, result = box[0], box[1] if share else result
    if error is not None:
        raise error
    return result


def raise_any(error: Exception | None) -> None:
    """Raise on every process the error of the main process, else the first other one (under torchrun)."""
    _, world = process_group()
    if world > 1:
        errors = [None] * world
        torch.distributed.all_gather_object(errors, error)
        error = next((e for e in errors if e is not None), None)
    if error is not None:
        raise error


@contextlib.contextmanager
def stage_output(out: str | Path, overwrite: bool = False, resume: bool = False) -> Iterator[Path]:
    """`artifacts.atomic_output_dir` for every process under torchrun: the main process makes the temporary
    folder and publishes it as `out` once every process is done; an error on any is raised on all."""
    on_main(lambda: start_partial(out, overwrite, resume))
    error = None
    try:
        yield partial_dir(out)
    except Exception as err:
        error = err
    raise_any(error)
    on_main(lambda: publish(partial_dir(out), Path(out), overwrite))


def shard_rows(n: int) -> range:
    """The rows of `n` this process computes under torchrun (every world-th, from its rank)."""
    rank, world = process_group()
    return range(rank, n, world)


def gather_rows(part: np.ndarray, n: int) -> np.ndarray | None:
    """The main process's copy of the `n` rows whose `shard_rows` share each process computed (others: None)."""
    rank, world = process_group()
    if world == 1:
        return part
    parts = [None] * world if rank == 0 else None
    torch.distributed.gather_object(part, parts, dst=0)
    if rank != 0:
        return None
    full = np.empty((n, *part.shape[1:]), dtype=part.dtype)
    for r, rows in enumerate(parts):
        full[r::world] = rows
    return full


def attention_qkv(model, layer_input: torch.Tensor, layer: int = -1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of layer `layer` (default the last), (batch, heads, seq, head size), from that
    layer's input (`hidden_states[layer]` for layer >= 0). Recomputed from the projections rather than taken from
    `output_attentions`, which needs eager attention and, in training, returns the weights after dropout."""
    family = check_attention(model.config, "the attention loss")
    names = family.attention_qkv
    block = model.base_model.get_submodule(family.layer_stack)[layer]
    heads = model.config.num_attention_heads
    batch, seq, _ = layer_input.shape
    return tuple(block.get_submodule(name)(layer_input).view(batch, seq, heads, -1).transpose(1, 2)
                 for name in names)
