"""Sentence-embedding students: pooling, the student, cached teacher embeddings, training, the saved folder.

    teacher folder (sentence-transformers layout: modules.json → Transformer, Pooling[, Normalize])
      → pooling read from 1_Pooling/config.json (mean when absent, said aloud)
      → student: the teacher's chosen layers (BERT → DistilBertModel, as `distil student`)
      → teacher embeddings of the corpus, computed once and cached as .npy
      → the student trained alone to match them (MSE + 1-cos + in-batch similarity MSE)
      → a folder that `SentenceTransformer(DIR)` and `AutoModel.from_pretrained(DIR)` both load.

The student is trained on the pooled, *unnormalised* output (what the teacher's Pooling module gives);
the cosine and similarity terms are scale-free, and a Normalize module is written when the teacher has one.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .artifacts import read_json, write_json
from .data.errors import DataError

POOLING_MODES = ("mean", "cls", "max")
ST_TRANSFORMER = "sentence_transformers.models.Transformer"
ST_POOLING = "sentence_transformers.models.Pooling"
ST_NORMALIZE = "sentence_transformers.models.Normalize"
_MODE_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}
_UNSUPPORTED_KEYS = ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


class EmbedError(ValueError):
    """An embedding model or setting that cannot be used, with what was expected."""


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector: mean, cls or max over real tokens; then L2-normalised?"""

    mode: str = "mean"
    normalize: bool = False

    def __post_init__(self):
        if self.mode not in POOLING_MODES:
            raise EmbedError(f"pooling {self.mode!r} is not supported: expected one of {', '.join(POOLING_MODES)}")


def is_embedding_model(model_dir: str | Path) -> bool:
    """A sentence-transformers folder: modules.json with a Pooling module."""
    path = Path(model_dir) / "modules.json"
    if not path.is_file():
        return False
    try:
        return any(str(m.get("type", "")).endswith(".Pooling") for m in read_json(path))
    except (ValueError, AttributeError):
        return False


def read_pooling(model_dir: str | Path) -> tuple[Pooling, str | None]:
    """The pooling of a model folder and a note to show the user when it had to be assumed.

    From modules.json (a Pooling module whose config.json sets exactly one of mean / cls / max; a
    Normalize module after it). A folder without modules.json or without a Pooling module gets
    mean pooling, not normalised, and the note says so; an unsupported pooling mode is an error.
    """
    folder = Path(model_dir)
    modules_path = folder / "modules.json"
    if not folder.is_dir() or not modules_path.is_file():
        return Pooling("mean", False), (f"{model_dir} has no sentence-transformers pooling config (modules.json): "
                                        "using mean pooling over tokens, not normalised")
    try:
        modules = read_json(modules_path)
    except ValueError as err:
        raise EmbedError(f"{modules_path}: not valid JSON ({err})") from None
    if not isinstance(modules, list):
        raise EmbedError(f"{modules_path}: expected a list of modules")
    normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    pool = next((m for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    if pool is None:
        return Pooling("mean", normalize), (f"{modules_path} has no Pooling module: using mean pooling over tokens"
                                            f"{', normalised' if normalize else ', not normalised'}")
    config_path = folder / pool.get("path", "") / "config.json"
    if not config_path.is_file():
        return Pooling("mean", normalize), f"{config_path} not found: using mean pooling over tokens"
    config = read_json(config_path)
    if isinstance(config.get("pooling_mode"), str):  # newer sentence-transformers write the mode by name
        modes = [{"cls_token": "cls", "mean_tokens": "mean", "max_tokens": "max"}.get(config["pooling_mode"],
                                                                                        config["pooling_mode"])]
    else:
        modes = [mode for mode, key in _MODE_KEYS.items() if config.get(key)]
    unsupported = [k for k in _UNSUPPORTED_KEYS if config.get(k)]
    if unsupported or len(modes) != 1 or modes[0] not in POOLING_MODES:
        raise EmbedError(f"{config_path}: pooling {modes + unsupported} is not supported: "
                         "expected exactly one of mean, cls or max")
    return Pooling(modes[0], normalize), None


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """(batch, seq, dim) token states → (batch, dim): mean or max over real tokens, or the first token.

    As sentence-transformers' Pooling: padded positions are left out of the mean and set to -1e9 for max.
    """
    if mode == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "max":
        return hidden.masked_fill(m == 0, -1e9).max(1).values
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def pool_numpy(hidden: np.ndarray, mask: np.ndarray, pooling: Pooling) -> np.ndarray:
    """`pool` (then L2 normalisation when the pooling asks) on numpy arrays, for ONNX Runtime outputs."""
    if pooling.mode == "cls":
        out = hidden[:, 0]
    elif pooling.mode == "max":
        out = np.where(mask[..., None] > 0, hidden, np.float32(-1e9)).max(1)
    else:
        m = mask[..., None].astype(hidden.dtype)
        out = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    out = out.astype(np.float32)
    if pooling.normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def normalize(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x, p=2, dim=-1)


# --- the saved folder ----------------------------------------------------------------------------


def write_sentence_transformers_files(folder: Path, pooling: Pooling, dim: int, max_seq_length: int) -> None:
    """modules.json (Transformer → Pooling [→ Normalize]), 1_Pooling/config.json, sentence_bert_config.json,
    config_sentence_transformers.json, beside a save_pretrained model and tokenizer in `folder`."""
    import transformers

    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TRANSFORMER},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_POOLING}]
    if pooling.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": ST_NORMALIZE})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    write_json(folder / "modules.json", modules)
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim,
        **{key: pooling.mode == mode for mode, key in _MODE_KEYS.items()},
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True})
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    write_json(folder / "config_sentence_transformers.json", {
        "__version__": {"transformers": transformers.__version__, "pytorch": torch.__version__},
        "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine"})


