"""`distil embed`: a sentence-embedding student from the teacher's layers, trained on cached teacher embeddings.

    teacher folder (sentence-transformers layout: modules.json → Transformer, Pooling[, Normalize])
      → pooling read from 1_Pooling/config.json (mean when absent, said aloud)
      → student: the teacher's chosen layers (BERT → DistilBertModel, as `distil student`)
      → teacher embeddings of the corpus, computed once and cached as .npy
      → the student trained alone to match them (MSE + 1-cos + in-batch similarity MSE)
      → a folder that `SentenceTransformer(DIR)` and `AutoModel.from_pretrained(DIR)` both load.

The student is trained on the pooled, *unnormalised* output (what the teacher's Pooling module gives);
the cosine and similarity terms are scale-free, and a Normalize module is written when the teacher has one.
Training checkpoints into .OUT.partial/checkpoints; `resume` continues an interrupted run from the newest one.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..artifacts import check_output, fingerprint, publish, start_partial
from ..data.sentences import load_sentences
from ..models.folders import load_tokenizer, supported_config
from ..models.loading import count_parameters, load_encoder, save_model
from ..models.pooling import Pooling, read_pooling, write_sentence_transformers_files
from ..models.student import build_student, choose_layer_map
from ..models.narrow import Width
from ..models.vocab import VocabTrim
from ..train.embedding import EmbedConfig, encode_ids, tokenize, train_student
from ..train.task import hidden_projections
from .task import narrow
from .vocab import save_vocab_file, trim_student


def save_embedding_model(model, tokenizer, folder: Path, pooling: Pooling, max_seq_length: int, info: dict) -> None:
    """The student as a sentence-transformers folder (also a plain AutoModel folder) + distil.json."""
    save_model(model, tokenizer, folder, {**info, "kind": "embedding", "pooling": asdict(pooling)})
    write_sentence_transformers_files(folder, pooling, model.config.hidden_size, max_seq_length)


def build_embedding_student(teacher_dir: str, layers: str | list[int] | None = None, num_layers: int | None = None):
    """(student encoder, layer map): the teacher's chosen layers, a DistilBertModel for BERT teachers."""
    teacher = load_encoder(teacher_dir)
    layer_map = choose_layer_map(teacher.config, layers, num_layers)
    return build_student(teacher, layer_map).eval(), layer_map


def teacher_embeddings(teacher_dir: str, pooling: Pooling, ids: list[list[int]], sentences: list[str],
                       max_length: int, pad_id: int, cache_dir: Path | None) -> tuple[np.ndarray, dict]:
    """The teacher's pooled, unnormalised embedding of every sentence: from the cache when this teacher,
    pooling, length and corpus were seen before, else computed once and saved there as .npy."""
    weights = sorted(Path(teacher_dir).glob("*.safetensors")) if Path(teacher_dir).is_dir() else []
    key = fingerprint(teacher_dir, pooling.mode, max_length, sentences, files=weights)
    path = Path(cache_dir) / f"teacher-{key}.npy" if cache_dir else None
    if path is not None and path.exists():
        emb = np.load(path)
        if emb.shape[0] == len(sentences):
            return emb, {"cache": str(path), "cached": True, "seconds": 0.0}
    start = time.perf_counter()
    teacher = load_encoder(teacher_dir)
    emb = encode_ids(teacher, ids, pad_id, pooling.mode, 128, "teacher embeddings (once)")
    seconds = time.perf_counter() - start
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)
    return emb, {"cache": str(path) if path else None, "cached": False, "seconds": round(seconds, 1)}


def distil_embeddings(teacher: str, corpus: list[str | Path], out: Path, cfg: EmbedConfig,
                      layers: str | list[int] | None = None, num_layers: int | None = None,
                      cache_dir: Path | None = None, overwrite: bool = False, say=print, save_steps: int = 500,
                      resume: bool = False, trim: VocabTrim | None = None, width: Width | None = None) -> dict:
    """`distil embed`: student from the teacher, trained on the corpus' sentences to match the teacher's
    embeddings (no labels); cfg.epochs 0 writes the untrained truncated student. Returns distil.json's content.

    Training writes a checkpoint every `save_steps` steps; with `resume` it continues from the newest one.
    With `trim`, the student keeps the vocabulary of the corpus (and trim.corpus) only; with `width`, the teacher's
    most important dimensions only (models/narrow.py), its embeddings compared through a learned projection."""
    check_output(out, overwrite)
    choose_layer_map(supported_config(teacher), layers, num_layers)  # a bad family or --layers fails before loading
    start = time.perf_counter()
    pooling, note = read_pooling(teacher)
    if note:
        say(f"note: {note}")
    student, layer_map = build_embedding_student(teacher, layers, num_layers)
    teacher_width, narrowed = student.config.hidden_size, None
    if width is not None:
        student, narrowed = narrow(student, width)
    tokenizer = teacher_tokenizer = load_tokenizer(teacher)
    sentences = sources = None
    if cfg.epochs > 0 or trim is not None:
        sentences, sources = load_sentences(corpus)
        say(f"{len(sentences):,} sentences from {', '.join(str(c) for c in corpus)}")
    vocab = None
    if trim is not None:
        student, tokenizer, vocab = trim_student(student, tokenizer, trim, sentences, say=say)
    info = {"stage": "embed", "teacher": teacher, "layer_map": layer_map, "student_type": student.config.model_type,
            "config": {**cfg.to_dict()}, "parameters": count_parameters(student),
            **({"trim_vocab": trim.to_dict(), "vocab": vocab} if vocab else {}),
            **({"width": width.to_dict(), "narrow": narrowed} if narrowed else {})}
    if cfg.epochs > 0:
        teacher_ids = tokenize(teacher_tokenizer, sentences, cfg.max_length)
        ids = teacher_ids if tokenizer is teacher_tokenizer else tokenize(tokenizer, sentences, cfg.max_length)
        targets, cache = teacher_embeddings(teacher, pooling, teacher_ids, sentences, cfg.max_length,
                                            teacher_tokenizer.pad_token_id, cache_dir)
        tmp = start_partial(out, overwrite, resume)  # kept by a failure, for --resume
        projection = (hidden_projections(student.config.hidden_size, teacher_width, 1, narrowed["hidden_dims"])[0]
                      if narrowed else None)
        log = train_student(student, ids, targets, tokenizer.pad_token_id, pooling.mode, cfg,
                            checkpoints=tmp / "checkpoints", save_steps=save_steps, resume=resume,
                            projection=projection)
        shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
        info.update(corpus={"sources": sources, "sentences": len(sentences),
                            "tokens": int(sum(len(r) for r in ids))},
                    teacher_embeddings=cache, train={"steps": log.steps, "seconds": log.seconds, "history": log.history,
                                                     "resumed_from": log.resumed_from})
    else:
        tmp = start_partial(out, overwrite)
        info["train"] = None  # the truncated student, untrained
    info["seconds"] = round(time.perf_counter() - start, 1)
    save_embedding_model(student, tokenizer, tmp, pooling, cfg.max_length, info)
    save_vocab_file(tmp, tokenizer, vocab)
    publish(tmp, Path(out), overwrite)
    return info


