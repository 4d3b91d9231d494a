"""Inference backends: one small class per runtime, all called the same way.

    backend = load_backend("runs/sst2/student")          # "auto": the fastest checked file (export.json)
    logits = backend(["a great film"])                    # numpy (batch, num_labels)
    results(logits, backend.id2label, backend.regression) # [{"label": "positive", "score": 0.97, ...}]
    results(logits, backend.id2label, multi_label=True)   # tags: [{"labels": ["plot"], "scores": {...}}]

Embedding models (a sentence-transformers folder, see models/pooling.py) give sentence embeddings instead:
`backend.pooling` is set and `backend(texts)` is (batch, hidden) pooled over the last hidden state
(mean / CLS / max, L2-normalised when the model's modules say so), in torch and in ONNX Runtime alike.

OpenVINO (optional, `pip install 'distilkit[openvino]'`, imported only when an OpenVINO backend loads) runs the
IR files `distil export --openvino` writes: `openvino` (fp32 IR, fp32 compute even on CPUs where OpenVINO would
default to bf16), `openvino-bf16` (the same IR with the bf16 inference precision hint; listed only on CPUs with
AVX-512 BF16 or AMX, and checked at export like a file of its own) and `openvino-int8` (the NNCF-quantised IR, its
other operations in fp32). The int8 IR under the bf16 hint was measured and dropped: faster (b32 s128 797 against
691 seq/s), but its outputs change with padding (SST-2 dev 85.21 → 83.60 when padded to the length buckets below).

`auto` takes the backend export.json names as the fastest of the files it checked (timed at export), when the
folder has it and this install can run it; else ONNX int8 > ONNX fp32 > torch.

`encode` (tokenising) and `forward` (the model alone) are separate so `distil bench` can time
the model on fixed token ids. Labels come from the model config's id2label; a multi-label model (tags) is one
whose config has problem_type "multi_label_classification".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..artifacts import read_json
from ..errors import ConfigError, UserError
from ..hardware import cpu_bf16, num_cores
from ..models.folders import check_model_dir, load_tokenizer, model_max_length, supported_config
from ..tags import DEFAULT_THRESHOLD, MULTI_LABEL, sigmoid
from ..models.pooling import Pooling, is_embedding_model, pool, pool_numpy, read_pooling
from .packing import MAX_ROWS, PACKED_INPUTS, packed_calls, round_up

ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
OV_FP32 = "model.ov.xml"  # OpenVINO IR: the .xml graph beside its .bin weights
OV_INT8 = "model.int8.ov.xml"
BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")
FILES = {"onnx": ONNX_FP32, "onnx-int8": ONNX_INT8, "openvino": OV_FP32, "openvino-bf16": OV_FP32,
         "openvino-int8": OV_INT8}  # the file each exported backend runs
BF16_HINTS = {"openvino-bf16": "openvino"}  # a backend that runs another's file under the bf16 precision hint
EXPORTED_FILES = (ONNX_FP32, ONNX_INT8, OV_FP32, "model.ov.bin", OV_INT8, "model.int8.ov.bin")  # all an export writes
FALLBACK = ("onnx-int8", "onnx", "torch")  # `auto` without a recorded fastest backend


class BackendError(UserError):
    """A backend that cannot be loaded from a folder, with what is missing."""


def embedding_pooling(model_dir: str | Path) -> Pooling | None:
    """The Pooling of a sentence-embedding folder (modules.json with a Pooling module), else None."""
    return read_pooling(model_dir)[0] if is_embedding_model(model_dir) else None


def pad_tokens(enc: dict[str, np.ndarray], multiple: int, max_length: int, pad_id: int,
               left: bool = False) -> dict[str, np.ndarray]:
    """Pad the token axis up to a multiple of `multiple` tokens (never beyond max_length): pad ids, attention
    mask 0, token types 0, so the model's outputs on the real tokens do not change."""
    length = enc["input_ids"].shape[1]
    target = max(length, min(round_up(length, multiple), max_length))
    if target == length:
        return enc
    width = ((0, 0), (target - length, 0) if left else (0, target - length))
    return {k: np.pad(v, width, constant_values=pad_id if k == "input_ids" else 0) for k, v in enc.items()}