def save_embedding_model(model, tokenizer, folder: Path, pooling: Pooling, max_seq_length: int, info: dict) -> None:
    """The student as a sentence-transformers folder (also a plain AutoModel folder) + distil.json."""
    from .pipeline import save_model

    save_model(model, tokenizer, folder, {**info, "kind": "embedding", "pooling": asdict(pooling)})
    write_sentence_transformers_files(folder, pooling, model.config.hidden_size, max_seq_length)


def build_embedding_student(teacher_dir: str, layers: str | list[int] | None = None, num_layers: int | None = None):
    """(student encoder, layer map): the teacher's chosen layers, a DistilBertModel for BERT teachers."""
    from .models import load_encoder
    from .student import build_student, choose_layers, teacher_depth

    teacher = load_encoder(teacher_dir)
    layer_map = choose_layers(teacher_depth(teacher.config), layers, num_layers)
    return build_student(teacher, layer_map).eval(), layer_map


# --- encoding ------------------------------------------------------------------------------------


def tokenize(tokenizer, sentences: list[str], max_length: int) -> list[list[int]]:
    """Token ids per sentence ([CLS] ... [SEP], truncated), no padding."""
    ids = []
    for start in range(0, len(sentences), 4096):
        ids += tokenizer(sentences[start : start + 4096], truncation=True, max_length=max_length)["input_ids"]
    return ids


