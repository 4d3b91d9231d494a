"""Task training: fine-tuning on gold labels, and task distillation on cached teacher outputs.

Distillation loss (Hinton et al. 2015; Sanh et al. 2019):
  classification  α·T²·KL(teacher‖student at T) + (1−α)·CE(gold)
  multi-label     α·T²·BCE(student at T, sigmoid(teacher logits / T)) + (1−α)·BCE(gold), per label
                  (one sigmoid per tag; losses.multilabel_distillation)
  regression      α·MSE(teacher prediction) + (1−α)·MSE(gold)
  optional        + β·(1 − cos) between student and teacher final [CLS] states
  optional        + γ·mean over student layers of MSE(student hidden states, teacher's at the
                    matching depth), every real token (TinyBERT's intermediate-layer loss)
                    (a narrower student: its states first mapped to the teacher's width by a learned Linear per
                    compared layer, TinyBERT's W_h; trained with the student, never saved with it)
  optional        + δ·mean over student layers of KL(teacher ‖ student attention distributions) per
                    head and real query token, each student layer against the teacher layer at the
                    matching depth (TinyBERT's attention loss, as MiniLM's KL on probabilities)
The teacher is frozen and the inputs fixed, so its logits are computed once and stored as
dataset columns (`teacher_logits`, `teacher_cls`); an epoch then costs only the student.
The intermediate-layer loss needs every token's states of several layers, too big to store:
with γ > 0 or δ > 0 the teacher also runs (no gradients) beside the student (about 1.7x the FLOPs of a
step for a 3-of-6-layer student).

Both trainers resume exactly (`resume=True`): the data order is seeded by (seed, epoch) (`EpochSampler`),
dropout draws from the global RNG, which each checkpoint saves and a resume restores, a log is written at
every checkpoint so no logged average spans one, and a checkpoint a kill left half-written is dropped.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer

from .. import losses
from ..errors import ConfigError
from ..models.loading import model_inputs
from .common import (Collator, LogAtCheckpoints, TrainConfig, add_loss_terms, attention_qkv, drop_incomplete_checkpoints,
                     epoch_sampler, gather_rows, last_checkpoint, predict_logits, shard_rows, training_arguments)


# options added after the first records: written to distil.json only when on, so older records still match
LATER_OPTIONS = ("augment", "hidden_weight", "augment_neighbours", "attention_weight", "mined_pairs")


@dataclass(kw_only=True)  # configs are built by keyword
class DistillConfig:
    """Loss weights of task distillation; defaults are the recipe `distil run` uses."""

    alpha: float = 0.5
    temperature: float = 2.0
    cls_weight: float = 0.0  # β on the cosine loss between final [CLS] states (0: off)
    augment: int = 0  # perturbed, teacher-labelled copies of each training row (data/augment.py; 0: off)
    hidden_weight: float = 0.0  # γ on the intermediate-layer hidden-state MSE (0: off; runs the teacher online)
    augment_neighbours: int = 0  # a replaced word becomes one of its k teacher-embedding neighbours (0: random word)
    attention_weight: float = 0.0  # δ on the per-layer attention KL (0: off; runs the teacher online)
    mined_pairs: int = 0  # new teacher-labelled pairs per row of a pair task, from its own sentences (0: off)

    def __post_init__(self):
        problems = [f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}"
                    for name in ("cls_weight", "augment", "hidden_weight", "augment_neighbours", "attention_weight",
                                 "mined_pairs")
                    if getattr(self, name) < 0]
        if not 0 <= self.alpha <= 1:
            problems.append(f"--alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            problems.append(f"--temperature must be > 0, got {self.temperature}")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def online_teacher(self) -> bool:
        """Whether a loss needs the teacher's states of every token, so the teacher runs beside the student."""
        return self.hidden_weight > 0 or self.attention_weight > 0

    def to_dict(self) -> dict:
        """As recorded in distil.json; options added later only when on, so older records still match."""
        return {k: v for k, v in vars(self).items() if k not in LATER_OPTIONS or v}


