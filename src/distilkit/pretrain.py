"""`distil pretrain`: general-purpose distillation on raw text (DistilBERT's triple loss).

corpus → Arrow sequences (+ token counts) → [fit an MLM head on the frozen teacher when it has none]
→ student (from `distil student`, or built here) → Trainer with the triple loss → masked-token
accuracy of teacher and student on held-out text → OUT (student folder) + OUT/pretrain.json.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoModelForMaskedLM, BertForMaskedLM, Trainer, set_seed

from .artifacts import atomic_output_dir, write_json
from .data.corpus import prepare_corpus
from .data.errors import DataError
from .data.masking import token_weights
from .models import ModelError, load_config, load_tokenizer
from .pipeline import console, save_model, versions
from .student import build_student, choose_layers, teacher_depth
from .train.common import TrainConfig, training_arguments
from .train.general import GeneralDistillationTrainer, MaskingCollator, TripleLossConfig


def has_mlm_head(path: str) -> bool:
    archs = load_config(path).architectures or []
    return any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs)


def fit_mlm_head(teacher: str, tokenizer, train_ds, weights, cfg: TrainConfig, work_dir: Path):
    """A masked-LM head trained on the frozen encoder (decoder tied to the word embeddings)."""
    model = BertForMaskedLM.from_pretrained(teacher, use_safetensors=True, trust_remote_code=False)
    model.bert.requires_grad_(False)
    model.cls.predictions.decoder.weight.requires_grad_(False)  # tied to the frozen word embeddings
    trainer = Trainer(model=model, args=training_arguments(cfg, work_dir), train_dataset=train_ds,
                      data_collator=MaskingCollator(tokenizer, weights, seed=cfg.seed))
    trainer.train()
    return model.eval()


@torch.no_grad()
def mlm_accuracy(model, tokenizer, ds, weights, batch_size: int = 64, seed: int = 0) -> float:
    """Top-1 accuracy on masked positions, with the same masks for every model (fixed seed)."""
    model.eval()
    collate = MaskingCollator(tokenizer, weights, seed=seed)
    correct = total = 0
    for start in range(0, len(ds), batch_size):
        batch = collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        labels = batch.pop("labels")
        logits = model(**batch).logits
        chosen = labels != -100
        correct += (logits.argmax(-1)[chosen] == labels[chosen]).sum().item()
        total += chosen.sum().item()
    return correct / max(total, 1)


def pretrain(teacher: str, corpus: str, out: Path, cfg: TrainConfig, loss: TripleLossConfig,
             student: str | None = None, layers: str | None = None, eval_corpus: str | None = None,
             fit_head: bool = False, head_steps: int = 300, max_len: int = 128, eval_sequences: int = 500,
             overwrite: bool = False, resume: bool = False) -> dict:
    """Distil a general-purpose student from `teacher` on `corpus`; returns pretrain.json's content."""
    loss.check()
    set_seed(cfg.seed)  # the fitted head's init and the student's training repeat exactly
    start = time.perf_counter()
    tokenizer = load_tokenizer(teacher)
    if not has_mlm_head(teacher) and not fit_head:
        raise ModelError(f"{teacher} has no masked-LM head: pass --fit-mlm-head to fit one on the frozen teacher")
    if student is not None:
        s_vocab = load_tokenizer(student).get_vocab()
        if s_vocab != tokenizer.get_vocab():
            raise ModelError(f"{student}'s tokenizer differs from the teacher's ({teacher}): they must share a vocabulary")
        if load_config(student).hidden_size > load_config(teacher).hidden_size:
            raise ModelError(f"{student} is wider than its teacher {teacher}: expected the same or a smaller width")
    with atomic_output_dir(out, overwrite, resume) as tmp:
        corpus_dir, eval_dir = tmp / "corpus", tmp / "eval_corpus"
        for source, folder in ((corpus, corpus_dir), (eval_corpus, eval_dir)):
            if source and not folder.exists():  # prepared once; reused by --resume
                shutil.rmtree(folder.with_name(folder.name + ".tmp"), ignore_errors=True)
                prepare_corpus(source, tokenizer, folder.with_name(folder.name + ".tmp"), max_len)
                folder.with_name(folder.name + ".tmp").rename(folder)
        train_ds = datasets.load_from_disk(str(corpus_dir))
        stats = {"sequences": len(train_ds), "max_len": max_len}
        weights = token_weights(torch.as_tensor(np.load(corpus_dir / "token_counts.npy")))
        if eval_corpus:
            held_out = datasets.load_from_disk(str(eval_dir))
        else:  # hold out the last sequences of the corpus
            n = min(eval_sequences, len(train_ds) // 10)
            if n == 0:
                raise DataError(f"{corpus}: too small to hold out evaluation text; pass --eval-corpus")
            held_out = train_ds.select(range(len(train_ds) - n, len(train_ds)))
            train_ds = train_ds.select(range(len(train_ds) - n))
        held_out = held_out.select(range(min(eval_sequences, len(held_out))))

        if has_mlm_head(teacher):
            teacher_model = AutoModelForMaskedLM.from_pretrained(teacher, use_safetensors=True).eval()
        elif (tmp / "teacher_with_head" / "distil.json").exists():  # fitted before the run was interrupted
            teacher_model = AutoModelForMaskedLM.from_pretrained(tmp / "teacher_with_head", use_safetensors=True).eval()
        else:
            console.print(f"fitting a masked-LM head on the frozen teacher ({head_steps} steps)")
            head_cfg = TrainConfig(**{**cfg.to_dict(), "max_steps": head_steps, "learning_rate": 1e-3})
            teacher_model = fit_mlm_head(teacher, tokenizer, train_ds, weights, head_cfg, tmp / "head_checkpoints")
            with atomic_output_dir(tmp / "teacher_with_head", overwrite=True) as head_dir:
                save_model(teacher_model, tokenizer, head_dir, {"stage": "fit-mlm-head", "teacher": teacher,
                                                                "steps": head_steps})
        if student is None:
            layer_map = choose_layers(teacher_depth(teacher_model.config), layers)
            student_model = build_student(teacher_model, layer_map)
        else:
            layer_map = None
            student_model = AutoModelForMaskedLM.from_pretrained(student, use_safetensors=True)
        teacher_acc = mlm_accuracy(teacher_model, tokenizer, held_out, weights)
        trainer = GeneralDistillationTrainer(
            model=student_model, args=training_arguments(cfg, tmp / "checkpoints"), train_dataset=train_ds,
            data_collator=MaskingCollator(tokenizer, weights), teacher=teacher_model, loss_config=loss)
        checkpoint = resume and any((tmp / "checkpoints").glob("checkpoint-*"))
        result = trainer.train(resume_from_checkpoint=True if checkpoint else None)
        student_acc = mlm_accuracy(student_model, tokenizer, held_out, weights)
        info = {
            "stage": "pretrain",
            "teacher": str(teacher),
            "student_init": str(student) if student else {"built_from": str(teacher), "layer_map": layer_map},
            "corpus": str(corpus), "eval_corpus": str(eval_corpus) if eval_corpus else "held-out tail of the corpus",
            "corpus_stats": stats, "held_out_sequences": len(held_out),
            "config": cfg.to_dict(), "loss": vars(loss), "fit_mlm_head": not has_mlm_head(teacher),
            "teacher_mlm_accuracy": teacher_acc, "student_mlm_accuracy": student_acc,
            "accuracy_ratio": student_acc / max(teacher_acc, 1e-9),
            "train_seconds": float(result.metrics["train_runtime"]),
            "loss_history": [h for h in trainer.state.log_history if "loss" in h],
            "wall_seconds": time.perf_counter() - start, "versions": versions(),
        }
        save_model(student_model, tokenizer, tmp, {k: v for k, v in info.items() if k != "loss_history"})
        write_json(tmp / "pretrain.json", info)
        for folder in ("checkpoints", "head_checkpoints", "corpus", "eval_corpus"):
            shutil.rmtree(tmp / folder, ignore_errors=True)
    return info
