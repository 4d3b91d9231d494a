"""`distil bench`: size, latency and throughput of teacher and student on every backend, in one run.

What is timed: the model forward alone (`Backend.forward` on ready token ids: numpy in, logits out;
for an embedding model, embeddings out, pooling and normalisation included);
tokenising is not included. Inputs are fixed synthetic token ids, exactly `seq` tokens long
([CLS], seq-2 random non-special ids, [SEP]; seeded), all attended, token type 0: no padding, so
every row costs the same. Backends and models are timed round-robin within each repeat (the start
rotates), so machine drift hits all of them alike. Each figure is set against the floor: analytic FLOPs
per forward over the machine's measured matmul peak for the precision the backend computes in.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..artifacts import save_figure, write_json, write_text
from ..errors import UserError
from ..hardware import bf16_supported, busy_cores, hardware, keep_freed_memory, num_cores
from ..models.loading import count_parameters, load_classifier, load_encoder, model_shape
from ..models.pooling import is_embedding_model
from .backends import EXPORTED_FILES, available_backends, load_backend

PRECISION = {"torch": "fp32", "torch-bf16": "bf16", "onnx": "fp32", "onnx-int8": "int8", "openvino": "fp32",
             "openvino-bf16": "bf16", "openvino-int8": "int8"}
LABELS = {"torch": "torch fp32", "torch-bf16": "torch bf16", "onnx": "ORT fp32", "onnx-int8": "ORT int8",
          "openvino": "OpenVINO fp32", "openvino-bf16": "OpenVINO bf16 hint", "openvino-int8": "OpenVINO int8 (NNCF)"}


def synthetic_inputs(tokenizer, config, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed token ids of exactly `seq` tokens: [CLS] random ids [SEP], no padding."""
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    pool = np.array([i for i in range(config.vocab_size) if i not in special])
    ids = rng.choice(pool, size=(batch, seq))
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    ones = np.ones((batch, seq), dtype=np.int64)
    return {"input_ids": ids.astype(np.int64), "attention_mask": ones, "token_type_ids": 0 * ones}


def forward_flops(config, batch: int, seq: int, head: bool = True) -> float:
    """FLOPs of one forward: 2 x (matmul weights) x tokens per layer, attention scores and context
    (2 x 2·seq²·hidden per sequence and layer), the pooler/pre-classifier and classifier on [CLS].
    Embedding lookups, softmax, LayerNorm and GELU are left out (they are not matmuls); an embedding
    model (`head` False) has no pooler or classifier."""
    h, layers = config.hidden_size, config.num_hidden_layers
    inner = getattr(config, "intermediate_size", None) or config.hidden_dim  # BERT | DistilBERT
    per_token = 4 * h * h + 2 * h * inner
    attention = 2 * 2 * seq * seq * h
    head = h * h + h * config.num_labels if head else 0
    return float(layers * (2 * per_token * batch * seq + attention * batch) + 2 * head * batch)


def _best_gflops(fn, flops: float, repeats: int) -> float:
    return flops / min(time_blocks(fn, repeats, warmup=1)) / 1e9  # warm-up: pre-packing, threads up to speed


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _ort_matmul(n: int, int8: bool, threads: int | None = None):
    """An ONNX Runtime session of one n x n MatMul (fp32) or MatMulInteger (uint8 x int8), weights constant."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if int8:
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = rng.integers(-127, 127, (n, n), dtype=np.int8)
        node, a_type, y_type = helper.make_node("MatMulInteger", ["A", "B"], ["Y"]), TensorProto.UINT8, TensorProto.INT32
    else:
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        node, a_type, y_type = helper.make_node("MatMul", ["A", "B"], ["Y"]), TensorProto.FLOAT, TensorProto.FLOAT
    graph = helper.make_graph([node], "mm", [helper.make_tensor_value_info("A", a_type, [n, n])],
                              [helper.make_tensor_value_info("Y", y_type, [n, n])],
                              initializer=[numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or num_cores()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"A": a})


def matmul_peaks(n: int = 1024, repeats: int = 5, threads: int | None = None) -> dict[str, float | None]:
    """GFLOP/s of the best of `repeats` square n x n matmuls, per runtime and precision (on `threads` threads,
    default one per core; torch's setting is the process's)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a.bfloat16(), b.bfloat16()
    a8, b8 = torch.randint(-127, 127, (n, n), dtype=torch.int8), torch.randint(-127, 127, (n, n), dtype=torch.int8)
    flops = 2.0 * n**3
    peaks = {
        "fp32_ort": _best_gflops(_ort_matmul(n, int8=False, threads=threads), flops, repeats),
        "fp32_torch": _best_gflops(lambda: a @ b, flops, repeats),
        "bf16_torch": _best_gflops(lambda: a16 @ b16, flops, repeats),
        "int8_ort": _best_gflops(_ort_matmul(n, int8=True, threads=threads), flops, repeats),
    }
    try:
        peaks["int8_torch"] = _best_gflops(lambda: torch._int_mm(a8, b8), flops, repeats)
    except RuntimeError:  # no int8 matmul kernel for this CPU / build
        peaks["int8_torch"] = None
    best = {p: max(v for k, v in peaks.items() if k.startswith(p) and v) for p in ("fp32", "bf16", "int8")}
    return {"size": n, "repeats": repeats, "gflops": peaks, "best_gflops": best}


