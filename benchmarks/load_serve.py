"""Bounded loopback load test of `distil serve`, set against offline batch throughput.

Starts `distil serve MODEL_DIR` in a subprocess on a free port, sends N requests (to /v1/classify, or /v1/embed for
an embedding model) from C concurrent
keep-alive connections (a minimal asyncio HTTP/1.1 client, so the client takes little CPU), reports latency
p50/p90/p99, requests/s, texts/s, errors (status counts other than 200, transport errors) and, from the server's
/metrics, its mean batch size and the p50/p99 of each request's queue wait, model batch size and model time (over the
server's last --metrics-window requests, the window covering the measured run when it has at least that many
requests), stops the server (SIGTERM: graceful), then times the same backend offline (`predict_all` in batches of
--max-batch, tokenising included, as the server does) on the same texts and prints served / offline throughput;
then offline again in the server's own batches (arrival order, chunks of --max-batch in calls of --sub-batch), which
shows how much of the gap is batch composition (offline sorts all texts by length) and how much the HTTP side.
Client and server share the machine's cores: the served figure is a floor, not a ceiling.

Then, on the idle server, --single-requests requests of one short text, one at a time (each answered before the
next is sent), against the same backend's own batch-1 latency on that text offline (the model forward alone, median
of as many calls): the single-request p50 should be at most 2 x that plus 1 ms.

    python benchmarks/load_serve.py runs/sst2/student --requests 2000 --concurrency 32 --out runs/sst2/load_serve.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_texts(path: str | None, limit: int = 2000) -> list[str]:
    """Texts to send: --texts FILE (one per line), else SST-2 dev sentences, else a few fixed ones."""
    if path:
        return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()][:limit]
    from distilkit.data.glue import default_glue_dir

    glue = default_glue_dir()
    if glue and (Path(glue) / "SST-2" / "dev.tsv").exists():
        lines = (Path(glue) / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
        return [line.split("\t")[0] for line in lines if line.strip()][:limit]
    return ["a good film", "the plot was dull and the actor was very bad", "not a great movie", "fine"] * 8


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "distilkit.cli", "serve", args.model_dir, "--port", str(port), "--backend",
           args.backend, "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
           *(["--sub-batch", str(args.sub_batch)] if args.sub_batch else []), "--metrics-window", str(args.metrics_window),
           *(["--threads", str(args.threads)] if args.threads else []),
           "--max-queue", str(max(1024, args.concurrency * args.texts_per_request * 2))]
    log = open(args.log, "w") if args.log else subprocess.DEVNULL
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} (see --log)")
        try:
            r = httpx.get(f"{url}/health", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the server was not ready within {timeout} s")


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads status and body by Content-Length.

    The load client shares the cores with the server, so it must cost little: a raw asyncio stream
    does a request in tens of microseconds where a full client (httpx) spends several hundred."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        status_line, _, headers = (await self.reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        fields = dict(line.split(b":", 1) for line in headers.strip().split(b"\r\n") if b":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        payload = await self.reader.readexactly(int(fields.get(b"content-length", b"0")))
        if fields.get(b"connection", b"").lower() == b"close":
            self.close()
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(url: str, texts: list[str], n: int, concurrency: int, per_request: int,
               path: str = "/v1/classify") -> dict:
    """n POSTs to `path` of `per_request` texts each from `concurrency` connections; latency and status counts."""
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps({"texts": [texts[(i * per_request + k) % len(texts)] for k in range(per_request)]}).encode()
              for i in range(n)]
    latencies, statuses, failures = [], {}, 0
    counter = iter(range(n))

    async def client_task():
        nonlocal failures
        conn = Connection(host, int(port))
        for i in counter:  # shared iterator: each request index is sent once
            start = time.perf_counter()
            try:
                status, _ = await asyncio.wait_for(conn.post(path, bodies[i]), 30)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
                failures += 1
                conn.close()
                continue
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                latencies.append(time.perf_counter() - start)
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client_task() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    ok = statuses.get(200, 0)
    pct = (lambda q: float(np.percentile(ms, q))) if len(ms) else (lambda q: None)
    return {"requests": n, "concurrency": concurrency, "texts_per_request": per_request, "seconds": wall,
            "requests_per_s": ok / wall, "texts_per_s": ok * per_request / wall,
            "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": float(ms.max()) if len(ms) else None},
            "status_counts": {str(k): v for k, v in sorted(statuses.items())},
            "count_5xx": sum(v for k, v in statuses.items() if k >= 500), "transport_errors": failures}


async def single_requests(url: str, text: str, n: int, path: str = "/v1/classify") -> list[float]:
    """Seconds of each of n requests of one text, sent one at a time on one keep-alive connection."""
    host, port = url.removeprefix("http://").split(":")
    conn, body, seconds = Connection(host, int(port)), json.dumps({"texts": [text]}).encode(), []
    for _ in range(n):
        start = time.perf_counter()
        status, payload = await conn.post(path, body)
        if status != 200:
            raise SystemExit(f"single request answered {status}: {payload[:200]!r}")
        seconds.append(time.perf_counter() - start)
    conn.close()
    return seconds


def model_batch1_ms(model, text: str, n: int) -> dict:
    """Median ms of the backend's forward alone on one encoded text (batch 1), and with tokenising; each timed
    as one `distil bench` block (bench.time_blocks: warm-up, then n calls)."""
    from distilkit.deploy.bench import time_blocks

    inputs = model.encode([text])
    forward = time_blocks(lambda: model.forward(inputs), n, warmup=10)
    whole = time_blocks(lambda: model([text]), n, warmup=3)
    return {"tokens": int(inputs["input_ids"].shape[1]), "forward_ms": float(np.median(forward)) * 1e3,
            "tokenise_and_forward_ms": float(np.median(whole)) * 1e3}


SUMMARIES = {"queue_wait_ms": ("distil_request_queue_wait_seconds", 1e3), "batch_size": ("distil_request_batch_size", 1),
             "model_ms": ("distil_request_model_seconds", 1e3), "latency_ms": ("distil_request_seconds", 1e3)}


def server_metrics(url: str) -> dict:
    """Counters and the per-request summaries (p50, p99 over the server's window) from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line and not line.startswith("#")}
    batches = values.get("distil_batches_total", 0)
    per_request = {key: {q: values.get(f'{name}{{quantile="{v}"}}', float("nan")) * scale
                         for q, v in (("p50", "0.5"), ("p99", "0.99"))} for key, (name, scale) in SUMMARIES.items()}
    return {"batches": batches, "mean_batch_size": values.get("distil_batch_texts_total", 0) / batches if batches else None,
            "inference_seconds": values.get("distil_inference_seconds_total"), "per_request": per_request}


def timed_passes(run, total: int, passes: int = 3) -> dict:
    """texts/s of `run()`, which handles `total` texts: one untimed pass first (so every input shape the pass meets
    is warm, as the server warms its shapes at start), then the median of `passes` timed passes."""
    run()
    rates = []
    for _ in range(passes):
        start = time.perf_counter()
        run()
        rates.append(total / (time.perf_counter() - start))
    return {"texts": total, "passes_texts_per_s": rates, "texts_per_s": float(np.median(rates))}


def offline_throughput(model, texts: list[str], batch: int, total: int) -> dict:
    """texts/s of the same backend in-process on `total` texts in batches of `batch` (tokenising included), as
    `distil predict` runs a file."""
    from distilkit.deploy.backends import predict_all

    sample = [texts[i % len(texts)] for i in range(total)]
    return {"backend": model.name, "batch_size": batch,
            **timed_passes(lambda: predict_all(model, sample, batch_size=batch), total)}


def offline_in_server_batches(model, texts: list[str], batch: int, sub_batch: int, total: int) -> dict:
    """texts/s of the same backend on the texts in the order the clients send them, in chunks of `batch` each run as
    the server runs a batch (calls of `sub_batch`): the most a server can do with batches that hold whatever
    arrived, before any HTTP work. Offline sorts all texts by length (padded models), which no server can."""
    from distilkit.deploy.backends import predict_all

    sample = [texts[i % len(texts)] for i in range(total)]

    def run():
        for i in range(0, total, batch):
            predict_all(model, sample[i:i + batch], batch_size=sub_batch)

    return {"batch_size": batch, "sub_batch": sub_batch, **timed_passes(run, total)}


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a process has used so far (Linux /proc), or None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_async(coro):
    """Run `coro` on uvloop when installed (as uvicorn[standard] brings), else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir")
    p.add_argument("--backend", default="auto")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=0.0)
    p.add_argument("--sub-batch", type=int, help="Texts per model call (default: the server's, 8 or 16 packed).")
    p.add_argument("--threads", type=int, help="The model's compute threads, served and offline alike (default one "
                                               "per core; fewer leave cores to the HTTP side and the load client).")
    p.add_argument("--metrics-window", type=int, help="Requests the server's p50/p99 cover (default --requests: "
                                                     "exactly the measured run, as the warm-up comes before it).")
    p.add_argument("--texts", help="File of texts to send, one per line (default: SST-2 dev).")
    p.add_argument("--single-requests", type=int, default=200, help="One-text requests sent one at a time on the "
                                                                     "idle server after the load (0: skip).")
    p.add_argument("--single-text", default="a gripping, funny film", help="The text of those requests.")
    p.add_argument("--out", default="load_serve.json")
    p.add_argument("--log", help="Write the server's output to this file.")
    args = p.parse_args()
    args.metrics_window = args.metrics_window or args.requests

    texts = load_texts(args.texts)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args, port)
    try:
        health = wait_ready(url, proc)
        path = "/v1/embed" if health.get("kind") == "embedding" else "/v1/classify"
        run_async(load(url, texts, min(64, args.requests), args.concurrency, args.texts_per_request, path))  # warm-up
        before = server_metrics(url)
        cpu_before = (time.process_time(), process_cpu_seconds(proc.pid))
        served = run_async(load(url, texts, args.requests, args.concurrency, args.texts_per_request, path))
        cpu_after = (time.process_time(), process_cpu_seconds(proc.pid))
        after = server_metrics(url)
        batches = after["batches"] - before["batches"]
        served["server_batches"] = batches
        served["server_mean_batch_size"] = served["texts_per_s"] * served["seconds"] / batches if batches else None
        served["server_model_busy"] = (after["inference_seconds"] - before["inference_seconds"]) / served["seconds"]
        served["server_per_request"] = after["per_request"]  # p50/p99 over the server's last --metrics-window requests
        served["cpu_seconds"] = {"client": cpu_after[0] - cpu_before[0], "server": None if cpu_before[1] is None
                                 else cpu_after[1] - cpu_before[1]}  # where the cores went during the load
        served["errors"] = sum(v for k, v in served["status_counts"].items() if k != "200") + served["transport_errors"]
        single = None
        if args.single_requests:
            time.sleep(0.5)  # the load's last batches are done: the server is idle
            run_async(single_requests(url, args.single_text, 20, path))  # warm-up: this text's input shape
            ms = np.array(run_async(single_requests(url, args.single_text, args.single_requests, path))) * 1e3
            single = {"requests": args.single_requests, "text": args.single_text, "p50_ms": float(np.median(ms)),
                      "p99_ms": float(np.percentile(ms, 99))}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)  # uvicorn re-raises SIGTERM after a graceful shutdown: -15
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed"
    from distilkit.deploy.backends import load_backend
    from distilkit.deploy.serve import Limits

    model = load_backend(args.model_dir, health["backend"], threads=args.threads)
    args.sub_batch = Limits(max_batch=args.max_batch, sub_batch=args.sub_batch).texts_per_call(model.packs)
    offline = offline_throughput(model, texts, args.max_batch, args.requests * args.texts_per_request)
    in_batches = offline_in_server_batches(model, texts, args.max_batch, args.sub_batch,
                                           args.requests * args.texts_per_request)
    if single:
        single["model_batch1"] = model_batch1_ms(model, args.single_text, args.single_requests)
        single["bound_ms"] = 2 * single["model_batch1"]["forward_ms"] + 1
        single["within_bound"] = single["p50_ms"] <= single["bound_ms"]
    report = {"model": args.model_dir, "backend": health["backend"], "cores": os.cpu_count(),
              "server": {"max_batch": args.max_batch, "threads": args.threads, "max_wait_ms": args.max_wait_ms, "sub_batch": args.sub_batch,
                         "metrics_window": args.metrics_window, "exit_code": code,
                         "graceful_exit": code in (0, -signal.SIGTERM)},
              "served": served, "offline": offline, "single_request": single,
              "offline_in_server_batches": in_batches,
              "served_over_offline_texts_per_s": served["texts_per_s"] / offline["texts_per_s"],
              "served_over_offline_in_server_batches": served["texts_per_s"] / in_batches["texts_per_s"],
              "note": "client, server and offline run share the same cores; latency includes the HTTP round trip"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    lat = {k: v or float("nan") for k, v in served["latency_ms"].items()}
    server = served["server_per_request"]
    print(f"{served['requests']} requests x {args.texts_per_request} texts at concurrency {args.concurrency} on "
          f"{health['backend']}: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, {served['requests_per_s']:.0f} req/s, "
          f"{served['texts_per_s']:.0f} texts/s, errors {served['errors']} (5xx {served['count_5xx']}, transport "
          f"{served['transport_errors']}), mean batch {served['server_mean_batch_size'] or 0:.1f}, the model busy "
          f"{100 * served['server_model_busy']:.0f}% of the time")
    cpu = served["cpu_seconds"]
    if cpu["server"] is not None:
        print(f"cores busy (of {os.cpu_count()}): server {cpu['server'] / served['seconds']:.2f}, load client "
              f"{cpu['client'] / served['seconds']:.2f}")
    print("server, per request (p50 / p99): " + ", ".join(
        f"{key.replace('_', ' ')} {v['p50']:.1f} / {v['p99']:.1f}" for key, v in server.items()))
    print(f"offline {offline['texts_per_s']:.0f} texts/s; served/offline throughput "
          f"{report['served_over_offline_texts_per_s']:.2f}; server exit {code} → {args.out}")
    print(f"offline in the server's batches (arrival order, {args.max_batch} texts in calls of {args.sub_batch}): "
          f"{in_batches['texts_per_s']:.0f} texts/s, {in_batches['texts_per_s'] / offline['texts_per_s']:.2f} of "
          f"offline; served/that {report['served_over_offline_in_server_batches']:.2f}")
    if single:
        b1 = single["model_batch1"]
        print(f"single request on the idle server ({b1['tokens']} tokens): p50 {single['p50_ms']:.2f} ms, p99 "
              f"{single['p99_ms']:.2f} ms; the model's own batch-1 forward {b1['forward_ms']:.2f} ms (with tokenising "
              f"{b1['tokenise_and_forward_ms']:.2f} ms); bound 2 x forward + 1 ms = {single['bound_ms']:.2f} ms: "
              f"{'within' if single['within_bound'] else 'NOT within'}")


if __name__ == "__main__":
    main()