def matching_layers(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) `hidden_states` indices compared by the intermediate-layer loss.

    Uniform, as TinyBERT's g(m) = m·N/M: the embeddings with the embeddings, and the output of
    student layer m with the teacher's at depth m·N/M (3 of 6: 1→2, 2→4, 3→6)."""
    return [(m, round(m * teacher_layers / student_layers)) for m in range(student_layers + 1)]


def matching_attention_layers(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """(student, teacher) layer indices (0-based) whose attention the attention loss compares: the layers
    whose outputs `matching_layers` pairs (3 of 6: 0→1, 1→3, 2→5). Layer i's input is `hidden_states[i]`."""
    return [(m - 1, t - 1) for m, t in matching_layers(student_layers, teacher_layers)[1:]]


PROJECTION_FILE = "hidden_projections.pt"  # in each checkpoint, so a resume continues the projections too


def hidden_projections(student_width: int, teacher_width: int, count: int,
                       dims: list[int] | None = None) -> torch.nn.ModuleList:
    """`count` Linear maps student width → teacher width for the hidden-state loss of a narrower student.

    With `dims` (the teacher dimension each student dimension was copied from, models/narrow.py) each starts as
    that copy undone (weight[dims[j], j] = 1, bias 0); else at random, as nn.Linear."""
    layers = torch.nn.ModuleList(torch.nn.Linear(student_width, teacher_width) for _ in range(count))
    if dims is not None:
        if len(dims) != student_width:
            raise ValueError(f"{len(dims)} copied dims for a student {student_width} wide")
        with torch.no_grad():
            for layer in layers:
                layer.weight.zero_()
                layer.weight[torch.tensor(dims), torch.arange(student_width)] = 1.0
                layer.bias.zero_()
    return layers


class TaskTrainer(Trainer):
    """`Trainer` of the task stages, resumable exactly (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_callback(LogAtCheckpoints())

    def _get_train_sampler(self, train_dataset=None):
        return epoch_sampler(self.args, train_dataset if train_dataset is not None else self.train_dataset)


class DistillationTrainer(TaskTrainer):
    """`Trainer` whose loss distils from teacher outputs stored in the batch."""

    def __init__(self, *args, distill: DistillConfig, regression: bool, teacher=None, multi_label: bool = False,
                 projection_dims: list[int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.distill = distill
        self.regression = regression
        self.multi_label = multi_label
        self.teacher = teacher
        self.projections = None  # student width → teacher width, one per compared layer (a narrower student)
        if distill.online_teacher:
            if teacher is None:
                raise ValueError("hidden_weight or attention_weight > 0 needs the teacher model (run online)")
            widths = self.model.config.hidden_size, teacher.config.hidden_size
            pairs = matching_layers(self.model.config.num_hidden_layers, teacher.config.num_hidden_layers)
            if distill.hidden_weight > 0 and widths[0] != widths[1]:
                self.projections = hidden_projections(*widths, len(pairs), projection_dims).to(self.args.device)
            if distill.attention_weight > 0 and (teacher.config.num_attention_heads
                                                 != self.model.config.num_attention_heads):
                raise ConfigError(f"attention_weight > 0 compares head by head: the teacher has "
                                 f"{teacher.config.num_attention_heads} heads, the student "
                                 f"{self.model.config.num_attention_heads}")
            self.teacher = teacher.to(self.args.device).eval().requires_grad_(False)
            depths = self.model.config.num_hidden_layers, teacher.config.num_hidden_layers
            self.layer_pairs = matching_layers(*depths)
            self.attention_pairs = matching_attention_layers(*depths)
        self.student_inputs = model_inputs(self.model)  # the batch also holds the teacher's (token_type_ids)
        self.model_accepts_loss_kwargs = False  # compute_loss averages per micro-batch: scale by accumulation
        self._terms = defaultdict(list)

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, plus the projections (weight decay as the student's weights)."""
        had = self.optimizer is not None
        optimizer = super().create_optimizer(model)
        if self.projections is not None and not had:
            optimizer.add_param_group({"params": list(self.projections.parameters()),
                                       "weight_decay": self.args.weight_decay})
        return optimizer

    def save_model(self, output_dir=None, _internal_call=False):
        super().save_model(output_dir, _internal_call)
        if _internal_call and self.projections is not None and self.args.should_save:  # a checkpoint
            torch.save(self.projections.state_dict(), Path(output_dir or self.args.output_dir) / PROJECTION_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.projections is not None:
            self.projections.load_state_dict(torch.load(Path(resume_from_checkpoint) / PROJECTION_FILE,
                                                        map_location=self.args.device))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits")
        teacher_cls = inputs.pop("teacher_cls", None)
        labels = inputs.pop("labels")
        use_cls = self.distill.cls_weight > 0 and teacher_cls is not None
        use_hidden = self.distill.hidden_weight > 0
        use_attention = self.distill.attention_weight > 0
        outputs = model(**{k: v for k, v in inputs.items() if k in self.student_inputs},
                        output_hidden_states=use_cls or self.distill.online_teacher)
        d = self.distill
        if self.regression:
            loss = losses.regression_distillation(outputs.logits, teacher_logits, labels, d.alpha)
        elif self.multi_label:
            terms = losses.multilabel_distillation(outputs.logits, teacher_logits, labels, d.alpha, d.temperature)
            loss = terms["loss"]
            self._terms["loss_kd"].append(terms["kd"].item())
            self._terms["loss_bce"].append(terms["bce"].item())
        else:
            terms = losses.classification_distillation(outputs.logits, teacher_logits, labels, d.alpha, d.temperature)
            loss = terms["loss"]
            self._terms["loss_kd"].append(terms["kd"].item())
            self._terms["loss_ce"].append(terms["ce"].item())
        if use_cls:
            cos = losses.hidden_cosine(outputs.hidden_states[-1][:, 0], teacher_cls)
            loss = loss + d.cls_weight * cos
            self._terms["loss_cls_cos"].append(cos.item())
        if self.distill.online_teacher:
            with torch.no_grad():
                teacher_states = self.teacher(**inputs, output_hidden_states=True).hidden_states
            mask = inputs.get("attention_mask")
        if use_attention:
            kl = self._attention_kl(self.accelerator.unwrap_model(model), outputs.hidden_states, teacher_states, mask)
            loss = loss + d.attention_weight * kl
            self._terms["loss_attention_kl"].append(kl.item())
        if use_hidden and self.projections is not None:
            mse = torch.stack([losses.projected_hidden_mse(outputs.hidden_states[s], teacher_states[t], p.weight,
                                                           p.bias, mask)
                               for (s, t), p in zip(self.layer_pairs, self.projections)]).mean()
        elif use_hidden:
            mse = torch.stack([losses.hidden_mse(outputs.hidden_states[s], teacher_states[t], mask)
                               for s, t in self.layer_pairs]).mean()
        if use_hidden:
            loss = loss + d.hidden_weight * mse
            self._terms["loss_hidden_mse"].append(mse.item())
        return (loss, outputs) if return_outputs else loss

    def _attention_kl(self, student, student_states, teacher_states, mask) -> torch.Tensor:
        """Mean over `attention_pairs` of the attention KL, each layer's attention recomputed from its input."""
        kl = []
        for s, t in self.attention_pairs:
            sq, sk, _ = attention_qkv(student, student_states[s], s)
            with torch.no_grad():
                tq, tk, _ = attention_qkv(self.teacher, teacher_states[t], t)
            kl.append(losses.attention_kl(losses.self_attention_relation(sq, sk, mask),
                                          losses.self_attention_relation(tq, tk, mask), mask))
        return torch.stack(kl).mean()

    def log(self, logs, *args, **kwargs):
        add_loss_terms(logs, self._terms)
        super().log(logs, *args, **kwargs)


@dataclass
class TrainRun:
    """What a training run did: seconds (of this call), optimizer steps in all, the checkpoint it resumed
    from (None: from the start), the Trainer's log (every logged loss, grad norm and learning rate; the main
    process's under torchrun) and the number of processes."""

    seconds: float
    steps: int
    resumed_from: str | None = None
    log_history: list[dict] = field(default_factory=list)
    world_size: int = 1

    def record(self) -> dict:
        """The fields a stage's distil.json records."""
        return {"train_seconds": self.seconds, "steps": self.steps, "resumed_from": self.resumed_from,
                "world_size": self.world_size}


def _run_trainer(trainer: Trainer, work_dir: Path, resume: bool) -> TrainRun:
    """Train, from the last complete checkpoint in `work_dir` with `resume`. The checkpoints stay: the stage
    removes them once its output is complete, so a failure after training still resumes from the last one."""
    checkpoint = None
    if resume:
        drop_incomplete_checkpoints(work_dir)
        checkpoint = last_checkpoint(work_dir)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # Mixed precision wraps model.forward in autocast; unwrap so later evaluation runs in fp32, like a reload.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return TrainRun(seconds=float(result.metrics["train_runtime"]), steps=trainer.state.global_step,
                    resumed_from=checkpoint and Path(checkpoint).name, log_history=list(trainer.state.log_history),
                    world_size=trainer.args.world_size)


def finetune(model, tokenizer, train_ds, cfg: TrainConfig, work_dir: Path, resume: bool = False) -> TrainRun:
    """Train `model` on gold labels (its own loss), checkpointing into `work_dir`."""
    args = training_arguments(cfg, work_dir)
    trainer = TaskTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=Collator(tokenizer, model_inputs(model)),
    )
    return _run_trainer(trainer, work_dir, resume)