def model_facts(model_dir: Path, backends: dict) -> dict:
    """Parameters and file sizes (bytes) of a model folder (an export-only folder: parameters from its config)."""
    embedding = is_embedding_model(model_dir)
    if "torch" in backends:
        torch_model = backends["torch"].model
    elif any(model_dir.glob("*.safetensors")):
        torch_model = (load_encoder if embedding else load_classifier)(str(model_dir))
    else:
        torch_model = model_shape(model_dir, embedding)
    files = {p.name: p.stat().st_size for p in sorted(model_dir.glob("*.safetensors"))}
    files.update({f: (model_dir / f).stat().st_size for f in EXPORTED_FILES if (model_dir / f).exists()})
    return {"path": str(model_dir), "model_type": torch_model.config.model_type,
            "kind": "embedding" if is_embedding_model(model_dir) else "classifier",
            "layers": torch_model.config.num_hidden_layers, "width": torch_model.config.hidden_size,
            "parameters": count_parameters(torch_model), "files": files}


def scenarios(seqs: list[int], batch: int) -> list[dict]:
    """Latency at batch 1 for each length, throughput at `batch` for the longest."""
    return [{"name": f"latency b1 s{s}", "batch": 1, "seq": s, "kind": "latency"} for s in seqs] + [
        {"name": f"throughput b{batch} s{max(seqs)}", "batch": batch, "seq": max(seqs), "kind": "throughput"}]


def time_blocks(call, repeats: int, warmup: int, warmup_s: float = 0.1) -> list[float]:
    """One block of `call` alone: untimed calls (at least `warmup`, and for at least `warmup_s` seconds), then
    `repeats` timed ones (seconds each). The warm-up is also timed by the clock because after the pause between
    blocks 3 calls of a short forward did not bring the runtime back to speed (b1 s32: 10-30% slower than the same
    backend timed alone; with 0.1 s of warm-up within 10%, docs/experiments.md)."""
    block = []
    end, calls = time.perf_counter() + warmup_s, 0
    while calls < warmup or time.perf_counter() < end:
        call()
        calls += 1
    for _ in range(repeats):
        block.append(_seconds(call))
    return block


