"""Vocabulary trimming: a student that keeps only the tokens its texts use.

A WordPiece teacher (BERT's tokenizer) has ~30k tokens; a task's texts use a fraction of them, and the word
embeddings are about half of a small student's parameters. Trimming keeps

  - the special tokens ([PAD], [UNK], [CLS], [SEP], [MASK], added tokens), always;
  - every single character seen in the texts, in both forms (`c` and `##c`) when the teacher has them: the
    alphabet WordPiece falls back to, so a word whose piece was dropped splits into shorter pieces before [UNK];
  - every token the teacher's tokenizer produces on the texts, most frequent first when capped (`max_size`).

New ids keep the teacher's order (new id i is teacher id `kept[i]`). The student's word-embedding rows (and an
MLM head's decoder rows and bias) are sliced to `kept`, so a text whose tokens were all kept gets exactly the
untrimmed student's outputs. WordPiece matches greedily longest-first within a word, so a word whose teacher
pieces were all kept tokenises the same; only words with a dropped piece change (to shorter pieces, else [UNK]).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(kw_only=True)
class VocabTrim:
    """--trim-vocab's settings: the extra text file (--vocab-corpus) and the cap (--vocab-size, specials included)."""

    corpus: str | None = None
    size: int | None = None

    def __post_init__(self):
        if self.size is not None and self.size < 1:
            raise ConfigError(f"--vocab-size must be >= 1, got {self.size}")

    def to_dict(self) -> dict:
        return {"trim_vocab": True, "vocab_size": self.size, "vocab_corpus": self.corpus}


def wordpiece_model(tokenizer) -> dict:
    """The tokenizer's WordPiece model as tokenizer.json has it; a ConfigError naming any other kind."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"--trim-vocab needs a fast (tokenizers-backed) tokenizer; {type(tokenizer).__name__} is not")
    model = json.loads(backend.to_str())["model"]
    kind = model.get("type") or type(backend.model).__name__
    if kind != "WordPiece":
        raise ConfigError(f"--trim-vocab supports WordPiece tokenizers (BERT's) only; this teacher's tokenizer "
                          f"({type(tokenizer).__name__}) is {kind}: drop --trim-vocab")
    return model


def special_ids(tokenizer) -> list[int]:
    """Ids of the special and added tokens (always kept)."""
    ids = set(tokenizer.all_special_ids)
    ids |= {i for i in getattr(tokenizer, "added_tokens_decoder", {})}
    return sorted(i for i in ids if i is not None and i >= 0)


def _words(tokenizer, texts: list[str]) -> list[str]:
    """The texts normalised and pre-tokenised as the tokenizer does (lower-cased, split at spaces and punctuation)."""
    backend = tokenizer.backend_tokenizer
    words = []
    for text in texts:
        normal = backend.normalizer.normalize_str(text) if backend.normalizer else text
        pieces = backend.pre_tokenizer.pre_tokenize_str(normal) if backend.pre_tokenizer else [(normal, None)]
        words += [w for w, _ in pieces]
    return words


def alphabet_ids(tokenizer, texts: list[str]) -> list[int]:
    """Teacher ids of every character of the texts, as a word start (`c`) and a continuation (`##c`)."""
    prefix = wordpiece_model(tokenizer).get("continuing_subword_prefix", "##")
    vocab = tokenizer.get_vocab()
    chars = {c for word in _words(tokenizer, texts) for c in word}
    ids = {vocab[form] for c in chars for form in (c, prefix + c) if form in vocab}
    return sorted(ids)


def token_counts(tokenizer, texts: list[str], batch: int = 2048) -> Counter:
    """How often the tokenizer produces each id on the texts (no special tokens, no truncation)."""
    counts: Counter = Counter()
    for start in range(0, len(texts), batch):
        for ids in tokenizer(texts[start:start + batch], add_special_tokens=False)["input_ids"]:
            counts.update(ids)
    return counts


def choose_vocab(tokenizer, texts: list[str], max_size: int | None = None) -> tuple[list[int], dict]:
    """(kept teacher ids in teacher order, summary): specials, then the texts' alphabet, then the tokens of the
    texts by frequency (ties: lower teacher id first) up to `max_size` in all."""
    wordpiece_model(tokenizer)
    specials = special_ids(tokenizer)
    alphabet = [i for i in alphabet_ids(tokenizer, texts) if i not in set(specials)]
    counts = token_counts(tokenizer, texts)
    ranked = sorted((i for i in counts if i not in set(specials) | set(alphabet)), key=lambda i: (-counts[i], i))
    if max_size is not None:
        if max_size < len(specials) + len(alphabet):
            raise ConfigError(f"--vocab-size {max_size} is below the {len(specials)} special tokens + "
                              f"{len(alphabet)} single characters of the texts that are always kept "
                              f"(at least {len(specials) + len(alphabet)})")
        ranked = ranked[: max_size - len(specials) - len(alphabet)]
    kept = sorted(set(specials) | set(alphabet) | set(ranked))
    total = sum(counts.values())
    kept_set = set(kept)
    summary = {
        "teacher_vocab": len(tokenizer.get_vocab()),
        "kept": len(kept),
        "dropped": len(tokenizer.get_vocab()) - len(kept),
        "specials": len(specials),
        "alphabet": len(alphabet),
        "from_texts": len(ranked),
        "text_token_types": len(counts),
        "cap": max_size,
        "text_tokens": total,
        "text_tokens_kept_share": sum(c for i, c in counts.items() if i in kept_set) / total if total else 1.0,
        "order": "teacher id order: new id i is the teacher's id kept[i]",
        "special_ids": {tokenizer.convert_ids_to_tokens(i): [i, kept.index(i)] for i in specials},
    }
    return kept, summary


def _remap_ids(obj, old_to_new: dict[int, int], token_ids: dict[str, int]):
    """tokenizer.json's post-processor: special tokens' ids by their (kept) token."""
    if isinstance(obj, dict):
        out = {k: _remap_ids(v, old_to_new, token_ids) for k, v in obj.items()}
        if "tokens" in out and "ids" in out:  # TemplateProcessing special token
            out["ids"] = [token_ids[t] for t in out["tokens"]]
        for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
            if isinstance(out.get(key), list) and len(out[key]) == 2 and isinstance(out[key][0], str):
                out[key] = [out[key][0], token_ids[out[key][0]]]
        return out
    if isinstance(obj, list):
        return [_remap_ids(v, old_to_new, token_ids) for v in obj]
    return obj


def trimmed_tokenizer_json(tokenizer, kept: list[int]) -> dict:
    """The teacher's tokenizer.json over `kept` (new ids in that order): same normaliser, pre-tokeniser,
    continuing-subword prefix and decoder; the post-processor, padding and added tokens pointed at the new ids."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    old_to_new = {old: new for new, old in enumerate(kept)}
    id_to_token = {i: t for t, i in tokenizer.get_vocab().items()}
    vocab = {id_to_token[old]: new for new, old in enumerate(kept)}
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = [{**t, "id": old_to_new[t["id"]]} for t in spec.get("added_tokens") or []
                            if t["id"] in old_to_new]
    if spec.get("post_processor"):
        spec["post_processor"] = _remap_ids(spec["post_processor"], old_to_new, vocab)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = vocab[spec["padding"]["pad_token"]]
    return spec


