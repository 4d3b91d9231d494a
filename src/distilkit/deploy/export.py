"""ONNX export of a sequence classifier or sentence-embedding folder, graph optimisation, int8, checked.

    torch (eager attention) --torch.onnx.export--> raw ONNX (dynamic batch and sequence axes)
      --onnxruntime.transformers optimizer--> model.onnx (fused Attention, SkipLayerNorm, Gelu), with the
        model type the family table names; a family ORT has no fusions for (DeBERTa, ModernBERT) gets ORT's
        generic graph optimisations only, and export.json says it was not fused
      --quantize_dynamic, per channel--> model.int8.onnx (int8 weights, activations quantised at run time)

With `openvino` (`distil export --openvino`; needs `pip install 'distilkit[openvino]'`), also:

    torch --packed_onnx--> packed ONNX (deploy/packing.py: several texts a row; written once torch shows it gives the
      padded outputs, else the raw ONNX graph is used)
      --openvino.convert_model--> model.ov.xml/.bin (OpenVINO IR, fp32 weights: OpenVINO does its own fusions)
      --nncf.quantize (static, transformer patterns), calibrated on the task's training texts--> model.int8.ov.xml/.bin

The int8 IR needs calibration texts: the training split of the checking data (its first CALIBRATION_SIZE rows);
when only dev data is given, part of the dev texts (every other one), which export.json says, because the check
then scores the file partly on the texts it was calibrated on. Without a check (no data) only the fp32 IR is written.

All files are written to temporary names, checked on a task's dev set against the torch model
(label agreement, metric drop) and only then renamed into place; `export.json` records the check.
A file whose metric drops more than `tolerance` points is not published and the export fails.

Embedding models (sentence-transformers folders) export their last hidden state (pooling and
normalisation run after the session, see backends.py) and are checked by the mean cosine of each
file's sentence embeddings to the torch fp32 ones (default: STS-B dev sentences, at least 0.99).

After a passing check the published files (and, on CPUs with bf16, the bf16 hint backends whose check passed) are
timed briefly on dev texts (median of a few calls of one text and of 32 texts each); export.json's `timing.fastest`
is the one with the least time per text at 32 texts (throughput: what `distil predict` and a loaded server need),
and `--backend auto` loads it. The timing is short and shares the machine with whatever else runs: `distil bench`
measures properly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from ..artifacts import write_json
from ..errors import UserError
from ..hardware import cpu_bf16, versions, version_of
from ..metrics import evaluate_task_predictions, predictions, task_score
from ..models.families import family_of
from ..models.folders import ModelError, check_model_dir, is_pair_model, load_tokenizer, supported_config
from ..models.loading import model_inputs
from ..models.pooling import is_embedding_model, pool, read_pooling
from ..tags import MULTI_LABEL
from .backends import (BF16_HINTS, EXPORTED_FILES, ONNX_FP32, ONNX_INT8, OV_FP32, OV_INT8, BackendError,
                       OpenVinoBackend, OrtBackend, TorchBackend, import_openvino, predict_all)
from .bench import time_blocks
from .packing import MAX_ROWS, PACKED_POOLING, ROW_TOKENS, packed_calls, packed_model

OPSET = 17
CALIBRATION_SIZE = 300  # texts NNCF calibrates the int8 IR on (its default subset size)


class ExportCheckError(UserError):
    """An exported model whose dev metric dropped more than the tolerance."""


def load_eager(model_dir: str | Path, embedding: bool = False):
    """The classifier (the bare encoder for an embedding model) with eager attention: its exported graph
    is the one ORT's fusions recognise."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    check_model_dir(Path(model_dir))
    cls = AutoModel if embedding else AutoModelForSequenceClassification
    return cls.from_pretrained(model_dir, use_safetensors=True, trust_remote_code=False,
                               attn_implementation="eager").eval()