def run_bench(models: dict[str, str | Path], seqs: list[int] = (32, 128), batch: int = 32, repeats: int = 10,
              warmup: int = 3, backends: list[str] | None = None, peak_size: int = 1024, rounds: int = 5,
              idle_s: float = 0.2, threads: int | None = None) -> dict:
    """Time every (model, backend) on every scenario; returns bench.json's content.

    Each (model, backend) is timed in blocks: `warmup` untimed calls, then `repeats` timed calls, alone. Blocks
    take turns (`rounds` blocks each, the start rotating each round) so drift of the machine hits all alike, and
    between blocks the process sleeps `idle_s` so the previous runtime's spinning worker threads go idle: timed
    call by call in turn, one runtime's spinning threads slowed the next (3x on batch-1 figures).
    `threads`: every runtime's compute threads (default one per core)."""
    malloc = keep_freed_memory()  # else a backend's speed depends on what ran before it in this process
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # other work on the cores, before ours
    busy = busy_cores()  # the same, now (the load average trails the last minutes)
    wanted = backends or list(PRECISION)  # the OpenVINO ones when the folder has their files and openvino is installed
    if backends is None and not bf16_supported():
        wanted.remove("torch-bf16")  # emulated bf16 is slow and says nothing (openvino-bf16: available_backends)
    if threads:
        import torch

        torch.set_num_threads(threads)  # the matmul peaks' too
    peaks = matmul_peaks(peak_size, threads=threads)  # before any model is loaded: with all loaded, they came out halved
    loaded = {m: {b: load_backend(d, b, threads=threads) for b in wanted if b in available_backends(d)}
              for m, d in models.items()}
    combos = [(m, b) for m in loaded for b in loaded[m]]
    for m, b in combos:
        if max(seqs) > loaded[m][b].config.max_position_embeddings:
            raise UserError(f"--seq {max(seqs)} is longer than {m}'s position table "
                            f"({loaded[m][b].config.max_position_embeddings} tokens)")
    reference = next(((m, "torch") for m in ("teacher", *models) if "torch" in loaded.get(m, {})), combos[0])
    rows = []
    for sc in scenarios(list(seqs), batch):
        inputs = {m: synthetic_inputs(next(iter(bs.values())).tokenizer, next(iter(bs.values())).config,
                                      sc["batch"], sc["seq"]) for m, bs in loaded.items()}
        blocks = {c: [] for c in combos}
        for r in range(rounds):
            for m, b in combos[r % len(combos):] + combos[: r % len(combos)]:
                time.sleep(idle_s)
                blocks[(m, b)].append(time_blocks(lambda: loaded[m][b].forward(inputs[m]), repeats, warmup))
        ref_median = float(np.median([np.median(block) for block in blocks[reference]]))
        for m, b in combos:
            medians = np.array([np.median(block) for block in blocks[(m, b)]])
            t = np.concatenate(blocks[(m, b)])
            median = float(np.median(medians))
            flops = forward_flops(loaded[m][b].config, sc["batch"], sc["seq"], head=not loaded[m][b].embedding)
            peak = peaks["best_gflops"][PRECISION[b]]
            rows.append({**sc, "model": m, "backend": b, "precision": PRECISION[b], "median_ms": median * 1e3,
                         "block_medians_ms": [float(x) * 1e3 for x in medians],
                         "spread_pct": float((medians.max() - medians.min()) / median * 100),
                         "p90_ms": float(np.percentile(t, 90)) * 1e3, "mean_ms": float(t.mean()) * 1e3,
                         "sequences_per_s": sc["batch"] / median, "speedup": ref_median / median,
                         "gflop_per_forward": flops / 1e9, "gflops": flops / median / 1e9,
                         "floor_ms": flops / peak / 1e6, "percent_of_peak": 100 * flops / median / 1e9 / peak})
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "hardware": {**hardware(threads), "load_average_at_start": load, "load_average_at_end": end_load,
                     "busy_cores_at_start": busy, "malloc": malloc},
        "timed": "model forward only (token ids in, logits out; a packed OpenVINO model packs them in the call); "
                 "tokenisation excluded",
        "inputs": "synthetic token ids of exactly `seq` tokens ([CLS] random ids [SEP], seed 0), no padding",
        "method": {"rounds": rounds, "repeats_per_block": repeats, "warmup_per_block": warmup, "idle_s": idle_s,
                   "median": "median of the block medians", "spread": "(max - min) of the block medians / median"},
        "repeats": repeats, "warmup": warmup, "reference": {"model": reference[0], "backend": reference[1]},
        "models": {m: model_facts(Path(models[m]), loaded[m]) for m in loaded},
        "matmul_peak": peaks, "results": rows,
    }