def trim_tokenizer(tokenizer, kept: list[int]):
    """A tokenizer of the teacher's class over `kept`, as `AutoTokenizer` loads it back from a folder
    (tokenizer.json + tokenizer_config.json + vocab.txt in the new id order)."""
    from transformers import AutoTokenizer

    spec = trimmed_tokenizer_json(tokenizer, kept)
    folder = Path(tempfile.mkdtemp(prefix="distilkit-vocab-"))
    try:
        tokenizer.save_pretrained(folder)
        for stale in ("vocab.txt", "special_tokens_map.json", "added_tokens.json"):
            (folder / stale).unlink(missing_ok=True)
        (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        write_vocab_txt(folder, spec["model"]["vocab"])
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if "added_tokens_decoder" in config:  # keyed by id (transformers 4.x writes it)
            old_to_new = {old: new for new, old in enumerate(kept)}
            config["added_tokens_decoder"] = {str(old_to_new[int(k)]): v for k, v in config["added_tokens_decoder"].items()
                                              if int(k) in old_to_new}
        config.pop("tokenizer_file", None)
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        new = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        new.init_kwargs.pop("vocab_file", None)
        new.init_kwargs.pop("tokenizer_file", None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if new.get_vocab() != spec["model"]["vocab"]:
        raise ConfigError("the trimmed tokenizer did not reload with the kept vocabulary")
    return new


def write_vocab_txt(folder: Path, vocab: dict[str, int]) -> Path:
    """vocab.txt: one token a line, line i is id i (what BERT's tokenizer classes read)."""
    path = Path(folder) / "vocab.txt"
    path.write_text("".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])), encoding="utf-8")
    return path


