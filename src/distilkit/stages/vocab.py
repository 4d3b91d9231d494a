"""--trim-vocab in the stages: which texts a student's vocabulary keeps, and training a trimmed student on a
teacher that tokenises with the full vocabulary (models/vocab.py does the trimming itself)."""

from __future__ import annotations

import copy

import datasets

from ..data.sentences import sentences_of
from ..data.task import TaskData
from ..models.vocab import VocabTrim, kept_teacher_ids, slice_embeddings, trim_vocabulary, write_vocab_txt
from ..train.common import encode


def _texts_of(ds: datasets.Dataset | None) -> list[str]:
    if ds is None:
        return []
    return [t for column in ("text", "text_pair") if column in ds.column_names for t in ds[column] if t]


def task_texts(data: TaskData | None) -> list[str]:
    """The training texts (both columns of a pair task) and the unlabelled inputs."""
    return [] if data is None else _texts_of(data.train) + _texts_of(data.unlabeled)


def dev_texts(data: TaskData | None) -> list[str]:
    return [] if data is None else [t for ds in data.dev.values() for t in _texts_of(ds)]


def trim_student(model, tokenizer, trim: VocabTrim, texts: list[str], dev: list[str] | None = None,
                 say=print) -> tuple[object, object, dict]:
    """(model, tokenizer, distil.json's "vocab") with the vocabulary of `texts` plus --vocab-corpus."""
    corpus = sentences_of(trim.corpus) if trim.corpus else []
    model, tokenizer, summary = trim_vocabulary(model, tokenizer, list(texts) + corpus, dev, trim.size)
    changed = summary.get("dev")
    say(f"vocabulary trimmed: {summary['kept']:,} of {summary['teacher_vocab']:,} tokens kept "
        f"({summary['specials']} special, {summary['alphabet']} single characters, {summary['from_texts']:,} "
        f"from {summary['texts']:,} texts)"
        + (f"; {changed['changed_share'] * 100:.2f}% of dev tokens tokenise differently" if changed else ""))
    return model, tokenizer, {**trim.to_dict(), "corpus_texts": len(corpus), **summary}


def save_vocab_file(folder, tokenizer, vocab: dict | None) -> None:
    """A trimmed student's vocab.txt (new id order) beside its tokenizer.json, for tools that read BERT's file."""
    if vocab:
        write_vocab_txt(folder, tokenizer.get_vocab())


def student_dataset(with_outputs: datasets.Dataset, transfer: datasets.Dataset, teacher_tokenizer, student_tokenizer,
                    max_length: int) -> tuple[datasets.Dataset, object]:
    """(the student's training rows, the tokenizer that pads them). With the teacher's vocabulary: the rows the
    teacher outputs were computed on. With a trimmed one: `transfer` tokenised by the student's tokenizer (the
    teacher's input names kept, so an online teacher still sees token types) plus the teacher_* columns."""
    if kept_teacher_ids(teacher_tokenizer, student_tokenizer) is None:
        return with_outputs, teacher_tokenizer
    tokenizer = copy.deepcopy(student_tokenizer)
    tokenizer.model_input_names = list(teacher_tokenizer.model_input_names)
    rows = encode(transfer, tokenizer, max_length)
    for column in [c for c in with_outputs.column_names if c.startswith("teacher_")]:
        rows = rows.add_column(column, with_outputs[column])
    return rows, tokenizer


def teacher_on_student_ids(teacher, teacher_tokenizer, student_tokenizer):
    """The teacher reading the student's token ids (its embedding rows sliced to the student's vocabulary), for
    losses that compare every token's states: the same teacher on the same token strings."""
    kept = kept_teacher_ids(teacher_tokenizer, student_tokenizer)
    return teacher if kept is None else slice_embeddings(teacher, kept)