class Backend:
    """Tokenizer + label names of a model folder; subclasses implement `forward`."""

    name = "base"
    length_multiple: int | None = None  # pad the token axis to a multiple of this (bounds the input shapes)
    packs = False  # runs packed calls (deploy/packing.py): texts need not be sorted by length to pad little

    def __init__(self, model_dir: str | Path, max_length: int | None = None):
        self.model_dir = Path(model_dir)
        self.config = supported_config(model_dir)  # an unsupported family is refused by name first
        self.tokenizer = load_tokenizer(str(model_dir))
        self.max_length = max_length or model_max_length(model_dir, self.config)
        self.multi_label = self.config.problem_type == MULTI_LABEL
        self.regression = not self.multi_label and (self.config.problem_type == "regression"
                                                    or self.config.num_labels == 1)
        self.id2label = {int(k): v for k, v in self.config.id2label.items()}
        self.pooling = embedding_pooling(model_dir)

    @property
    def embedding(self) -> bool:
        """True for a sentence-embedding model (the output is an embedding, not logits)."""
        return self.pooling is not None

    @property
    def output_dim(self) -> int:
        return self.config.hidden_size if self.embedding else self.config.num_labels

    def encode(self, texts: list[str], text_pairs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Token ids (padded to the longest, or further to a multiple of `length_multiple` tokens within
        max_length; truncated to max_length) as int64 numpy arrays."""
        enc = self.tokenizer(list(texts), list(text_pairs) if text_pairs is not None else None, padding=True,
                             truncation=True, max_length=self.max_length, return_tensors="np")
        enc = {k: v.astype(np.int64) for k, v in enc.items()}
        if self.length_multiple:
            enc = pad_tokens(enc, self.length_multiple, self.max_length, self.tokenizer.pad_token_id or 0,
                             left=self.tokenizer.padding_side == "left")
        return enc

    def forward(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def warm_up(self, max_batch: int) -> int:
        """Run every input shape calls of up to `max_batch` texts can have (with `length_multiple` set: batch 1 to
        max_batch times each length bucket up to max_length), so no request pays a shape's first call; returns
        the number of shapes run (0 when shapes are not bounded)."""
        if not self.length_multiple:
            return 0
        lengths = range(self.length_multiple, self.max_length + self.length_multiple, self.length_multiple)
        shapes = [(b, min(n, self.max_length)) for n in lengths for b in range(1, max_batch + 1)]
        for batch, length in shapes:
            ids = np.full((batch, length), self.tokenizer.pad_token_id or 0, dtype=np.int64)
            self.forward({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
        return len(shapes)

    def __call__(self, texts: list[str], text_pairs: list[str] | None = None) -> np.ndarray:
        return self.forward(self.encode(texts, text_pairs))


class TorchBackend(Backend):
    """The safetensors model in PyTorch, fp32 or with its weights cast to bf16 (`bf16`). bf16 weights rather than
    autocast: autocast casts every weight again on each call, which made it 1.3-1.5x slower and its timings spread
    twice as wide, at the same dev accuracy (docs/experiments.md)."""

    def __init__(self, model_dir, max_length=None, bf16: bool = False, threads: int | None = None):
        super().__init__(model_dir, max_length)
        try:
            import torch
        except ImportError:  # a serving-only install (distilkit[serve]) runs exported ONNX models only
            raise BackendError(f"the {'torch-bf16' if bf16 else 'torch'} backend needs torch, which is not installed: "
                               "`pip install 'distilkit[train]'`, or `distil export` the model and use --backend "
                               "onnx or onnx-int8") from None

        from ..models.loading import load_classifier, load_encoder, model_inputs

        check_model_dir(self.model_dir)
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = (load_encoder if self.embedding else load_classifier)(str(model_dir)).eval()
        if bf16:
            self.model = self.model.to(torch.bfloat16)
        self.accepted = model_inputs(self.model)
        self.bf16 = bf16
        self.name = "torch-bf16" if bf16 else "torch"

    def forward(self, inputs):
        torch = self.torch
        feed = {k: torch.from_numpy(v) for k, v in inputs.items() if k in self.accepted}
        with torch.inference_mode():
            out = self.model(**feed)
            if not self.embedding:
                return out.logits.float().numpy()
            emb = pool(out.last_hidden_state.float(), feed["attention_mask"], self.pooling.mode)
            if self.pooling.normalize:
                emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
            return emb.numpy()


class OrtBackend(Backend):
    """An exported ONNX model in ONNX Runtime (all graph optimisations, one thread per core)."""

    def __init__(self, model_dir, max_length=None, file: str | Path = ONNX_FP32, threads: int | None = None):
        super().__init__(model_dir, max_length)
        import onnxruntime as ort

        path = self.model_dir / file  # `file` may also be a full path (export checks a file before publishing it)
        if not path.exists():
            raise BackendError(f"{path} not found: run `distil export {model_dir}` first")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or num_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.name = "onnx-int8" if path.name == ONNX_INT8 else "onnx"

    def forward(self, inputs):
        ids = inputs["input_ids"]
        feed = {n: inputs[n] if n in inputs else np.zeros_like(ids) for n in self.input_names}
        out = self.session.run(None, feed)[0]
        if not self.embedding:
            return out
        return pool_numpy(out, inputs.get("attention_mask", np.ones_like(ids)), self.pooling)


class OpenVinoBackend(Backend):
    """An OpenVINO IR on the CPU (latency hint, one thread per core). `bf16` sets the bf16 inference precision
    hint; otherwise the hint is f32, because on CPUs with AVX-512 BF16 or AMX OpenVINO's default is bf16, which is
    not what the fp32 file was checked as.

    Token ids are padded to a multiple of 16 tokens: OpenVINO prepares its kernels for each new input shape, which
    cost 6-17 ms on the first call of a shape against 1-3 ms after (int8 SST-2 student, batch 1-8, docs/experiments.md),
    so serving texts of every length one shape each paid that again and again.

    A packed IR (export writes one for models that run packed, see deploy/packing.py) gets each call's
    texts packed into rows: `forward` takes the usual padded inputs and runs them as packed calls."""

    length_multiple = 16

    def __init__(self, model_dir, max_length=None, file: str | Path = OV_FP32, bf16: bool = False,
                 threads: int | None = None):
        super().__init__(model_dir, max_length)
        ov = import_openvino()
        path = self.model_dir / file  # `file` may also be a full path (export checks a file before publishing it)
        if not path.exists() or not path.with_suffix(".bin").exists():
            raise BackendError(f"{path} (with its .bin) not found: run `distil export {model_dir} --openvino` first")
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", {
            "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads or num_cores()})
        self.request = self.compiled.create_infer_request()
        self.ov = ov
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.packs = all(n in self.input_names for n in PACKED_INPUTS)
        self.bf16 = bf16
        self.name = ("openvino-int8" if path.name == OV_INT8 else "openvino") + ("-bf16" if bf16 else "")

    def warm_up(self, max_batch: int) -> int:
        """Padded IR: see Backend.warm_up. Packed IR: every call shape, 1 to MAX_ROWS rows (at most max_batch) times
        each length bucket up to max_length."""
        if not self.packs:
            return super().warm_up(max_batch)
        lengths = range(self.length_multiple, self.max_length + self.length_multiple, self.length_multiple)
        shapes = [(rows, min(n, self.max_length)) for n in lengths for rows in range(1, min(max_batch, MAX_ROWS) + 1)]
        for rows, length in shapes:
            ids = np.full((rows, length), self.tokenizer.pad_token_id or 0, dtype=np.int64)
            self.forward({"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
        return len(shapes)

    def infer(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The output of one call on `feed` (every input of the IR), as a view of the request's own output buffer:
        the next call overwrites it. Each input is set as a tensor sharing the array's memory and the request runs
        without arguments: `InferRequest.infer(dict)` converts its inputs and outputs in Python, which cost ~0.1 ms
        a call (3 x 256 int8 student, b1 s128: 1.23 against 1.13 ms)."""
        for i, name in enumerate(self.input_names):
            self.request.set_input_tensor(i, self.ov.Tensor(np.ascontiguousarray(feed[name]), shared_memory=True))
        self.request.infer()
        return self.request.get_output_tensor(0).data

    def forward(self, inputs):
        if self.packs:
            out = np.empty((len(inputs["input_ids"]), self.output_dim), dtype=np.float32)
            for idx, feed in packed_calls(inputs, self.tokenizer.pad_token_id or 0, self.length_multiple or 1):
                out[idx] = self.infer(feed)
            if self.embedding:  # pooled in the graph: each text as one token state, normalised as the pooling says
                return pool_numpy(out[:, None], np.ones((len(out), 1), np.int64), self.pooling)
            return out
        ids = inputs["input_ids"]
        feed = {n: inputs[n] if n in inputs else np.zeros_like(ids) for n in self.input_names}
        out = np.asarray(self.infer(feed), dtype=np.float32)
        if not self.embedding:
            return out.copy()
        return pool_numpy(out, inputs.get("attention_mask", np.ones_like(ids)), self.pooling)


def openvino_installed() -> bool:
    """openvino can be imported (a find_spec: nothing is imported)."""
    return importlib.util.find_spec("openvino") is not None


def import_openvino():
    """The openvino module, or a BackendError saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise BackendError("the OpenVINO backends need openvino, which is not installed: "
                           "`pip install 'distilkit[openvino]'`, or use --backend onnx or onnx-int8") from None
    return openvino


def available_backends(model_dir: str | Path) -> list[str]:
    """Backends the folder can run: torch ones when it has safetensors weights, an exported backend when its
    file is there (OpenVINO ones only when openvino is installed; the bf16 hint ones only on a CPU with bf16)."""
    model_dir = Path(model_dir)
    names = ["torch", "torch-bf16"] if any(model_dir.glob("*.safetensors")) else []
    ov = openvino_installed()
    for name, file in FILES.items():
        if not (model_dir / file).exists() or (name.startswith("openvino") and not ov):
            continue
        if name in BF16_HINTS and not cpu_bf16():
            continue
        names.append(name)
    return names


def fastest_recorded(model_dir: str | Path) -> str | None:
    """The backend export.json names as the fastest of the files its check passed (timed at export), or None."""
    path = Path(model_dir) / "export.json"
    if not path.exists():
        return None
    try:
        info = read_json(path)
    except (OSError, ValueError):
        return None
    return (info.get("timing") or {}).get("fastest") if isinstance(info, dict) else None


def auto_backend(model_dir: str | Path) -> str:
    """What `auto` loads: export.json's fastest checked backend when the folder has its file and this install can
    run it; else ONNX int8 > ONNX fp32 > torch."""
    found = available_backends(model_dir)
    fastest = fastest_recorded(model_dir)
    if fastest in found:
        return fastest
    return next((name for name in FALLBACK if name in found), "torch")


def load_backend(model_dir: str | Path, name: str = "auto", max_length: int | None = None,
                 threads: int | None = None) -> Backend:
    """A backend by name: one of BACKENDS, or auto (see auto_backend); `threads`: the runtime's compute threads
    (default one per core; fewer leave cores to other work, torch's setting is process-wide)."""
    check_backend(name)
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads}: expected a number >= 1")
    if name == "auto":
        name = auto_backend(model_dir)
    if name in ("torch", "torch-bf16"):
        return TorchBackend(model_dir, max_length, bf16=name == "torch-bf16", threads=threads)
    if name.startswith("openvino"):
        return OpenVinoBackend(model_dir, max_length, FILES[name], bf16=name in BF16_HINTS, threads=threads)
    return OrtBackend(model_dir, max_length, FILES[name], threads=threads)


def check_backend(name: str) -> None:
    """Refuse a backend name that is not auto or one of BACKENDS, before any model is loaded."""
    if name != "auto" and name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: expected auto, {', '.join(BACKENDS)}")


def predict_all(backend: Backend, texts: list[str], text_pairs: list[str] | None = None,
                batch_size: int = 32, on_batch=None) -> np.ndarray:
    """Logits (embeddings for an embedding model) for any number of texts, in input order (batches of
    similar length, to pad little; a packing backend takes them in input order: mixed lengths pack better, SST-2
    dev 3,100-3,230 against 2,770-2,890 texts/s sorted); `on_batch(indices, logits)`, if given, gets each batch
    as soon as it is done."""
    lengths = [len(t) + (len(text_pairs[i]) if text_pairs is not None else 0) for i, t in enumerate(texts)]
    order = np.arange(len(texts)) if backend.packs else np.argsort(lengths, kind="stable")
    logits = np.zeros((len(texts), backend.output_dim), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        idx = order[start : start + batch_size]
        pairs = [text_pairs[i] for i in idx] if text_pairs is not None else None
        logits[idx] = backend([texts[i] for i in idx], pairs)
        if on_batch is not None:
            on_batch(idx, logits[idx])
    return logits


def check_threshold(threshold: float | None, multi_label: bool) -> float:
    """The threshold of a multi-label model (None: DEFAULT_THRESHOLD): a probability in [0, 1]; refused for
    other models, which pick one label (or predict a number)."""
    if threshold is None:
        return DEFAULT_THRESHOLD
    if not multi_label:
        raise UserError(f"--threshold {threshold}: only multi-label models (tags) take a threshold; this model "
                        "picks the one most probable label")
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"--threshold {threshold}: expected a probability between 0 and 1")
    return float(threshold)


def results(logits: np.ndarray, id2label: dict[int, str], regression: bool = False, all_scores: bool = False,
            multi_label: bool = False, threshold: float = DEFAULT_THRESHOLD) -> list[dict]:
    """Per row: `label` and `score` (softmax probability of the label; the raw value for regression),
    with `all_scores` also `scores` ({label: probability}).

    Multi-label models: `labels`, every label whose probability (sigmoid) is above `threshold`, most probable
    first, and always `scores` ({label: probability}, in id order)."""
    if multi_label:
        out = []
        for p in sigmoid(logits):
            names = [id2label.get(j, str(j)) for j in range(len(p))]
            over = sorted((j for j in range(len(p)) if p[j] > threshold), key=lambda j: (-p[j], j))
            out.append({"labels": [names[j] for j in over], "scores": {n: float(v) for n, v in zip(names, p)}})
        return out
    if regression:
        return [{"label": None, "score": float(row[0])} for row in logits]
    z = logits - logits.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    out = []
    for p in probs:
        i = int(p.argmax())
        row = {"label": id2label.get(i, str(i)), "score": float(p[i])}
        if all_scores:
            row["scores"] = {id2label.get(j, str(j)): float(v) for j, v in enumerate(p)}
        out.append(row)
    return out