def slice_embeddings(model, kept: list[int]):
    """Keep only the `kept` rows of the model's word embeddings (and of an MLM head's decoder and bias), in that
    order; config.vocab_size and the config's special-token ids follow. Changes `model` in place and returns it."""
    index = torch.as_tensor(kept, dtype=torch.long)
    old_to_new = {old: new for new, old in enumerate(kept)}
    config = model.config
    pad = getattr(config, "pad_token_id", None)
    old_in = model.get_input_embeddings()
    new_in = nn.Embedding(len(kept), old_in.embedding_dim, padding_idx=old_to_new.get(pad),
                          dtype=old_in.weight.dtype, device=old_in.weight.device)
    with torch.no_grad():
        new_in.weight.copy_(old_in.weight[index])
    old_out = model.get_output_embeddings()
    model.set_input_embeddings(new_in)
    if old_out is not None:
        new_out = nn.Linear(old_out.in_features, len(kept), bias=old_out.bias is not None,
                            dtype=old_out.weight.dtype, device=old_out.weight.device)
        with torch.no_grad():
            new_out.weight.copy_(old_out.weight[index])
            if old_out.bias is not None:
                new_out.bias.copy_(old_out.bias[index])
        model.set_output_embeddings(new_out)
    config.vocab_size = len(kept)
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "mask_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            setattr(config, name, old_to_new.get(value))
    if old_out is not None and getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model


def _pieces_by_word(tokenizer, texts: list[str]) -> list[dict[int, list[str]]]:
    enc = tokenizer(texts, add_special_tokens=False)
    out = []
    for i in range(len(texts)):
        groups: dict[int, list[str]] = defaultdict(list)
        for word, token in zip(enc.word_ids(i), enc.tokens(i)):
            groups[word].append(token)
        out.append(groups)
    return out


def changed_tokens(teacher_tokenizer, trimmed_tokenizer, texts: list[str]) -> dict:
    """How the trimmed tokenizer differs from the teacher's on `texts` (token strings compared word by word):
    the share of the teacher's tokens in words tokenised differently, and [UNK] counts before and after."""
    unk_before = unk_after = tokens = changed = words = changed_words = 0
    teacher_unk, trimmed_unk = teacher_tokenizer.unk_token, trimmed_tokenizer.unk_token
    for before, after in zip(_pieces_by_word(teacher_tokenizer, texts), _pieces_by_word(trimmed_tokenizer, texts)):
        for word, pieces in before.items():
            tokens += len(pieces)
            words += 1
            unk_before += pieces.count(teacher_unk)
            unk_after += after.get(word, []).count(trimmed_unk)
            if after.get(word) != pieces:
                changed += len(pieces)
                changed_words += 1
    return {"texts": len(texts), "tokens": tokens, "changed_tokens": changed,
            "changed_share": changed / tokens if tokens else 0.0, "words": words, "changed_words": changed_words,
            "unk_teacher": unk_before, "unk_trimmed": unk_after}


def trim_vocabulary(model, tokenizer, texts: list[str], dev_texts: list[str] | None = None,
                    max_size: int | None = None) -> tuple[object, object, dict]:
    """(model with sliced embeddings, trimmed tokenizer, summary for distil.json); see the module docstring.
    `dev_texts` (held out) measure how much tokenisation changed: the summary's "dev"."""
    if not texts:
        raise ConfigError("--trim-vocab needs texts to keep the tokens of: give training data or --vocab-corpus FILE")
    kept, summary = choose_vocab(tokenizer, texts, max_size)
    new_tokenizer = trim_tokenizer(tokenizer, kept)
    slice_embeddings(model, kept)
    if dev_texts:
        summary["dev"] = changed_tokens(tokenizer, new_tokenizer, dev_texts)
    summary["texts"] = len(texts)
    return model, new_tokenizer, summary


def kept_teacher_ids(teacher_tokenizer, student_tokenizer) -> list[int] | None:
    """The teacher id of each student id, when the student's vocabulary is a trimmed one; None when the same."""
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher_vocab == student_vocab:
        return None
    missing = [t for t in student_vocab if t not in teacher_vocab]
    if missing:
        raise ConfigError(f"the student's vocabulary has tokens its teacher's lacks ({', '.join(missing[:5])}): "
                          "it was not trimmed from this teacher")
    return [teacher_vocab[t] for t, _ in sorted(student_vocab.items(), key=lambda kv: kv[1])]
