"""`distil pretrain`: general-purpose distillation on raw text (DistilBERT's triple loss, or the headless recipe).

corpus → Arrow sequences (+ token counts) → [fit an MLM head on the frozen teacher when it has none]
→ student (from `distil student`, or built here) → Trainer with the triple loss → masked-token
accuracy of teacher and student on held-out text → OUT (student folder) + OUT/pretrain.json.

The headless recipe (`HeadlessLossConfig`) needs no MLM head: the bare encoders, the plain text, the last
layer's attention (and value relation) KL and hidden-state cosine as loss, and the same two measured on the
held-out text for the student before and after training.

Every input is checked before any work starts. Under `torchrun` every process trains (DDP), while
only the main process prepares corpora, fits the head, evaluates and writes OUT (the others wait).
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoModel, AutoModelForMaskedLM, set_seed

from rich.console import Console

from ..artifacts import check_output, partial_dir, publish, read_json, start_partial, write_json
from ..data.corpus import CORPUS_INFO, check_prepared, check_source, is_prepared, prepare_corpus
from ..data.errors import DataError
from ..data.masking import token_weights
from ..hardware import versions
from ..models.families import check_attention, family_of
from ..models.folders import ModelError, load_config, load_tokenizer
from ..models.loading import save_model
from ..models.student import build_student, choose_layer_map
from ..train.common import TrainConfig, drop_incomplete_checkpoints, last_checkpoint, on_main, training_arguments
from ..train.general import (GeneralDistillationTrainer, HeadlessDistillationTrainer,
                            HeadlessLossConfig, Masker, MaskingCollator, PaddingCollator, TripleLossConfig,
                            headless_terms)

console = Console(stderr=True)
HEAD_DIR = "teacher_with_head"  # the teacher with its fitted head: reused by --resume, kept in OUT


def has_mlm_head(path: str) -> bool:
    archs = load_config(path).architectures or []
    return any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in archs)


def fit_mlm_head(teacher: str, tokenizer, train_ds, weights, steps: int, batch_size: int, lr: float, seed: int,
                 device: torch.device | str = "cpu"):
    """A masked-LM head trained on the frozen encoder (eval mode; decoder tied to the word embeddings)."""
    model = AutoModelForMaskedLM.from_pretrained(teacher, use_safetensors=True, trust_remote_code=False)
    model.base_model.requires_grad_(False)  # also freezes the tied decoder weight
    model.to(device).eval()  # the encoder gives the features the frozen teacher gives while distilling
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    collate = MaskingCollator(tokenizer, weights, seed=seed)
    rows = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        picked = torch.randint(len(train_ds), (batch_size,), generator=rows).tolist()
        batch = collate([train_ds[i] for i in picked])
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    console.print(f"masked-LM head fitted ({steps} steps), last loss {loss.item():.3f}")
    return model.requires_grad_(False)


@torch.no_grad()
def mlm_accuracy(model, tokenizer, ds, weights, batch_size: int = 64, seed: int = 0) -> float:
    """Top-1 accuracy on masked positions, with the same masks for every model (fixed seed)."""
    model.eval()
    device = next(model.parameters()).device
    collate = MaskingCollator(tokenizer, weights, seed=seed)
    correct = total = 0
    for start in range(0, len(ds), batch_size):
        batch = collate([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
        labels = batch.pop("labels").to(device)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        chosen = labels != -100
        correct += (logits.argmax(-1)[chosen] == labels[chosen]).sum().item()
        total += chosen.sum().item()
    return correct / max(total, 1)


@torch.no_grad()
def headless_eval(student, teacher, ds, pad_id: int, value: bool, cos: bool, batch_size: int = 64) -> dict:
    """Teacher-vs-student last-layer attention KL (and value-relation KL) and mean hidden-state cosine,
    averaged over the real tokens of `ds` (cosine None when `cos` is off: different widths)."""
    student.eval()
    device = next(student.parameters()).device
    collate = PaddingCollator(pad_id)
    sums, tokens = defaultdict(float), 0
    for start in range(0, len(ds), batch_size):
        rows = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        terms, _ = headless_terms(student, teacher, batch, value=value, cos=cos)
        n = batch["attention_mask"].sum().item()
        for name, term in terms.items():
            sums[name] += term.item() * n
        tokens += n
    mean = {name: total / max(tokens, 1) for name, total in sums.items()}
    return {"attention_kl": mean["attn"], "value_relation_kl": mean.get("value"),
            "hidden_cosine": 1.0 - mean["cos"] if cos else None}


def check_headless(name: str, config) -> None:
    """Refuse, by family, a model whose attention --recipe headless cannot recompute."""
    check_attention(config, f"--recipe headless ({name})")


def check_inputs(teacher: str, tokenizer, corpus: str, eval_corpus: str | None, student: str | None,
                 layers: str | None, loss: TripleLossConfig | HeadlessLossConfig, fit_head: bool, max_len: int,
                 out: Path, overwrite: bool) -> dict:
    """Refuse bad input before any work; returns corpus.json of the corpora given already prepared."""
    loss.check()
    headless = isinstance(loss, HeadlessLossConfig)
    if headless and fit_head:
        raise ModelError("--fit-mlm-head is for --recipe triple: --recipe headless uses no masked-LM head")
    check_output(out, overwrite)
    t_config = load_config(teacher)
    family_of(t_config)  # an unsupported family is refused by name, first
    if not headless and not has_mlm_head(teacher) and not fit_head:
        raise ModelError(f"{teacher} has no masked-LM head: pass --fit-mlm-head to fit one on the frozen teacher, "
                         "or --recipe headless to distil its attention and hidden states without a head")
    if headless:
        check_headless(teacher, t_config)
    if student is not None and headless:
        s_config = load_config(student)
        check_headless(student, s_config)
        if s_config.num_attention_heads != t_config.num_attention_heads:
            raise ModelError(f"{student} has {s_config.num_attention_heads} attention heads, its teacher {teacher} "
                             f"{t_config.num_attention_heads}: --recipe headless compares the attention head by head, "
                             "so expected the same number of heads")
    if student is None:
        choose_layer_map(t_config, layers)
    else:
        family_of(load_config(student))
        if load_tokenizer(student).get_vocab() != tokenizer.get_vocab():
            raise ModelError(f"{student}'s tokenizer differs from the teacher's ({teacher}): "
                             "expected them to share a vocabulary")
        s_width, t_width = load_config(student).hidden_size, t_config.hidden_size
        if s_width > t_width:
            raise ModelError(f"{student} is wider than its teacher {teacher} (hidden size {s_width} > {t_width}): "
                             "expected the same or a smaller width")
        if s_width != t_width and loss.alpha_cos > 0:
            raise ModelError(f"{student} has hidden size {s_width}, its teacher {teacher} {t_width}: L_cos compares "
                             "hidden states, so expected equal widths (or pass --alpha-cos 0)")
    positions = getattr(t_config, "max_position_embeddings", None)
    prepared = {}
    for name, source in (("corpus", corpus), ("eval_corpus", eval_corpus)):
        if source is None:
            continue
        if is_prepared(source):
            prepared[name] = check_prepared(source, tokenizer, teacher)
            length = prepared[name].get("max_len", max_len)
            where = f"{source} (prepared with max_len {length})"
        else:
            check_source(source)  # a file or folder of UTF-8 text (not binary, not empty), else a hub name
            length, where = max_len, f"--max-len {max_len}"
        if positions is not None and length > positions:
            raise DataError(f"{where}: sequences longer than the teacher's max_position_embeddings ({positions})")
    return prepared


def _load_corpora(train_dir: Path, eval_dir: Path | None, eval_sequences: int, corpus: str):
    """(train, held-out, masking weights): the held-out text is --eval-corpus, else the corpus tail."""
    train_ds = datasets.load_from_disk(str(train_dir))
    weights = token_weights(torch.as_tensor(np.load(train_dir / "token_counts.npy")))
    if eval_dir is not None:
        held_out = datasets.load_from_disk(str(eval_dir))
    else:
        n = min(eval_sequences, len(train_ds) // 10)
        if n == 0:
            raise DataError(f"{corpus}: too small to hold out evaluation text; pass --eval-corpus")
        held_out = train_ds.select(range(len(train_ds) - n, len(train_ds)))
        train_ds = train_ds.select(range(len(train_ds) - n))
    return train_ds, held_out.select(range(min(eval_sequences, len(held_out)))), weights


def pretrain(teacher: str, corpus: str, out: Path, cfg: TrainConfig, loss: TripleLossConfig | HeadlessLossConfig,
             student: str | None = None, layers: str | None = None, eval_corpus: str | None = None,
             fit_head: bool = False, head_steps: int = 300, max_len: int = 128, eval_sequences: int = 500,
             overwrite: bool = False, resume: bool = False) -> dict:
    """Distil a general-purpose student from `teacher` on `corpus`; returns pretrain.json's content.

    `loss` picks the recipe: `TripleLossConfig` (DistilBERT, masked-LM teacher and student) or
    `HeadlessLossConfig` (bare encoders, no masking). Under torchrun, processes other than the main one
    return only their rank, world size and steps.
    """
    start = time.perf_counter()
    out = Path(out)
    tokenizer = load_tokenizer(teacher)
    prepared = check_inputs(teacher, tokenizer, corpus, eval_corpus, student, layers, loss, fit_head, max_len, out,
                            overwrite)
    tmp = partial_dir(out)
    args = training_arguments(cfg, tmp / "checkpoints")
    args.ddp_find_unused_parameters = False  # every student parameter takes part in the loss
    rank, world = args.process_index, args.world_size  # under torchrun this joins the process group
    set_seed(cfg.seed)  # the fitted head's init and the student's training repeat exactly
    train_dir = Path(corpus) if "corpus" in prepared else tmp / "corpus"
    eval_dir = (Path(eval_corpus) if "eval_corpus" in prepared else tmp / "eval_corpus") if eval_corpus else None
    headless = isinstance(loss, HeadlessLossConfig)
    needs_head = not headless and not has_mlm_head(teacher)

    def prepare() -> None:  # main process: output folder, corpora, fitted head; a failure leaves nothing new
        fresh = not (resume and tmp.exists())
        start_partial(out, overwrite, resume)
        try:
            for source, folder in ((corpus, train_dir), (eval_corpus, eval_dir)):
                if source and not folder.exists():  # prepared once; reused by --resume
                    shutil.rmtree(folder.with_name(folder.name + ".tmp"), ignore_errors=True)
                    prepare_corpus(source, tokenizer, folder.with_name(folder.name + ".tmp"), max_len,
                                   tokenizer_name=teacher)
                    folder.with_name(folder.name + ".tmp").rename(folder)
            train_ds, _, weights = _load_corpora(train_dir, eval_dir, eval_sequences, corpus)  # checks the split
            if needs_head and not (tmp / HEAD_DIR / "distil.json").exists():
                console.print(f"fitting a masked-LM head on the frozen teacher ({head_steps} steps)")
                head = fit_mlm_head(teacher, tokenizer, train_ds, weights, head_steps, cfg.batch_size, 1e-3,
                                    cfg.seed, args.device)
                shutil.rmtree(tmp / (HEAD_DIR + ".tmp"), ignore_errors=True)
                save_model(head, tokenizer, tmp / (HEAD_DIR + ".tmp"),
                           {"stage": "fit-mlm-head", "teacher": teacher, "steps": head_steps})
                (tmp / (HEAD_DIR + ".tmp")).rename(tmp / HEAD_DIR)
            drop_incomplete_checkpoints(tmp / "checkpoints")
        except Exception:
            if fresh:
                shutil.rmtree(tmp, ignore_errors=True)
            raise

    on_main(prepare)
    train_ds, held_out, weights = _load_corpora(train_dir, eval_dir, eval_sequences, corpus)
    auto = AutoModel if headless else AutoModelForMaskedLM  # headless: the bare encoders, no head anywhere
    teacher_model = auto.from_pretrained(tmp / HEAD_DIR if needs_head else teacher,
                                         use_safetensors=True, trust_remote_code=False).eval()
    if student is None:
        layer_map = choose_layer_map(teacher_model.config, layers)
        student_model = build_student(teacher_model, layer_map)
    else:
        layer_map = None
        student_model = auto.from_pretrained(student, use_safetensors=True, trust_remote_code=False)
    teacher_model.to(args.device)
    collator = PaddingCollator(tokenizer.pad_token_id)
    if headless:
        student_model.to(args.device)

        def evaluate() -> dict:
            return headless_eval(student_model, teacher_model, held_out, tokenizer.pad_token_id,
                                 value=loss.alpha_value > 0, cos=loss.alpha_cos > 0)

        before = on_main(evaluate)  # the initialisation, so the effect of training is visible
        trainer = HeadlessDistillationTrainer(model=student_model, args=args, train_dataset=train_ds,
                                              data_collator=collator, teacher=teacher_model, loss_config=loss)
    else:
        teacher_acc = on_main(lambda: mlm_accuracy(teacher_model, tokenizer, held_out, weights))
        trainer = GeneralDistillationTrainer(model=student_model, args=args, train_dataset=train_ds,
                                             data_collator=collator, teacher=teacher_model, loss_config=loss,
                                             masker=Masker(tokenizer, weights))
    checkpoint = last_checkpoint(tmp / "checkpoints") if resume else None
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # Mixed precision wraps model.forward in autocast; unwrap so evaluation runs in fp32, like a reload.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    steps = trainer.state.global_step
    console.print(f"rank {rank}/{world}: trained {steps} steps, last loss {trainer.last_loss:.6f}", highlight=False)

    def finish() -> dict:  # main process: evaluate, write OUT
        if headless:
            after = evaluate()
            scores = {f"{name}_{when}": value for when, values in (("before", before), ("after", after))
                      for name, value in values.items()}
        else:
            student_acc = mlm_accuracy(student_model, tokenizer, held_out, weights)
            scores = {"teacher_mlm_accuracy": teacher_acc, "student_mlm_accuracy": student_acc,
                      "accuracy_ratio": student_acc / max(teacher_acc, 1e-9)}
        info = {
            "stage": "pretrain", "recipe": "headless" if headless else "triple",
            "teacher": str(teacher),
            "student_init": str(student) if student else {"built_from": str(teacher), "layer_map": layer_map},
            "corpus": str(corpus), "eval_corpus": str(eval_corpus) if eval_corpus else "held-out tail of the corpus",
            "corpus_stats": read_json(train_dir / CORPUS_INFO) if (train_dir / CORPUS_INFO).exists() else {},
            "train_sequences": len(train_ds), "held_out_sequences": len(held_out),
            "config": cfg.to_dict(), "loss": vars(loss), "fit_mlm_head": needs_head,
            "world_size": world, "resumed_from": checkpoint and Path(checkpoint).name, "steps": steps,
            **scores,
            "train_seconds": float(result.metrics["train_runtime"]),
            "loss_history": [h for h in trainer.state.log_history if "loss" in h],
            "wall_seconds": time.perf_counter() - start, "versions": versions(),
        }
        save_model(student_model, tokenizer, tmp, {k: v for k, v in info.items() if k != "loss_history"})
        write_json(tmp / "pretrain.json", info)
        for folder in ("checkpoints", "corpus", "eval_corpus"):  # HEAD_DIR stays: the teacher with its head
            shutil.rmtree(tmp / folder, ignore_errors=True)
        publish(tmp, out, overwrite)
        return info

    info = on_main(finish)
    return info if info is not None else {"rank": rank, "world_size": world, "steps": steps}


def corpus_stage(source: str, teacher: str, out: Path, max_len: int = 128, overwrite: bool = False) -> dict:
    """`distil corpus`: the corpus packed into token sequences with the teacher's tokenizer, as a folder that
    `distil pretrain` reads; returns corpus.json's content. A failure leaves no folder behind."""
    check_source(source)
    tmp = start_partial(out, overwrite)
    try:
        info = prepare_corpus(source, load_tokenizer(teacher), tmp, max_len, tokenizer_name=teacher)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing to resume: leave no folder behind
        raise
    publish(tmp, out, overwrite)
    return info