def torch_to_onnx(model, tokenizer, path: Path, opset: int = OPSET, embedding: bool = False) -> list[str]:
    """Trace `model` to ONNX with dynamic batch and sequence axes; returns the input names.
    The output is `logits`, or `last_hidden_state` (batch, sequence, hidden) for an embedding model."""
    import torch

    names = [n for n in tokenizer.model_input_names if n in model_inputs(model)]
    output = "last_hidden_state" if embedding else "logits"

    class Output(torch.nn.Module):  # positional inputs in, logits (or token states) out
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return getattr(self.model(**dict(zip(names, args))), output)

    sample = tokenizer(["a b", "a b c d e"], padding=True, return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {
        output: {0: "batch", 1: "sequence"} if embedding else {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer warnings
        torch.onnx.export(Output().eval(), tuple(sample[n] for n in names), str(path), input_names=names,
                          output_names=[output], dynamic_axes=axes, opset_version=opset, dynamo=False)
    return names


PACKING_CHECK = (["a good film", "the plot was dull and the actors were not much better", "fine", "not at all what "
                  "i hoped for, and far too long", "yes", "an odd, sad and very funny story about two brothers"],
                 ["it was fine", "bad", "a long answer that goes on and on for a while", "no", "maybe so", "ok"])


def packed_onnx(model, tokenizer, path: Path, opset: int = OPSET, pooling: str | None = None) -> dict:
    """The model as a packed graph (deploy/packing.py) at `path`, once torch shows that packed calls give the padded
    outputs on a few texts, several to a row: a classifier's logits, or an embedding model's token states pooled by
    `pooling`. Returns what export.json records: the graph's inputs and the largest difference, or {"skipped": why}
    (the family's model cannot run packed; OpenVINO then gets the padded graph)."""
    import torch

    if pooling is not None and pooling not in PACKED_POOLING:
        return {"skipped": f"{pooling} pooling is not computed packed"}
    names = ["input_ids", "position_ids", "text_index", "first_token"]
    if "token_type_ids" in tokenizer.model_input_names and "token_type_ids" in model_inputs(model):
        names.append("token_type_ids")
    texts, pairs = PACKING_CHECK  # as pairs, so token type ids are checked too (an embedding model: single texts)
    enc = {k: v.astype(np.int64) for k, v in tokenizer(texts, None if pooling else pairs, padding=True,
                                                         return_tensors="np").items()}
    feed = {k: torch.from_numpy(v) for k, v in enc.items() if k in model_inputs(model)}
    with torch.no_grad():
        out = model(**feed)
        ref = (out.logits if pooling is None else pool(out.last_hidden_state, feed["attention_mask"], pooling)).numpy()
    calls = packed_calls(enc, tokenizer.pad_token_id or 0, row_tokens=48, max_rows=2)
    packed = packed_model(model, names, pooling)
    try:
        with torch.no_grad():
            got = np.zeros_like(ref)
            for idx, call in calls:
                got[idx] = packed(*(torch.from_numpy(call[n]) for n in names)).numpy()
    except Exception as e:  # noqa: BLE001 - any failure means: keep the padded graph
        return {"skipped": f"{type(model).__name__} does not run packed ({type(e).__name__}: {e})"}
    diff = float(np.abs(ref - got).max())
    if diff > 1e-4:
        return {"skipped": f"{type(model).__name__}'s packed outputs differ from the padded ones by {diff:.2g}"}
    output = "logits" if pooling is None else "embeddings"
    axes = {n: {0: "texts"} if n == "first_token" else {0: "rows", 1: "tokens"} for n in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript-exporter deprecation and tracer warnings
        torch.onnx.export(packed, tuple(torch.from_numpy(calls[0][1][n]) for n in names), str(path),
                          input_names=names, output_names=[output], dynamic_axes=axes | {output: {0: "texts"}},
                          opset_version=opset, dynamo=False)
    return {"inputs": names, "output": output, "pooling": pooling, "row_tokens": ROW_TOKENS, "max_rows": MAX_ROWS,
            "max_abs_diff": diff}


def optimize(raw: Path, config, path: Path) -> dict:
    """ORT's transformer optimizer with the model type of the config's family; a family without one gets
    ORT's generic (basic, hardware-independent) graph optimisations. Returns what export.json records:
    the model type, whether anything was fused, and the fused operators."""
    model_type = family_of(config).ort_model_type
    if model_type is None:
        generic_optimize(raw, path)
        return {"ort_model_type": None, "fused": False, "fused_operators": {},
                "note": f"ONNX Runtime has no transformer fusions for {config.model_type}: generic graph "
                        "optimisations only"}
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(str(raw), model_type=model_type, num_heads=config.num_attention_heads,
                         hidden_size=config.hidden_size)
    opt.save_model_to_file(str(path))
    fused = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
    return {"ort_model_type": model_type, "fused": bool(fused), "fused_operators": fused}


def generic_optimize(raw: Path, path: Path) -> None:
    """ORT's basic graph optimisations (constant folding, redundant nodes), saved to `path`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])


def quantize_int8(fp32: Path, path: Path) -> None:
    """Dynamic int8 quantisation with one scale per output channel (per tensor loses too much)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns about pre-processing meant for static (image) models
    try:
        quantize_dynamic(str(fp32), str(path), per_channel=True, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # needed on fused graphs
    finally:
        root.setLevel(level)


def import_nncf():
    """The nncf module, or a BackendError saying how to install it."""
    try:
        import nncf
    except ImportError:
        raise BackendError("the OpenVINO int8 export needs nncf, which is not installed: "
                           "`pip install 'distilkit[openvino]'`, or export with --no-int8") from None
    return nncf


def onnx_to_openvino(onnx_path: Path, xml_path: Path) -> None:
    """An ONNX file to an OpenVINO IR (xml + bin) with fp32 weights (save_model would halve them to fp16)."""
    ov = import_openvino()
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)


def quantize_openvino(xml_fp32: Path, xml_int8: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """Static int8 quantisation of an IR by NNCF (weights and activations; transformer patterns, so the
    attention softmax, LayerNorm and the like stay fp32), calibrated on `calibration`: one model input each.
    The PERFORMANCE preset quantises activations symmetrically (NNCF's transformer default, MIXED, does so
    asymmetrically): b32 s128 733-741 against 686 seq/s on the SST-2 student, dev score 85.21 against 85.55
    (torch 85.09), measured in docs/experiments.md."""
    ov, nncf = import_openvino(), import_nncf()
    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(str(xml_fp32))
    names = [i.get_any_name() for i in model.inputs]

    def feed(item):
        return {n: item[n] if n in item else np.zeros_like(item["input_ids"]) for n in names}

    quantized = nncf.quantize(model, nncf.Dataset(calibration, feed), model_type=nncf.ModelType.TRANSFORMER,
                              preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(calibration))
    ov.save_model(quantized, str(xml_int8), compress_to_fp16=False)


def calibration_texts(data, size: int = CALIBRATION_SIZE, source: str | None = None) -> tuple[list, list | None, dict]:
    """Texts (and pairs) the int8 IR is calibrated on, and what export.json says about them: the first `size`
    training rows of a TaskData; when it has none, and for an embedding model's sentences (a list, dev data),
    every other dev text up to `size`, recorded as overlapping the check."""
    if isinstance(data, (list, tuple)):
        texts = list(data)[::2][:size]
        return texts, None, {"split": "check sentences", "source": source, "examples": len(texts),
                             "of": len(data), "overlaps_check": True,
                             "note": "no training texts for an embedding export: calibrated on every other sentence "
                                     "the check scores, so the check of the int8 IR is somewhat optimistic"}
    if len(data.train):
        rows = data.train.select(range(min(size, len(data.train))))
        return (list(rows["text"]), list(rows["text_pair"]) if data.is_pair else None,
                {"split": "train", "examples": len(rows), "data": data.source, "overlaps_check": False})
    texts, pairs, total = [], [], 0
    for ds in data.dev.values():
        texts += list(ds["text"])
        pairs += list(ds["text_pair"]) if data.is_pair else []
        total += len(ds)
    return (texts[::2][:size], pairs[::2][:size] if data.is_pair else None,
            {"split": "dev", "examples": len(texts[::2][:size]), "of": total, "data": data.source,
             "overlaps_check": True, "note": "no training texts were given: calibrated on every other dev text, which "
                                             "the check also scores, so the check of the int8 IR is somewhat optimistic"})


TIMING_BATCH = 32  # texts per call when export times the files: `distil predict`'s batch, and a loaded server's


def time_backends(backends: dict, texts: list[str], pairs: list[str] | None = None, calls: int = 5,
                  warmup: int = 2, rounds: int = 2, idle_s: float = 0.1) -> dict:
    """A short timing of each backend's forward on dev texts: median ms of calls of one text and of up to
    TIMING_BATCH texts in their order (blocks of `warmup` + `calls` per backend, `rounds` rounds taking turns, a pause
    before each block). `ms_per_text`, the batch time per text, ranks them: `auto` serves files and loaded servers,
    where throughput counts (the SST-2 student: ORT int8 is faster on one text, 0.47 against 0.93 ms, but OpenVINO
    int8 served 2,000 against 1,030 texts/s under 32 clients). Returns {"results", "fastest", "method"}."""
    batch = min(TIMING_BATCH, len(texts))
    scenarios = {"batch1_ms": 1, "batch_ms": batch}
    inputs = {key: (texts[:n], pairs[:n] if pairs is not None else None) for key, n in scenarios.items()}
    times = {name: {key: [] for key in scenarios} for name in backends}
    names = list(backends)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            backend = backends[name]
            for key, (t, p) in inputs.items():
                enc = backend.encode(t, p)
                time.sleep(idle_s)
                block = time_blocks(lambda: backend.forward(enc), calls, warmup)  # noqa: B023 - called right here
                times[name][key] += [seconds * 1e3 for seconds in block]
    results = {}
    for name, t in times.items():
        row = {key: float(np.median(v)) for key, v in t.items()}
        row["ms_per_text"] = row["batch_ms"] / batch
        results[name] = row
    return {"results": results, "fastest": min(results, key=lambda n: results[n]["ms_per_text"]),
            "method": {"calls": calls, "warmup": warmup, "rounds": rounds, "batch": batch,
                       "rank": f"ms_per_text = median ms of a call of {batch} dev texts / {batch}",
                       "note": "a short timing at export time to choose `auto`; `distil bench` times properly"}}


def open_candidate(name: str, folder: Path, max_length: int, path: Path):
    """The backend that runs exported file `path` as backend `name` (folder: its config and tokenizer)."""
    if name.startswith("openvino"):
        return OpenVinoBackend(folder, max_length, path, bf16=name in BF16_HINTS)
    return OrtBackend(folder, max_length, path)


def check_backends(reference, candidates: dict, data, batch_size: int = 32) -> dict:
    """Each candidate backend against the reference on `data`'s dev split(s): metrics, score,
    drop in points, label agreement and the largest logit difference.

    Multi-label tasks (`data.multi_label`): the metrics are the multi-label ones at the default threshold, and
    label agreement is the share of rows whose set of labels over the threshold is the reference's."""
    multi_label = getattr(data, "multi_label", False)
    splits = {name: (list(ds["text"]), list(ds["text_pair"]) if data.is_pair else None, np.asarray(ds["label"]))
              for name, ds in data.dev.items()}

    def run(backend):
        return {name: predict_all(backend, texts, pairs, batch_size) for name, (texts, pairs, _) in splits.items()}

    def predicted(logits):
        return predictions(logits, data.regression, multi_label)

    def scored(logits):
        metrics = evaluate_task_predictions(
            data, {name: (predicted(lg), splits[name][2]) for name, lg in logits.items()})
        return {**metrics, "score": task_score(metrics)}

    ref_logits = run(reference)
    ref = scored(ref_logits)
    out = {reference.name: ref}
    for name, backend in candidates.items():
        logits = run(backend)
        got = scored(logits)
        ref_all, all_ = (np.concatenate(list(d.values())) for d in (ref_logits, logits))
        if data.regression:
            agree = None
        elif multi_label:  # the whole set of labels over the threshold must match
            agree = float((predicted(ref_all) == predicted(all_)).all(-1).mean())
        else:
            agree = float((ref_all.argmax(-1) == all_.argmax(-1)).mean())
        out[name] = {**got, "score_drop_points": (ref["score"] - got["score"]) * 100, "label_agreement": agree,
                     "max_abs_logit_diff": float(np.abs(ref_all - all_).max())}
    return out


def check_embedding_backends(reference, candidates: dict, sentences: list[str], batch_size: int = 32) -> dict:
    """Each candidate backend's sentence embeddings against the reference's: mean, minimum and 1st-percentile
    cosine, largest absolute difference."""
    ref = predict_all(reference, sentences, None, batch_size)
    out = {reference.name: {"mean_cosine": 1.0}}
    for name, backend in candidates.items():
        got = predict_all(backend, sentences, None, batch_size)
        cos = (ref * got).sum(-1) / np.maximum(np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1), 1e-12)
        out[name] = {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
                     "p01_cosine": float(np.percentile(cos, 1)), "max_abs_diff": float(np.abs(ref - got).max())}
    return out


SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                               "1_Pooling", "2_Normalize")


def export_onnx(model_dir: str | Path, out: str | Path | None = None, quantize: bool = True, data=None,
                tolerance: float = 1.0, max_length: int | None = None, opset: int = OPSET,
                min_cosine: float = 0.99, sentences_source: str | None = None, openvino: bool = False) -> dict:
    """Export MODEL_DIR to OUT/model.onnx (+ model.int8.onnx; with `openvino` also model.ov.xml/.bin and, when
    there is data to calibrate on, model.int8.ov.xml/.bin); OUT defaults to MODEL_DIR.

    With `data` (a TaskData), each file is checked against the torch model on the dev set before it
    is published; a metric drop above `tolerance` points raises ExportCheckError (after writing
    export.json). For an embedding model `data` is a list of sentences and a file fails when the mean
    cosine of its embeddings to the torch fp32 ones is below `min_cosine`. A passing check is followed by a
    short timing of the published files; export.json records the fastest, which `--backend auto` loads.
    Returns export.json's content.
    """
    start = time.perf_counter()
    model_dir, out = Path(model_dir), Path(out or model_dir)
    check_model_dir(model_dir)
    supported_config(model_dir)  # an unsupported family is refused by name before the model is loaded
    embedding = is_embedding_model(model_dir)
    if embedding and data is not None and not isinstance(data, (list, tuple)):
        raise ModelError(f"{model_dir} is an embedding model: check it on a list of sentences, not a task")
    if openvino:  # before any work: say what to install
        import_openvino()
        if quantize and data is not None:
            import_nncf()
    model, tokenizer = load_eager(model_dir, embedding), load_tokenizer(str(model_dir))
    if not embedding and data is not None and model.config.num_labels != data.num_labels:
        raise ModelError(f"{model_dir} has {model.config.num_labels} outputs; task {data.name} needs {data.num_labels}")
    if not embedding and data is not None and (model.config.problem_type == MULTI_LABEL) != getattr(data, "multi_label",
                                                                                                  False):
        raise ModelError(f"{model_dir} is {'a' if model.config.problem_type == MULTI_LABEL else 'not a'} multi-label "
                         f"model, task {data.name} is {'' if getattr(data, 'multi_label', False) else 'not '}multi-label")
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != model_dir.resolve():  # the ONNX folder runs on its own: config, tokenizer, distil.json
        model.config.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if (model_dir / "distil.json").exists():
            shutil.copy(model_dir / "distil.json", out / "distil.json")
        for name in SENTENCE_TRANSFORMERS_FILES if embedding else ():  # the pooling travels with the ONNX files
            src = model_dir / name
            if src.is_dir():
                shutil.copytree(src, out / name, dirs_exist_ok=True)
            elif src.exists():
                shutil.copy(src, out / name)
    info = {"model": str(model_dir), "opset": opset, "kind": "embedding" if embedding else "classifier",
            "is_pair": False if embedding else data.is_pair if data is not None else is_pair_model(model_dir),
            "quantization": {"method": "dynamic", "per_channel": True, "weights": "int8", "activations": "uint8"}
            if quantize else None}
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        tmp = Path(tmp).resolve()
        info["inputs"] = torch_to_onnx(model, tokenizer, tmp / "raw.onnx", opset, embedding)
        pooling = read_pooling(model_dir)[0].mode if embedding else None
        packing = packed_onnx(model, tokenizer, tmp / "packed.onnx", opset, pooling) if openvino else None
        optimizer = optimize(tmp / "raw.onnx", model.config, tmp / ONNX_FP32)
        info["fused_operators"] = optimizer.pop("fused_operators")
        info["optimizer"] = optimizer
        del model
        files = {"onnx": tmp / ONNX_FP32}
        if quantize:
            quantize_int8(tmp / ONNX_FP32, tmp / ONNX_INT8)
            files["onnx-int8"] = tmp / ONNX_INT8
        reference = TorchBackend(model_dir, max_length) if data is not None else None
        if openvino:
            info["openvino"] = export_openvino(tmp, files, tokenizer, data, quantize, sentences_source,
                                               reference.max_length if reference else max_length or 128, packing)
        failed, passed_hints = [], []
        candidates = {}
        if data is not None:
            max_len = reference.max_length
            candidates = {name: open_candidate(name, out, max_len, path) for name, path in files.items()}
            for hint, base in BF16_HINTS.items():  # an IR under the bf16 hint: checked, not a file of its own
                if base in files and cpu_bf16():
                    candidates[hint] = open_candidate(hint, out, max_len, files[base])
        if data is not None and embedding:
            check = check_embedding_backends(reference, candidates, list(data))
            bad = [n for n in candidates if check[n]["mean_cosine"] < min_cosine]
            info["check"] = {"sentences": len(data), "source": sentences_source, "max_length": max_len,
                             "min_mean_cosine": min_cosine, "results": check}
        elif data is not None:
            check = check_backends(reference, candidates, data)
            bad = [n for n in candidates if check[n]["score_drop_points"] > tolerance]
            info["check"] = {"task": data.name, "data": data.source, "max_length": max_len,
                             "dev_examples": sum(len(ds) for ds in data.dev.values()), "tolerance_points": tolerance,
                             "results": check}
        if data is not None:
            failed = [n for n in files if n in bad]
            passed_hints = [n for n in candidates if n not in files and n not in bad]
            for hint in BF16_HINTS.keys() & candidates.keys():
                info["check"][hint.replace("-", "_")] = ("passed: auto may pick it" if hint in passed_hints
                                                         else "failed: auto never picks it")
            if not failed:  # time what is published, so `auto` can load the fastest
                texts, pairs = timing_texts(data)
                info["timing"] = time_backends({n: candidates[n] for n in [*files, *passed_hints]}, texts, pairs)
        del candidates
        published = [path for name, path in files.items() if name not in failed]
        info["files"] = {}
        for path in published:
            for part in (path, path.with_suffix(".bin")) if path.suffix == ".xml" else (path,):
                info["files"][part.name] = part.stat().st_size
                os.replace(part, out / part.name)
        for stale in set(EXPORTED_FILES) - set(info["files"]):
            (out / stale).unlink(missing_ok=True)  # `auto` must never pick a stale or failing file
    info.update(checked=data is not None, passed=not failed, failed=failed, seconds=round(time.perf_counter() - start, 1), versions=versions())
    write_json(out / "export.json", info)
    if failed and embedding:
        results = info["check"]["results"]
        detail = "; ".join(f"{files[n].name} has mean cosine {results[n]['mean_cosine']:.4f} to the torch fp32 "
                           "embeddings" for n in failed)
        raise ExportCheckError(f"export check failed: {detail} (below --min-cosine {min_cosine}), so "
                               f"{' and '.join(files[n].name for n in failed)} not written (see {out / 'export.json'}). "
                               "Try --no-int8.")
    if failed:
        results = info["check"]["results"]
        names = [files[n].name for n in failed]
        detail = "; ".join(f"{name} drops the {data.name} dev score by {results[n]['score_drop_points']:.2f} points"
                           for n, name in zip(failed, names))
        raise ExportCheckError(f"export check failed: {detail} (tolerance {tolerance} points), so {' and '.join(names)} "
                               f"not written (see {out / 'export.json'}). Try --no-int8 or a larger --tolerance.")
    return info


def export_openvino(tmp: Path, files: dict, tokenizer, data, quantize: bool, sentences_source: str | None,
                    max_length: int, packing: dict | None = None) -> dict:
    """The OpenVINO IR files in `tmp` (added to `files`): fp32 from the raw ONNX graph (the packed one when
    `packing` says it was written), int8 by NNCF when `quantize` and there is `data` to calibrate on. Returns what
    export.json records about them."""
    packed = packing is not None and "skipped" not in packing
    onnx_to_openvino(tmp / ("packed.onnx" if packed else "raw.onnx"), tmp / OV_FP32)
    files["openvino"] = tmp / OV_FP32
    info = {"version": version_of("openvino"), "source": "the torch.onnx.export graph (before ORT's fusions)",
            "weights": "fp32", "packed": packing, "int8": None}
    if not quantize:
        return info
    if data is None:
        info["int8"] = {"skipped": "no data to calibrate on: export with the check on to get model.int8.ov.xml"}
        return info
    texts, pairs, about = calibration_texts(data, CALIBRATION_SIZE, sentences_source)
    calibration = [{k: v.astype(np.int64) for k, v in tokenizer(
        [t], [pairs[i]] if pairs is not None else None, truncation=True, max_length=max_length,
        return_tensors="np").items()} for i, t in enumerate(texts)]
    if packed:  # one text a call, as before: the statistics of each token do not depend on packing
        calibration = [packed_calls(enc, tokenizer.pad_token_id or 0)[0][1] for enc in calibration]
    quantize_openvino(tmp / OV_FP32, tmp / OV_INT8, calibration)
    files["openvino-int8"] = tmp / OV_INT8
    info["int8"] = {"method": "nncf.quantize (static: int8 weights and activations)", "model_type": "transformer",
                    "preset": "performance (symmetric activations)",
                    "nncf": version_of("nncf"), "calibration": about}
    return info


def timing_texts(data) -> tuple[list[str], list[str] | None]:
    """Dev texts (and pairs) the export times the files on: the first TIMING_BATCH of the checking data."""
    if isinstance(data, (list, tuple)):
        return list(data)[:TIMING_BATCH], None
    ds = next(iter(data.dev.values()))
    rows = ds.select(range(min(TIMING_BATCH, len(ds))))
    return list(rows["text"]), list(rows["text_pair"]) if data.is_pair else None
