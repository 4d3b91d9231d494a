"""Raw-text corpora for general distillation: files, folders or hub datasets → Arrow token sequences.

Lines are read in batches (a hub dataset is streamed), tokenised with the teacher's fast tokenizer,
packed into sequences of at most `max_len` tokens framed by [CLS] ... [SEP] (very short and
mostly-[UNK] ones dropped) and written to Arrow as they come (`Dataset.from_generator`), then saved
with `save_to_disk` as memory-mapped shards: the corpus is never held whole, so one larger than RAM
works. Token ids use uint16 when the vocabulary fits, else int32. Beside it: token counts per id
(`token_counts.npy`) for frequency-smoothed masking, and `corpus.json` (the tokenizer's name,
vocabulary size and vocabulary hash, so a prepared corpus is never used with another tokenizer).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Callable, Iterator

import datasets
import numpy as np
from datasets.exceptions import DatasetGenerationError

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


def stream_lines(source: str | Path, batch_lines: int = 2000) -> Iterator[list[str]]:
    """The non-blank lines of the files (read line by line), or of a hub dataset's `text` column (streamed),
    in batches: the corpus is never held whole."""
    if Path(source).exists():
        for f in text_files(source):
            batch = []
            with f.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.strip():
                        batch.append(line.rstrip("\n"))
                        if len(batch) == batch_lines:
                            yield batch
                            batch = []
            if batch:
                yield batch
        return
    name, _, config = str(source).partition(":")  # a hub dataset, e.g. "Salesforce/wikitext:wikitext-103-raw-v1"
    try:
        rows = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except FileNotFoundError as err:  # datasets' DatasetNotFoundError too
        raise DataError(f"{source}: corpus not found: no such file or folder, and no hub dataset "
                        f"{name!r}{f' (config {config!r})' if config else ''}") from err
    for batch in rows.iter(batch_size=batch_lines):
        lines = [t for t in batch["text"] if t and t.strip()]
        if lines:
            yield lines


def token_dtype(vocab_size: int) -> str:
    """The Arrow type of token ids: uint16 when every id fits, else int32."""
    return "uint16" if vocab_size <= 65535 else "int32"


def packed_rows(source: str | Path, tokenizer, counts: np.ndarray, max_len: int = 128, min_len: int = 8,
                max_unk: float = 0.5) -> Iterator[dict]:
    """Tokenise the corpus' lines in batches and pack them into [CLS] ... [SEP] sequences of at most `max_len`
    tokens (very short and mostly-[UNK] pieces dropped), adding each kept token to `counts`."""
    body = max_len - 2
    cls, sep, unk = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id
    for lines in stream_lines(source):
        kept = []
        for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
            for start in range(0, len(ids), body):
                piece = ids[start : start + body]
                if len(piece) + 2 < min_len or piece.count(unk) > max_unk * len(piece):
                    continue
                kept.append([cls, *piece, sep])
        if kept:
            counts += np.bincount(np.concatenate(kept), minlength=len(counts))[: len(counts)]
        for row in kept:
            yield {"input_ids": row, "length": len(row)}


def tokenizer_fingerprint(tokenizer, name: str | None = None) -> dict:
    """Name, vocabulary size and SHA-256 of the (token, id) pairs: what corpus.json records."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    digest = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"tokenizer": str(name or tokenizer.name_or_path), "vocab_size": len(tokenizer), "vocab_sha256": digest}


def stream_to_disk(rows: Callable[..., Iterator[dict]], gen_kwargs: dict, features: datasets.Features,
                   out: Path) -> datasets.Dataset | None:
    """The rows `rows(**gen_kwargs)` yields, written to Arrow in batches as they come (`Dataset.from_generator`),
    then saved at `out` as memory-mapped shards; the dataset read back from `out`, or None when there were none."""
    build = out.with_name(out.name + ".arrow-build")  # from_generator's Arrow file, removed once saved as shards
    shutil.rmtree(build, ignore_errors=True)
    try:
        try:
            ds = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(build), gen_kwargs=gen_kwargs)
        except ValueError as err:  # datasets refuses a generator that yielded nothing
            if "corresponds to no data" not in str(err):
                raise
            return None
        except DatasetGenerationError as err:  # the generator's own error (a DataError naming the file...)
            raise (err.__cause__ or err) from None
        ds.save_to_disk(str(out))
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return datasets.load_from_disk(str(out))


def prepare_corpus(source: str | Path, tokenizer, out: str | Path, max_len: int = 128, min_len: int = 8,
                   tokenizer_name: str | None = None, dtype: str | None = None) -> dict:
    """Tokenise and pack a corpus into `out` (Arrow shards + token_counts.npy + corpus.json); returns corpus.json.

    The rows are streamed into Arrow in batches (`Dataset.from_generator`), then saved as memory-mapped shards:
    memory stays flat however large the corpus. `dtype` overrides the token-id type (uint16 or int32)."""
    out = Path(out)
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value(dtype or token_dtype(len(tokenizer)))),
                                  "length": datasets.Value("int32")})
    if next(stream_lines(source, batch_lines=1), None) is None:
        raise DataError(f"{source}: the corpus is empty (no non-blank lines): expected UTF-8 text, one passage per line")
    packed = stream_to_disk(packed_rows, {"source": str(source), "tokenizer": tokenizer, "counts": counts,
                                          "max_len": max_len, "min_len": min_len}, features, out)
    if packed is None:
        raise DataError(f"{source}: no sequence of at least {min_len} tokens with under half [UNK]: expected "
                        f"lines of at least {min_len - 2} tokens, mostly in the tokenizer's vocabulary")
    np.save(out / "token_counts.npy", counts)
    info = {"source": str(source), **tokenizer_fingerprint(tokenizer, tokenizer_name), "max_len": max_len,
            "min_len": min_len, "sequences": len(packed), "tokens": int(counts.sum()),
            "token_dtype": features["input_ids"].feature.dtype}
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
