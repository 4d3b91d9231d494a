"""Deploy commands: export, bench, predict, serve. Each imports its module when it runs; predict and serve on an
ONNX export import no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import ConfigError
from .common import (BackendOpt, DataOpt, DevLimitOpt, LabelColOpt, MaxLengthOpt, PairColOpt, TextColOpt, ThresholdOpt,
                     check_threshold_option, command, console, int_list)


@command("export")
def export_cmd(
    model_dir: str = typer.Argument(..., help="A task model folder (save_pretrained, safetensors)."),
    task: Optional[str] = typer.Option(None, "--task", help="GLUE task whose dev set checks the export "
                                                            "(default: what distil.json records, else sst2)."),
    data: Optional[Path] = DataOpt, dev_limit: Optional[int] = DevLimitOpt,
    dev: Optional[Path] = typer.Option(None, "--dev", help="Your own labelled dev file to check on (default: the one "
                                                           "the model was trained with, as distil.json records)."),
    text_column: str = TextColOpt, text_pair_column: Optional[str] = PairColOpt, label_column: str = LabelColOpt,
    tolerance: float = typer.Option(1.0, "--tolerance", help="Largest dev-score drop (points) a file may show."),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Also write the int8 model (per-channel dynamic)."),
    check: bool = typer.Option(True, "--check/--no-check", help="Check against the torch model on the dev set."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder of the ONNX files (default MODEL_DIR)."),
    max_length: Optional[int] = MaxLengthOpt,
    min_cosine: float = typer.Option(0.99, "--min-cosine", help="Embedding models: lowest mean cosine of a file's "
                                                                "embeddings to the torch fp32 ones."),
    sentences: Optional[Path] = typer.Option(None, "--sentences", help="Embedding models: sentences (one per line) "
                                                                       "to check on (default: STS-B dev)."),
    openvino: bool = typer.Option(False, "--openvino/--no-openvino", help="Also write OpenVINO IR files: fp32 "
                                  "(model.ov.xml) and int8 by NNCF calibrated on the task's training texts "
                                  "(model.int8.ov.xml), each checked; needs `pip install 'distilkit[openvino]'`."),
):
    """ONNX export (optimised fp32 + int8; with --openvino also OpenVINO IR fp32 + int8), each file checked against
    the torch model before it is written, then briefly timed so `--backend auto` loads the fastest; writes
    export.json."""
    from ..data.sentences import check_sentences
    from ..deploy.export import CALIBRATION_SIZE, export_onnx
    from ..models.pooling import is_embedding_model
    from ..stages.evaluate import checking_data

    d, source = None, None
    if check and is_embedding_model(model_dir):
        d, source = check_sentences(sentences, data, dev_limit)
    elif check:  # with --openvino (and int8), training texts come along to calibrate the int8 IR on
        d = checking_data(model_dir, task, data, dev, text_column, text_pair_column, label_column, dev_limit,
                          train_limit=CALIBRATION_SIZE if openvino and int8 else 1)
    info = export_onnx(model_dir, out, quantize=int8, data=d, tolerance=tolerance, max_length=max_length,
                       min_cosine=min_cosine, sentences_source=source, openvino=openvino)
    folder = out or Path(model_dir)
    if "check" in info and info.get("kind") == "embedding":
        table = Table(title=f"embeddings vs torch fp32 ({info['check']['sentences']} sentences)")
        for col in ("backend", "mean cosine", "min cosine", "max |diff|"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        for name, r in info["check"]["results"].items():
            table.add_row(name, f"{r['mean_cosine']:.5f}", f"{r['min_cosine']:.5f}" if "min_cosine" in r else "",
                          f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "")
        console.print(table)
    elif "check" in info:
        table = Table(title=f"{info['check']['task']} dev ({info['check']['dev_examples']} examples)")
        for col in ("backend", "score", "drop (points)", "label agreement", "max |logit diff|"):
            table.add_column(col, justify="left" if col == "backend" else "right")
        for name, r in info["check"]["results"].items():
            agree = "" if r.get("label_agreement") is None else f"{r['label_agreement'] * 100:.2f}%"
            table.add_row(name, f"{r['score'] * 100:.2f}", f"{r.get('score_drop_points', 0):.2f}", agree,
                          f"{r['max_abs_logit_diff']:.2e}" if "max_abs_logit_diff" in r else "")
        console.print(table)
    calibration = ((info.get("openvino") or {}).get("int8") or {}).get("calibration")
    if calibration:
        console.print(f"OpenVINO int8 calibrated on {calibration['examples']} {calibration['split']} texts"
                      + (f" ({calibration['note']})" if calibration.get("note") else ""))
    if "timing" in info:
        fastest = info["timing"]["fastest"]
        ms = info["timing"]["results"][fastest]["ms_per_text"]
        batch = info["timing"]["method"]["batch"]
        console.print(f"fastest checked backend (a short timing, see export.json): {fastest} ({ms:.2f} ms per text "
                      f"in calls of {batch}); --backend auto loads it")
    for name, size in info["files"].items():
        console.print(f"→ {folder / name} ({size / 1e6:.1f} MB)")
    console.print(f"→ {folder / 'export.json'}")


ThreadsOpt = typer.Option(None, "--threads", help="Compute threads of the model's runtime (default: one per core; "
                                                   "fewer leave cores to other work on a shared machine).")


@command()
def bench(
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Teacher task model folder."),
    student: Optional[Path] = typer.Option(None, "--student", help="Student task model folder."),
    seq: str = typer.Option("32,128", "--seq", help="Sequence lengths of the batch-1 latency runs."),
    batch: int = typer.Option(32, "--batch", help="Batch of the throughput run (at the longest --seq)."),
    repeats: int = typer.Option(10, "--repeats", help="Timed calls per block (each backend runs alone in a block)."),
    rounds: int = typer.Option(5, "--rounds", help="Blocks per model, backend and scenario, taking turns (with 5, "
                               "all 42 figures were within 15% of each backend timed alone, largest 9.2%)."),
    backends: Optional[str] = typer.Option(None, "--backends", help="Comma list (default: all available)."),
    peak_size: int = typer.Option(1024, "--peak-size", help="Size of the square matmuls timing the machine's peak."),
    model: list[str] = typer.Option([], "--model", help="NAME=PATH of another task model folder to time in the same "
                                    "run (e.g. a narrower student against the full-width one); repeatable."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for bench.json, bench.md, bench.png."),
    threads: Optional[int] = ThreadsOpt,
):
    """Size, latency and throughput of teacher and student (and --model NAME=PATH) on each backend in one run,
    each backend timed alone."""
    from ..deploy.bench import run_bench, write_bench

    models = {name: d for name, d in (("teacher", teacher), ("student", student)) if d is not None}
    for item in model:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip() or name.strip() in models:
            raise ConfigError(f"--model {item!r}: expected NAME=PATH with a new NAME (not teacher or student twice)")
        models[name.strip()] = Path(path.strip())
    if not models:
        raise ConfigError("give --teacher, --student and/or --model NAME=PATH")
    if min(repeats, rounds) < 1:
        raise ConfigError(f"--repeats {repeats} --rounds {rounds}: expected at least 1 each")
    result = run_bench(models, int_list(seq, "--seq"), batch, repeats,
                       backends=backends.split(",") if backends else None, peak_size=peak_size, rounds=rounds,
                       threads=threads)
    paths = write_bench(result, out)
    table = Table(title=f"distil bench (forward only; speedup vs {result['reference']['model']} "
                        f"{result['reference']['backend']})")
    for col in ("scenario", "model", "backend", "median ms", "p90 ms", "seq/s", "speedup", "% of peak"):
        table.add_column(col, justify="left" if col in ("scenario", "model", "backend") else "right")
    for r in result["results"]:
        table.add_row(r["name"], r["model"], r["backend"], f"{r['median_ms']:.2f}", f"{r['p90_ms']:.2f}",
                      f"{r['sequences_per_s']:.1f}", f"{r['speedup']:.2f}x", f"{r['percent_of_peak']:.0f}%")
    console.print(table)
    console.print("→ " + ", ".join(str(p) for p in paths.values()))


@command()
def predict(
    model_dir: str = typer.Argument(..., help="A task model folder."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to label (default: --file, else stdin)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="One text per line, or JSONL with \"text\" "
                                                                   "and optional \"text_pair\"."),
    fmt: str = typer.Option("auto", "--format", help="auto | lines | jsonl (auto: .jsonl name or a first '{')."),
    backend: str = BackendOpt,
    batch_size: int = typer.Option(32, "--batch-size"),
    max_length: Optional[int] = MaxLengthOpt,
    embedding: bool = typer.Option(False, "--embedding", help="Sentence embeddings, {\"embedding\": [...]} per text "
                                                              "(the default output of an embedding model)."),
    threshold: Optional[float] = ThresholdOpt,
    threads: Optional[int] = ThreadsOpt,
):
    """Label texts: JSONL on stdout, {"label", "score"} per text (score: probability of the label);
    a multi-label model gives {"labels": [...over --threshold], "scores": {label: probability}};
    an embedding model gives {"embedding": [...]} per text."""
    from ..deploy.backends import load_backend
    from ..deploy.predict import InputError, check_pairs, embed, predict as predict_texts, read_inputs, write_jsonl
    from ..models.folders import is_pair_model

    check_threshold_option(threshold)
    texts, pairs = read_inputs(texts, file, fmt=fmt)
    model = load_backend(model_dir, backend, max_length, threads)
    if embedding or model.embedding:
        if pairs is not None:
            raise InputError("an embedding model takes single texts: drop \"text_pair\" from the input")
        if threshold is not None:
            raise InputError("--threshold is for multi-label classifiers, not sentence embeddings")
        rows = embed(model, texts, batch_size)
    else:
        check_pairs(is_pair_model(model_dir), pairs, model_dir)
        rows = predict_texts(model, texts, pairs, batch_size, threshold=threshold)
    write_jsonl(rows)


@command()
def serve(
    model_dir: str = typer.Argument(..., help="A task or embedding model folder (exported: the fastest checked file "
                                              "is used, see --backend)."),
    host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port"),
    backend: str = BackendOpt, max_length: Optional[int] = MaxLengthOpt,
    max_batch: int = typer.Option(32, "--max-batch", help="Most texts in one model call."),
    max_wait_ms: float = typer.Option(0.0, "--max-wait-ms", help="Longest wait for a batch to fill; 0: a batch is "
                                      "every text that queued while the model was busy (no wait when idle)."),
    sub_batch: Optional[int] = typer.Option(None, "--sub-batch", help="Texts per model call within a batch "
                                            "(default: 8, sorted by length; 16 for a packed OpenVINO model)."),
    max_texts: int = typer.Option(64, "--max-texts", help="Most texts in one request (413 beyond)."),
    max_chars: int = typer.Option(2000, "--max-chars", help="Most characters in one text (413 beyond)."),
    max_queue: int = typer.Option(1024, "--max-queue", help="Most texts waiting (503 beyond)."),
    timeout_s: float = typer.Option(10.0, "--timeout-s", help="Per-request timeout (504)."),
    max_body_bytes: Optional[int] = typer.Option(None, "--max-body-bytes", help="Request body limit (413; default "
                                                                                "from --max-texts and --max-chars)."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request (costs CPU)."),
    threshold: Optional[float] = ThresholdOpt,
    metrics_window: int = typer.Option(1024, "--metrics-window", help="Recent requests the p50/p99 of /metrics "
                                                                      "(queue wait, batch size, model time) cover."),
    threads: Optional[int] = ThreadsOpt,
):
    """HTTP classifier (POST /v1/classify) or sentence encoder (POST /v1/embed), GET /health, GET /metrics, /docs; micro-batched."""
    from ..deploy.serve import serve as run_server

    check_threshold_option(threshold)
    run_server(model_dir, host, port, backend, max_length, access_log, threshold, metrics_window, threads,
               max_batch=max_batch,
               max_wait_ms=max_wait_ms, sub_batch=sub_batch, max_texts=max_texts, max_chars=max_chars,
               max_queue=max_queue, timeout_s=timeout_s,
               max_body_bytes=max_body_bytes)