def plot(bench: dict, path: Path) -> Path:
    """One panel per scenario: latency (ms, lower is better) or throughput (seq/s), with speedup labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["name"] for r in bench["results"]))
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.4), squeeze=False)
    colors = {"teacher": "#555", "student": "#2a7"}
    for ax, name in zip(axes[0], names):
        rows = [r for r in bench["results"] if r["name"] == name]
        throughput = rows[0]["kind"] == "throughput"
        values = [r["sequences_per_s"] if throughput else r["median_ms"] for r in rows]
        ax.bar(range(len(rows)), values, color=[colors.get(r["model"], "#47a") for r in rows])
        ax.set_xticks(range(len(rows)), [f"{r['model']}\n{LABELS[r['backend']]}" for r in rows], rotation=60, fontsize=8)
        for i, (v, r) in enumerate(zip(values, rows)):
            ax.text(i, v, f"{r['speedup']:.1f}x", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("sequences / s" if throughput else "median latency (ms)")
        ax.set_title(name)
        ax.set_ylim(0, max(values) * 1.15)
    ref = bench["reference"]
    fig.suptitle(f"distil bench on {bench['hardware']['cpu']} ({bench['hardware']['cores']} cores): "
                 f"speedup vs {ref['model']} {LABELS[ref['backend']]}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def markdown(bench: dict) -> str:
    hw, ref, peak = bench["hardware"], bench["reference"], bench["matmul_peak"]
    busy, load = hw.get("busy_cores_at_start"), hw.get("load_average_at_start") or 0
    method = bench.get("method", {})
    lines = [
        "# distil bench", "",
        *([f"**Warning: the machine was busy ({busy:.1f} of {hw['cores']} cores kept busy by other processes "
           "just before the bench started), so these figures are unreliable.**", ""] if busy is not None and busy > 0.5
          else [f"**Warning: the machine was busy (1-minute load average {load:.1f} on {hw['cores']} cores when the "
                 "bench started), so these figures are unreliable.**", ""] if busy is None and load > 1.0 else []),
        f"{hw['cpu']}, {hw['cores']} cores ({', '.join(hw['isa'])}); torch {hw['torch']} with {hw['torch_threads']} "
        f"threads, onnxruntime {hw['onnxruntime']} with {hw['ort_threads']} intra-op threads"
        + (f", OpenVINO {hw['openvino']} with {hw['ort_threads']} inference threads (latency hint)."
           if hw.get("openvino") and any(r["backend"].startswith("openvino") for r in bench["results"]) else "."),
        f"Timed: {bench['timed']}. Inputs: {bench['inputs']}. Each backend runs alone in blocks of "
        f"{method.get('repeats_per_block', bench['repeats'])} timed calls after {bench['warmup']} warm-up calls, "
        f"{method.get('rounds', 1)} blocks each, the blocks taking turns with a {method.get('idle_s', 0)} s pause "
        "before each so no other runtime's threads are spinning; median: of the block medians; spread: max - min of "
        f"the block medians. Speedup: against {ref['model']} {LABELS[ref['backend']]} in the same scenario.", "",
        "| model | layers | parameters | non-embedding | files (MB) |", "|---|---:|---:|---:|---|",
    ]
    for m, f in bench["models"].items():
        files = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in f["files"].items())
        lines.append(f"| {m} | {f['layers']} | {f['parameters']['total'] / 1e6:.1f}M | "
                     f"{f['parameters']['non_embedding'] / 1e6:.1f}M | {files} |")
    lines += ["", "| scenario | model | backend | median ms | spread | p90 ms | seq/s | speedup | GFLOP/s | floor ms "
              "| % of peak |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in bench["results"]:
        lines.append(f"| {r['name']} | {r['model']} | {LABELS[r['backend']]} | {r['median_ms']:.2f} | "
                     f"{r.get('spread_pct', 0):.0f}% | {r['p90_ms']:.2f} | "
                     f"{r['sequences_per_s']:.1f} | {r['speedup']:.2f}x | {r['gflops']:.0f} | {r['floor_ms']:.2f} | "
                     f"{r['percent_of_peak']:.0f}% |")
    gflops = ", ".join(f"{k} {v:.0f}" for k, v in peak["gflops"].items() if v)
    lines += ["", f"Matmul peak (best of {peak['repeats']} square {peak['size']}x{peak['size']} matmuls, GFLOP/s): "
              f"{gflops}. The floor of a figure is its FLOPs (analytic: matmuls only) at the best peak of the precision "
              "its backend computes in (torch, onnx and openvino: fp32; torch-bf16 and openvino-bf16: bf16; onnx-int8 and "
              "openvino-int8: int8, although their attention matmuls stay fp32 (ORT) or partly so (OpenVINO)); the "
              "peaks are measured in torch and ORT only.", ""]
    return "\n".join(lines)


def write_bench(bench: dict, out: Path) -> dict[str, Path]:
    out = Path(out)
    return {"json": write_json(out / "bench.json", bench), "md": write_text(out / "bench.md", markdown(bench)),
            "png": plot(bench, out / "bench.png")}