def add_teacher_outputs(teacher, tokenizer, train_ds, with_cls: bool = False, batch_size: int = 128):
    """Return `train_ds` with the frozen teacher's logits (and [CLS] states) as columns.

    Under torchrun each process computes its `shard_rows` share and the main process gathers them: it alone
    gets the dataset (the others None)."""
    rows = shard_rows(len(train_ds))
    shard = train_ds if len(rows) == len(train_ds) else train_ds.select(rows)
    out = predict_logits(teacher, shard, tokenizer, batch_size, "teacher outputs", hidden=with_cls)
    logits, cls = out if with_cls else (out, None)
    logits = gather_rows(logits, len(train_ds))
    cls = gather_rows(cls, len(train_ds)) if with_cls else None
    if logits is None:
        return None
    train_ds = train_ds.add_column("teacher_logits", [row.tolist() for row in logits])
    if with_cls:
        train_ds = train_ds.add_column("teacher_cls", [row.tolist() for row in cls])
    return train_ds


def distill(
    student, tokenizer, train_ds, cfg: TrainConfig, dcfg: DistillConfig, regression: bool, work_dir: Path,
    resume: bool = False, teacher=None, multi_label: bool = False, projection_dims: list[int] | None = None,
) -> TrainRun:
    """Train `student` on a dataset carrying `teacher_logits`, checkpointing into `work_dir`.

    `teacher` is needed only for the intermediate-layer loss (`dcfg.hidden_weight` > 0); a student narrower
    than it is compared through learned projections (`hidden_projections`, started from `projection_dims` when
    given), which are trained and dropped: `student` keeps its own width. `multi_label`: the
    labels are 0/1 rows, one per tag (NaN rows: no gold), and the loss is `losses.multilabel_distillation`."""
    if "teacher_logits" not in train_ds.column_names:
        raise ValueError("train_ds has no teacher_logits column: call add_teacher_outputs first")
    trainer = DistillationTrainer(
        model=student,
        args=training_arguments(cfg, work_dir),
        train_dataset=train_ds,
        data_collator=Collator(tokenizer, model_inputs(student) | (model_inputs(teacher) if teacher else set())),
        distill=dcfg,
        regression=regression,
        teacher=teacher,
        multi_label=multi_label,
        projection_dims=projection_dims,
    )
    return _run_trainer(trainer, work_dir, resume)
