"""Task training: fine-tuning on gold labels, and task distillation on cached teacher outputs.

Distillation loss (Hinton et al. 2015; Sanh et al. 2019):
  classification  α·T²·KL(teacher‖student at T) + (1−α)·CE(gold)
  regression      α·MSE(teacher prediction) + (1−α)·MSE(gold)
  optional        + β·(1 − cos) between student and teacher final [CLS] states
The teacher is frozen and the inputs fixed, so its outputs are computed once and stored as
dataset columns (`teacher_logits`, `teacher_cls`); an epoch then costs only the student.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from transformers import Trainer

from .. import losses
from .common import Collator, TrainConfig, add_loss_terms, model_inputs, predict_logits, training_arguments


@dataclass
class DistillConfig:
    """Loss weights of task distillation; defaults are the recipe `distil run` uses."""

    alpha: float = 0.5
    temperature: float = 2.0
    cls_weight: float = 0.0  # β on the cosine loss between final [CLS] states (0: off)
    augment: int = 0  # perturbed, teacher-labelled copies of each training row (data/augment.py; 0: off)

    def to_dict(self) -> dict:
        """As recorded in distil.json; `augment` only when on, so records made before it existed still match."""
        return {k: v for k, v in vars(self).items() if k != "augment" or v}


class DistillationTrainer(Trainer):
    """`Trainer` whose loss distils from teacher outputs stored in the batch."""

    def __init__(self, *args, distill: DistillConfig, regression: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.distill = distill
        self.regression = regression
        self.model_accepts_loss_kwargs = False  # compute_loss averages per micro-batch: scale by accumulation
        self._terms = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        teacher_logits = inputs.pop("teacher_logits")
        teacher_cls = inputs.pop("teacher_cls", None)
        labels = inputs.pop("labels")
        use_cls = self.distill.cls_weight > 0 and teacher_cls is not None
        outputs = model(**inputs, output_hidden_states=use_cls)
        d = self.distill
        if self.regression:
            loss = losses.regression_distillation(outputs.logits, teacher_logits, labels, d.alpha)
        else:
            kd = losses.soft_target_kl(outputs.logits, teacher_logits, d.temperature)
            ce = losses.gold_ce(outputs.logits, labels)  # augmented copies have no gold class
            loss = d.alpha * kd + (1 - d.alpha) * ce
            self._terms["loss_kd"].append(kd.item())
            self._terms["loss_ce"].append(ce.item())
        if use_cls:
            cos = losses.hidden_cosine(outputs.hidden_states[-1][:, 0], teacher_cls)
            loss = loss + d.cls_weight * cos
            self._terms["loss_cls_cos"].append(cos.item())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs, *args, **kwargs):
        add_loss_terms(logs, self._terms)
        super().log(logs, *args, **kwargs)


def _run_trainer(trainer: Trainer, work_dir: Path, resume: bool) -> float:
    checkpoint = resume and any(work_dir.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if checkpoint else None)
    # Mixed precision wraps model.forward in autocast; unwrap so later evaluation runs in fp32, like a reload.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    shutil.rmtree(work_dir, ignore_errors=True)
    return float(result.metrics["train_runtime"])


def finetune(model, tokenizer, train_ds, cfg: TrainConfig, work_dir: Path, resume: bool = False) -> float:
    """Train `model` on gold labels (its own loss); returns training seconds."""
    args = training_arguments(cfg, work_dir)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=Collator(tokenizer, model_inputs(model)),
    )
    return _run_trainer(trainer, work_dir, resume)


def add_teacher_outputs(teacher, tokenizer, train_ds, with_cls: bool = False, batch_size: int = 128):
    """Return `train_ds` with the frozen teacher's logits (and [CLS] states) as columns."""
    out = predict_logits(teacher, train_ds, tokenizer, batch_size, "teacher outputs", hidden=with_cls)
    logits, cls = out if with_cls else (out, None)
    train_ds = train_ds.add_column("teacher_logits", [row.tolist() for row in logits])
    if with_cls:
        train_ds = train_ds.add_column("teacher_cls", [row.tolist() for row in cls])
    return train_ds


def distill(
    student, tokenizer, train_ds, cfg: TrainConfig, dcfg: DistillConfig, regression: bool, work_dir: Path,
    resume: bool = False,
) -> float:
    """Train `student` on a dataset carrying `teacher_logits`; returns training seconds."""
    if "teacher_logits" not in train_ds.column_names:
        raise ValueError("train_ds has no teacher_logits column: call add_teacher_outputs first")
    trainer = DistillationTrainer(
        model=student,
        args=training_arguments(cfg, work_dir),
        train_dataset=train_ds,
        data_collator=Collator(tokenizer, model_inputs(student)),
        distill=dcfg,
        regression=regression,
    )
    return _run_trainer(trainer, work_dir, resume)
