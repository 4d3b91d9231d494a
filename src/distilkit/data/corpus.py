"""Raw-text corpora for general distillation: files, folders or hub datasets → Arrow token sequences.

Lines are tokenised with the teacher's fast tokenizer (batched `datasets.map`), packed into sequences
of at most `max_len` tokens framed by [CLS] ... [SEP], very short and mostly-[UNK] sequences are
dropped, and the result is saved with `save_to_disk` (memory-mapped Arrow, so a corpus larger than
RAM works). Token ids use uint16 when the vocabulary fits, else int32. Token counts per id are saved
beside it (`token_counts.npy`) for frequency-smoothed masking.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from .errors import DataError

TEXT_SUFFIXES = {".txt", ".raw", ".tokens", ".text", ""}


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
    return files


def load_lines(source: str | Path, streaming: bool = False) -> datasets.Dataset:
    """A dataset with one `text` column: the non-blank lines of the files, or a hub dataset's text."""
    if Path(source).exists():
        ds = datasets.load_dataset("text", data_files=[str(f) for f in text_files(source)], split="train")
    else:  # a hub dataset, e.g. "Salesforce/wikitext:wikitext-103-raw-v1"
        name, _, config = str(source).partition(":")
        ds = datasets.load_dataset(name, config or None, split="train", streaming=streaming)
    ds = ds.filter(lambda b: [bool(t and t.strip()) for t in b["text"]], batched=True)
    if not streaming and len(ds) == 0:
        raise DataError(f"{source}: the corpus is empty (no non-blank lines)")
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
        return {"input_ids": out}

    dtype = "uint16" if len(tokenizer) <= 65535 else "int32"
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value(dtype))})
    return ds.map(pack, batched=True, remove_columns=ds.column_names, features=features, desc="packing")


def prepare_corpus(source: str | Path, tokenizer, out: str | Path, max_len: int = 128, min_len: int = 8) -> dict:
    """Tokenise and pack a corpus into `out` (Arrow + token_counts.npy); returns its statistics."""
    packed = pack_sequences(load_lines(source), tokenizer, max_len, min_len)
    if len(packed) == 0:
        raise DataError(f"{source}: no sequence of at least {min_len} tokens with under half [UNK]")
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for batch in packed.iter(batch_size=4096):
        for ids in batch["input_ids"]:
            np.add.at(counts, np.asarray(ids, dtype=np.int64), 1)
    out = Path(out)
    packed.save_to_disk(str(out))
    np.save(out / "token_counts.npy", counts)
    return {"sequences": len(packed), "tokens": int(counts.sum()), "max_len": max_len}
