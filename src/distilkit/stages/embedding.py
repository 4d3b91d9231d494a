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

import datasets
import numpy as np

from ..artifacts import check_output, fingerprint, read_json
from ..data.sentences import load_sentences, prepare_sentences
from ..models.folders import load_tokenizer, supported_config
from ..models.loading import count_parameters, load_encoder, save_model
from ..models.pooling import Pooling, read_pooling, write_sentence_transformers_files
from ..models.student import build_student, choose_layer_map
from ..models.narrow import Width
from ..models.vocab import VocabTrim
from ..train.common import gather_rows, on_main, process_group, shard_rows, stage_output
from ..train.embedding import EmbedConfig, encode_ids, row_lengths, train_student
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


def sentence_ids(corpus: list[str | Path], tokenizer, teacher_tokenizer, max_length: int, folder: Path):
    """(student ids, teacher ids, sentences.json): the corpus' unique sentences tokenised, streamed by the main
    process into memory-mapped Arrow shards in `folder` (kept for --resume), read by every process."""

    def prepare() -> None:
        if not (folder / "sentences.json").exists():
            shutil.rmtree(folder, ignore_errors=True)
            tokenizers = {"input_ids": tokenizer, **({"teacher_ids": teacher_tokenizer}
                                                     if tokenizer is not teacher_tokenizer else {})}
            prepare_sentences(corpus, tokenizers, max_length, folder)

    on_main(prepare)
    ds = datasets.load_from_disk(str(folder))
    teacher_ids = (ds.select_columns(["teacher_ids"]).rename_column("teacher_ids", "input_ids")
                   if "teacher_ids" in ds.column_names else ds)
    return ds, teacher_ids, read_json(folder / "sentences.json")


def teacher_embeddings(teacher_dir: str, pooling: Pooling, ids, sentences: str, max_length: int, pad_id: int,
                       cache_dir: Path | None) -> tuple[np.ndarray, dict]:
    """The teacher's pooled, unnormalised embedding of every sentence: from the cache when this teacher,
    pooling, length and corpus (`sentences`: their SHA-256) were seen before, else computed once and saved there
    as .npy (read back memory-mapped). Under torchrun every process computes a share of the sentences; the main
    process gathers and caches them."""
    weights = sorted(Path(teacher_dir).glob("*.safetensors")) if Path(teacher_dir).is_dir() else []
    key = fingerprint(teacher_dir, pooling.mode, max_length, sentences, files=weights)
    path = Path(cache_dir) / f"teacher-{key}.npy" if cache_dir else None
    if path is not None and on_main(lambda: path.exists() and np.load(path, mmap_mode="r").shape[0] == len(ids),
                                    share=True):
        return np.load(path, mmap_mode="r"), {"cache": str(path), "cached": True, "seconds": 0.0}
    start = time.perf_counter()
    teacher = load_encoder(teacher_dir)
    emb = gather_rows(encode_ids(teacher, ids, pad_id, pooling.mode, 128, "teacher embeddings (once)",
                                 rows=shard_rows(len(ids))), len(ids))  # the main process's (others: None)
    seconds = time.perf_counter() - start

    def save() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)

    if path is None:
        emb = on_main(lambda: emb, share=True)
    else:
        on_main(save)
        emb = np.load(path, mmap_mode="r")
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
    vocab = None
    if trim is not None:  # counts the corpus' tokens: its sentences in memory
        student, tokenizer, vocab = trim_student(student, tokenizer, trim, load_sentences(corpus)[0], say=say)
    info = {"stage": "embed", "teacher": teacher, "layer_map": layer_map, "student_type": student.config.model_type,
            "config": {**cfg.to_dict()}, "parameters": count_parameters(student),
            **({"trim_vocab": trim.to_dict(), "vocab": vocab} if vocab else {}),
            **({"width": width.to_dict(), "narrow": narrowed} if narrowed else {})}
    with stage_output(out, overwrite, resume and cfg.epochs > 0) as tmp:  # kept by a failure, for --resume
        if cfg.epochs > 0:
            ids, teacher_ids, read = sentence_ids(corpus, tokenizer, teacher_tokenizer, cfg.max_length,
                                                  tmp / "sentences")
            say(f"{read['sentences']:,} sentences from {', '.join(str(c) for c in corpus)}")
            targets, cache = teacher_embeddings(teacher, pooling, teacher_ids, read["sha256"], cfg.max_length,
                                                teacher_tokenizer.pad_token_id, cache_dir)
            projection = (hidden_projections(student.config.hidden_size, teacher_width, 1,
                                             narrowed["hidden_dims"])[0] if narrowed else None)
            log = train_student(student, ids, targets, tokenizer.pad_token_id, pooling.mode, cfg,
                                checkpoints=tmp / "checkpoints", save_steps=save_steps, resume=resume,
                                projection=projection)
            info.update(corpus={"sources": read["sources"], "sentences": read["sentences"],
                                "tokens": int(row_lengths(ids).sum())},
                        teacher_embeddings=cache, train={"steps": log.steps, "seconds": log.seconds,
                                                         "history": log.history, "resumed_from": log.resumed_from},
                        world_size=process_group()[1])
        else:
            info["train"] = None  # the truncated student, untrained
        info["seconds"] = round(time.perf_counter() - start, 1)

        def finish() -> None:  # the main process
            for folder in ("checkpoints", "sentences"):
                shutil.rmtree(tmp / folder, ignore_errors=True)
            save_embedding_model(student, tokenizer, tmp, pooling, cfg.max_length, info)
            save_vocab_file(tmp, tokenizer, vocab)

        on_main(finish)
    return info