def pad_batch(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and attention mask, as long as the longest row."""
    width = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return input_ids, mask


@torch.no_grad()
def encode_ids(model, ids: list[list[int]], pad_id: int, mode: str, batch_size: int = 128,
               description: str | None = None) -> np.ndarray:
    """Pooled (unnormalised) embeddings of tokenised sentences, in input order; batches sorted by length."""
    from rich.progress import Progress

    model.eval()
    order = np.argsort([-len(row) for row in ids], kind="stable")
    out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
    with Progress(transient=True, disable=description is None) as progress:
        bar = progress.add_task(description or "", total=len(ids))
        for start in range(0, len(ids), batch_size):
            idx = order[start : start + batch_size]
            input_ids, mask = pad_batch([ids[i] for i in idx], pad_id)
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            out[idx] = pool(hidden, mask, mode).float().numpy()
            progress.advance(bar, len(idx))
    return out


class Embedder:
    """A model folder as a sentence encoder in PyTorch: tokenizer, encoder, pooling (+ normalisation)."""

    def __init__(self, model_dir: str | Path, max_length: int | None = None, pooling: Pooling | None = None):
        from .models import load_encoder, load_tokenizer, resolve_model

        path = resolve_model(str(model_dir))
        self.model_dir = path
        self.pooling, self.note = (pooling, None) if pooling else read_pooling(path)
        self.tokenizer = load_tokenizer(path)
        self.model = load_encoder(path)
        self.max_length = max_length or embedding_max_length(path, self.model.config)

    def encode(self, sentences: list[str], batch_size: int = 128, description: str | None = None) -> np.ndarray:
        ids = tokenize(self.tokenizer, list(sentences), self.max_length)
        emb = encode_ids(self.model, ids, self.tokenizer.pad_token_id, self.pooling.mode, batch_size, description)
        if self.pooling.normalize:
            emb /= np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
        return emb


def embedding_max_length(model_dir: str | Path, config, default: int = 128) -> int:
    """sentence_bert_config.json's max_seq_length, else `default`; never beyond the position table."""
    path = Path(model_dir) / "sentence_bert_config.json"
    length = read_json(path).get("max_seq_length") if path.is_file() else None
    return min(int(length or default), int(getattr(config, "max_position_embeddings", 512)))


# --- teacher embeddings, cached ------------------------------------------------------------------


def _fingerprint(teacher_dir: str, mode: str, max_length: int, sentences: list[str]) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(teacher_dir).glob("*.safetensors")) if Path(teacher_dir).is_dir() else []:
        h.update(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    h.update(f"{teacher_dir}|{mode}|{max_length}|{len(sentences)}".encode())
    for s in sentences:
        h.update(s.encode("utf-8") + b"\n")
    return h.hexdigest()[:20]


def teacher_embeddings(teacher_dir: str, pooling: Pooling, ids: list[list[int]], sentences: list[str],
                       max_length: int, pad_id: int, cache_dir: Path | None) -> tuple[np.ndarray, dict]:
    """The teacher's pooled, unnormalised embedding of every sentence: from the cache when this teacher,
    pooling, length and corpus were seen before, else computed once and saved there as .npy."""
    from .models import load_encoder

    key = _fingerprint(teacher_dir, pooling.mode, max_length, sentences)
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


# --- training ------------------------------------------------------------------------------------


@dataclass
class EmbedConfig:
    """Hyper-parameters of embedding distillation (written to distil.json)."""

    epochs: float = 3.0
    batch_size: int = 64
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.06  # share of the steps
    max_length: int = 128
    seed: int = 42
    mse_weight: float = 1.0  # MSE between pooled (unnormalised) embeddings
    cos_weight: float = 1.0  # 1 - cos(student, teacher)
    sim_weight: float = 1.0  # MSE between in-batch cosine-similarity matrices
    logging_steps: int = 100

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainLog:
    steps: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def length_batches(lengths: list[int], batch_size: int, rng: random.Random, pool_batches: int = 50) -> list[list[int]]:
    """Batches of indices of similar length: shuffle, sort within pools of `pool_batches` batches, cut,
    shuffle the batches. Pads little, and each batch still mixes sentences from all over the corpus."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    chunk = batch_size * pool_batches
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def train_student(student, ids: list[list[int]], targets: np.ndarray, pad_id: int, mode: str,
                  cfg: EmbedConfig, progress_label: str = "distilling") -> TrainLog:
    """Train `student` so its pooled embeddings match `targets` (the teacher's), with AdamW, linear
    warmup and decay, length-grouped batches; returns the loss history."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .losses import embedding_distillation

    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    lengths = [len(row) for row in ids]
    per_epoch = math.ceil(len(ids) / cfg.batch_size)
    total = max(1, math.ceil(per_epoch * cfg.epochs))
    warmup = int(cfg.warmup * total)
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        (no_decay if p.ndim == 1 or "LayerNorm" in name or "layer_norm" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    target = torch.from_numpy(targets)
    weights = {"mse": cfg.mse_weight, "cos": cfg.cos_weight, "sim": cfg.sim_weight}
    log, running = TrainLog(), {}
    start = time.perf_counter()
    student.train()
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task(progress_label, total=total, loss="")
        step = 0
        while step < total:
            for batch in length_batches(lengths, cfg.batch_size, rng):
                if step >= total:
                    break
                input_ids, mask = pad_batch([ids[i] for i in batch], pad_id)
                hidden = student(input_ids=input_ids, attention_mask=mask).last_hidden_state
                terms = embedding_distillation(pool(hidden, mask, mode), target[batch])
                loss = sum(weights[k] * v for k, v in terms.items() if weights[k])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                for k, v in {"loss": loss, **terms}.items():
                    running.setdefault(k, []).append(float(v.detach()))
                if step % cfg.logging_steps == 0 or step == total:
                    row = {"step": step, "epoch": round(step / per_epoch, 3), "lr": schedule.get_last_lr()[0],
                           **{k: round(sum(v) / len(v), 6) for k, v in running.items()}}
                    log.history.append(row)
                    running = {}
                    progress.update(bar, loss=f"loss {row['loss']:.4f} (cos {row['cos']:.4f}, sim {row['sim']:.5f})")
                progress.advance(bar)
    student.eval()
    log.steps, log.seconds = total, round(time.perf_counter() - start, 1)
    return log


# --- the stage -----------------------------------------------------------------------------------


def distil_embeddings(teacher: str, corpus: list[str | Path], out: Path, cfg: EmbedConfig,
                      layers: str | list[int] | None = None, num_layers: int | None = None,
                      cache_dir: Path | None = None, overwrite: bool = False, say=print) -> dict:
    """`distil embed`: student from the teacher, trained on the corpus' sentences to match the teacher's
    embeddings (no labels); cfg.epochs 0 writes the untrained truncated student. Returns distil.json's content."""
    from .artifacts import atomic_output_dir, check_output
    from .data.sentences import load_sentences
    from .models import count_parameters, load_tokenizer
    from .pipeline import versions

    check_output(out, overwrite)
    start = time.perf_counter()
    pooling, note = read_pooling(teacher)
    if note:
        say(f"note: {note}")
    student, layer_map = build_embedding_student(teacher, layers, num_layers)
    tokenizer = load_tokenizer(teacher)
    info = {"stage": "embed", "teacher": teacher, "layer_map": layer_map, "student_type": student.config.model_type,
            "config": {**cfg.to_dict()}, "parameters": count_parameters(student)}
    if cfg.epochs > 0:
        sentences, sources = load_sentences(corpus)
        say(f"{len(sentences):,} sentences from {', '.join(str(c) for c in corpus)}")
        ids = tokenize(tokenizer, sentences, cfg.max_length)
        targets, cache = teacher_embeddings(teacher, pooling, ids, sentences, cfg.max_length,
                                            tokenizer.pad_token_id, cache_dir)
        log = train_student(student, ids, targets, tokenizer.pad_token_id, pooling.mode, cfg)
        info.update(corpus={"sources": sources, "sentences": len(sentences),
                            "tokens": int(sum(len(r) for r in ids))},
                    teacher_embeddings=cache, train={"steps": log.steps, "seconds": log.seconds, "history": log.history})
    else:
        info["train"] = None  # the truncated student, untrained
    info["seconds"] = round(time.perf_counter() - start, 1)
    with atomic_output_dir(out, overwrite) as tmp:
        save_embedding_model(student, tokenizer, tmp, pooling, cfg.max_length, {**info, "versions": versions()})
    return info
