"""Raw-text corpora for general distillation: files, folders or hub datasets → Arrow token sequences.

Lines are tokenised with the teacher's fast tokenizer (batched `datasets.map`), packed into sequences
of at most `max_len` tokens framed by [CLS] ... [SEP], very short and mostly-[UNK] sequences are
dropped, and the result is saved with `save_to_disk` (memory-mapped Arrow, so a corpus larger than
RAM works). Token ids use uint16 when the vocabulary fits, else int32. Beside it: token counts per id
(`token_counts.npy`) for frequency-smoothed masking, and `corpus.json` (the tokenizer's name,
vocabulary size and vocabulary hash, so a prepared corpus is never used with another tokenizer).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import datasets
import numpy as np

from ..artifacts import read_json, write_json
from .errors import DataError

CORPUS_INFO = "corpus.json"

TEXT_SUFFIXES = {".txt", ".raw", ".tokens", ".text", ""}

# a hub dataset: name or owner/name, optionally :config
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(:[\w.-]+)?")
FILE_SUFFIXES = TEXT_SUFFIXES - {""} | {".csv", ".tsv", ".json", ".jsonl", ".gz"}


def check_source(source: str | Path) -> None:
    """Refuse before any work a corpus that is neither an existing file or folder (checked to hold text) nor
    a name that can be a hub dataset: a missing path is a DataError, not a hub look-up."""
    path = Path(source)
    if path.exists():
        if not is_prepared(path):
            text_files(path)
    elif not HUB_NAME.fullmatch(str(source)) or path.suffix.lower() in FILE_SUFFIXES:
        raise DataError(f"{source}: corpus not found (a text file, a folder of them, or a hub dataset name[:config])")


def text_files(path: str | Path) -> list[Path]:
    """The text files of a file or a folder (recursively), checked to be non-empty UTF-8 text."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no text files (expected {', '.join(sorted(s for s in TEXT_SUFFIXES if s))})")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{path}: corpus not found (a text file, a folder of them, or a hub dataset name)")
    for f in files:
        head = f.open("rb").read(65536)
        if b"\x00" in head:
            raise DataError(f"{f}: looks binary (NUL bytes): expected UTF-8 text")
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as err:
            if err.start < len(head) - 4:  # not just a character cut at the read boundary
                raise DataError(f"{f}: not UTF-8 text (byte {err.start}): expected UTF-8 text") from err
    if not any(_has_text(f) for f in files):
        raise DataError(f"{path}: the corpus is empty (no non-blank lines): expected UTF-8 text, one passage per line")
    return files


def _has_text(path: Path) -> bool:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            if chunk.strip():
                return True
    return False


def load_lines(source: str | Path) -> datasets.Dataset:
    """A dataset with one `text` column: the non-blank lines of the files, or a hub dataset's text."""
    if Path(source).exists():
        ds = datasets.load_dataset("text", data_files=[str(f) for f in text_files(source)], split="train")
    else:  # a hub dataset, e.g. "Salesforce/wikitext:wikitext-103-raw-v1"
        name, _, config = str(source).partition(":")
        try:
            ds = datasets.load_dataset(name, config or None, split="train")
        except FileNotFoundError as err:  # datasets' DatasetNotFoundError too
            raise DataError(f"{source}: corpus not found: no such file or folder, and no hub dataset "
                            f"{name!r}{f' (config {config!r})' if config else ''}") from err
    ds = ds.filter(lambda b: [bool(t and t.strip()) for t in b["text"]], batched=True)
    if len(ds) == 0:
        raise DataError(f"{source}: the corpus is empty (no non-blank lines): "
                        "expected UTF-8 text, one passage per line")
    return ds


def pack_sequences(ds, tokenizer, max_len: int = 128, min_len: int = 8, max_unk: float = 0.5):
    """Tokenise lines and pack them into [CLS] ... [SEP] sequences of at most `max_len` tokens."""
    body = max_len - 2
    cls, sep, unk = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id

    def pack(batch):
        out = []
        for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]:
            for start in range(0, len(ids), body):
                piece = ids[start : start + body]
                if len(piece) + 2 < min_len or sum(t == unk for t in piece) > max_unk * len(piece):
                    continue
                out.append([cls] + piece + [sep])
        return {"input_ids": out, "length": [len(ids) for ids in out]}

    dtype = "uint16" if len(tokenizer) <= 65535 else "int32"
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value(dtype)),
                                  "length": datasets.Value("int32")})
    return ds.map(pack, batched=True, remove_columns=ds.column_names, features=features, desc="packing")


def tokenizer_fingerprint(tokenizer, name: str | None = None) -> dict:
    """Name, vocabulary size and SHA-256 of the (token, id) pairs: what corpus.json records."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    digest = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"tokenizer": str(name or tokenizer.name_or_path), "vocab_size": len(tokenizer), "vocab_sha256": digest}


def prepare_corpus(source: str | Path, tokenizer, out: str | Path, max_len: int = 128, min_len: int = 8,
                   tokenizer_name: str | None = None) -> dict:
    """Tokenise and pack a corpus into `out` (Arrow + token_counts.npy + corpus.json); returns corpus.json."""
    packed = pack_sequences(load_lines(source), tokenizer, max_len, min_len)
    if len(packed) == 0:
        raise DataError(f"{source}: no sequence of at least {min_len} tokens with under half [UNK]: expected "
                        f"lines of at least {min_len - 2} tokens, mostly in the tokenizer's vocabulary")
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for batch in packed.iter(batch_size=4096):
        for ids in batch["input_ids"]:
            np.add.at(counts, np.asarray(ids, dtype=np.int64), 1)
    out = Path(out)
    packed.save_to_disk(str(out))
    np.save(out / "token_counts.npy", counts)
    info = {"source": str(source), **tokenizer_fingerprint(tokenizer, tokenizer_name), "max_len": max_len,
            "min_len": min_len, "sequences": len(packed), "tokens": int(counts.sum())}
    write_json(out / CORPUS_INFO, info)
    return info


def is_prepared(path: str | Path) -> bool:
    """True for a folder written by `prepare_corpus` (or any `save_to_disk` dataset folder)."""
    path = Path(path)
    return path.is_dir() and any((path / name).exists() for name in (CORPUS_INFO, "state.json", "dataset_info.json"))


def check_prepared(path: str | Path, tokenizer, tokenizer_name: str) -> dict:
    """corpus.json of a prepared corpus, checked to come from `tokenizer`'s vocabulary (else DataError)."""
    path = Path(path)
    info_path = path / CORPUS_INFO
    if not info_path.exists():
        raise DataError(f"{path}: a saved dataset without {CORPUS_INFO}: expected a corpus prepared by "
                        f"`distil corpus` (which records its tokenizer), or a text file or folder")
    info = read_json(info_path)
    if not (path / "token_counts.npy").exists():
        raise DataError(f"{path}: no token_counts.npy: expected a corpus prepared by `distil corpus`")
    want = tokenizer_fingerprint(tokenizer, tokenizer_name)
    if info.get("vocab_sha256") != want["vocab_sha256"]:
        raise DataError(
            f"{info_path}: prepared with tokenizer {info.get('tokenizer')!r} (vocab_size {info.get('vocab_size')}, "
            f"vocab_sha256 {str(info.get('vocab_sha256'))[:12]}...), expected the teacher's tokenizer "
            f"{tokenizer_name!r} (vocab_size {want['vocab_size']}, vocab_sha256 {want['vocab_sha256'][:12]}...): "
            f"prepare it again with `distil corpus SOURCE --teacher {tokenizer_name}`")
    return info
