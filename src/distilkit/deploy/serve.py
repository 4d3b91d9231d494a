"""`distil serve`: an HTTP classifier or sentence encoder (FastAPI on uvicorn) with micro-batching.

    POST /v1/classify  {"texts": [...], "text_pairs": [...]?} → {"results": [{"label", "score", "scores"}]}
                       (a multi-label model: [{"labels": every label over the threshold, "scores"}])
    POST /v1/embed     {"texts": [...]} → {"embeddings": [[...], ...], "dimension": d, "normalized": bool}
                       (embedding models; each endpoint answers 404 with a message on the other kind of model)
    GET  /health       model, backend, labels;  503 while shutting down
    GET  /metrics      Prometheus text format: counters, a latency histogram, and per-request summaries (p50, p99
                       over the last `window` requests) of queue wait, model batch size and model time
    GET  /docs         OpenAPI (FastAPI)

The two inference paths are answered by a small ASGI middleware (HotPaths) ahead of FastAPI's routing, which
would cost twice the CPU per request; FastAPI still serves /docs, /health, /metrics and the paths' schemas.
Requests put their texts on one asyncio queue; a single worker task takes up to `max_batch` texts (what queued
while the model was busy; with `max_wait_ms` above 0 it also waits that long after the first for more), runs the
backend in a thread so the event loop keeps answering, and answers each request as soon as the model call
holding its texts is done (the batch runs as calls of a few texts, Limits.texts_per_call), so answers go out while
the rest of the batch runs. Waiting is off by default: under load the batches fill while the model runs anyway,
and a lone request should not wait. Limits give 413 (sizes), 422 (shape), 503 (queue full), 504 (timeout);
shutting down stops new work and drains what is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from ..errors import ConfigError
from ..hardware import keep_freed_memory
from ..models.folders import is_pair_model
from ..tags import DEFAULT_THRESHOLD
from .backends import Backend, check_threshold, load_backend, predict_all, results

try:
    import orjson
except ImportError:  # a serving install without it writes JSON with the json module
    orjson = None


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr]
    text_pairs: list[StrictStr] | None = None


class Result(BaseModel):
    label: str | None  # None for regression models
    score: float  # probability of `label`; the predicted value for regression
    scores: dict[str, float] | None = None


class TagsResult(BaseModel):
    labels: list[str]  # every label whose probability is above the threshold, most probable first
    scores: dict[str, float]  # probability (sigmoid) of every label


class ClassifyResponse(BaseModel):
    results: list[Result | TagsResult]


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[StrictStr]


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dimension: int
    normalized: bool


@dataclass(kw_only=True)  # configs are built by keyword
class Limits:
    max_batch: int = 32
    max_wait_ms: float = 0.0  # 0: a batch is every text that queued while the model was busy
    sub_batch: int | None = None  # texts per model call inside a batch (None: 8, sorted by length, or 16 packed)
    max_texts: int = 64
    max_chars: int = 2000
    max_queue: int = 1024  # texts waiting
    timeout_s: float = 10.0
    max_body_bytes: int | None = None  # default: room for max_texts texts and pairs of max_chars escaped characters

    def __post_init__(self):
        """Counts at least 1, timeout_s above 0, max_wait_ms 0 or more; the message names the `distil serve` option."""
        for name, value in vars(self).items():
            ok, want = ((value >= 0, ">= 0") if name == "max_wait_ms" else (value > 0, "> 0") if name == "timeout_s"
                        else (value is None or value >= 1, ">= 1"))
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: expected a number {want}")

    def texts_per_call(self, packs: bool) -> int:
        """Texts per model call: `sub_batch`, by default 8 length-sorted texts (padded calls) or 16 in arrival order
        (packed calls: SST-2 student under 32 clients, 1,886-2,003 texts/s against 1,628 with 8 and 1,781 with the
        whole batch, whose answers then all wait for the one call; docs/experiments.md)."""
        return min(self.sub_batch or (16 if packs else 8), self.max_batch)

    @property
    def body_bytes(self) -> int:
        return self.max_body_bytes or 2 * self.max_texts * (6 * self.max_chars + 8) + 4096


class Window:
    """A Prometheus summary: quantiles over the last `size` observations (a bounded window, so they follow the
    current load and memory stays fixed), and the sum and count of all observations."""

    QUANTILES = (0.5, 0.99)

    def __init__(self, size: int = 1024):
        self.values: deque[float] = deque(maxlen=size)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.values.append(value)
        self.sum += value
        self.count += 1

    def quantile(self, q: float) -> float:
        return float(np.quantile(np.fromiter(self.values, float), q)) if self.values else float("nan")

    def render(self, name: str, help_: str) -> list[str]:
        return ([f"# HELP {name} {help_} Quantiles over the last {self.values.maxlen} requests.",
                 f"# TYPE {name} summary"]
                + [f'{name}{{quantile="{q}"}} {self.quantile(q):.6g}'.replace("nan", "NaN") for q in self.QUANTILES]
                + [f"{name}_sum {self.sum:.6f}", f"{name}_count {self.count}"])


@dataclass
class RequestTiming:
    """Where one request's time went, filled in by the batcher: the longest wait of its texts from being queued
    to the start of their model batch, the largest batch they ran in, and the model time of those batches (from
    a batch's start until the model call holding its texts was done)."""

    queued: float = field(default_factory=time.perf_counter)
    queue_wait: float = 0.0
    batch_size: int = 0
    model_seconds: float = 0.0
    batches: set = field(default_factory=set)

    def ran(self, batch: int, start: float, size: int, seconds: float) -> None:
        self.queue_wait = max(self.queue_wait, start - self.queued)
        self.batch_size = max(self.batch_size, size)
        if batch not in self.batches:  # a request split over several batches waits for each
            self.batches.add(batch)
            self.model_seconds += seconds


class Pending:
    """One request in the queue: its future, resolved with every text's row once the last one has run."""

    __slots__ = ("future", "rows", "left", "timing")

    def __init__(self, future: asyncio.Future, texts: int, timing: RequestTiming):
        self.future, self.rows, self.left, self.timing = future, [None] * texts, texts, timing

    def done(self, i: int, row) -> None:
        self.rows[i] = row
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(self.rows)


class Metrics:
    """The service's counters, rendered in Prometheus text format."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, window: int = 1024):
        self.requests = self.texts = self.batches = self.batch_texts = self.inflight = 0
        self.inference_seconds = self.latency_sum = 0.0
        self.latency_buckets = [0] * len(self.BUCKETS)
        self.latency_count = 0
        self.errors: Counter[int] = Counter()
        self.latency, self.queue_wait, self.batch_size, self.model_time = (Window(window) for _ in range(4))

    def observe(self, seconds: float, timing: RequestTiming | None = None) -> None:
        """A successful request: its latency, and where the time went."""
        self.latency_sum += seconds
        self.latency_count += 1
        for i, bound in enumerate(self.BUCKETS):
            self.latency_buckets[i] += seconds <= bound
        self.latency.observe(seconds)
        if timing is not None:
            self.queue_wait.observe(timing.queue_wait)
            self.batch_size.observe(timing.batch_size)
            self.model_time.observe(timing.model_seconds)

    def render(self, queue_depth: int) -> str:
        def metric(name, kind, help_, samples):
            return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"] + [f"{name}{s} {v}" for s, v in samples]

        h = "distil_request_latency_seconds"
        lines = (
            metric("distil_requests_total", "counter", "Classify and embed requests received.", [("", self.requests)])
            + metric("distil_texts_total", "counter", "Texts classified or embedded.", [("", self.texts)])
            + metric("distil_batches_total", "counter", "Model batches run.", [("", self.batches)])
            + metric("distil_batch_texts_total", "counter", "Texts in model batches (mean batch = this / batches).",
                     [("", self.batch_texts)])
            + metric("distil_inference_seconds_total", "counter", "Seconds spent in the model.",
                     [("", round(self.inference_seconds, 6))])
            + metric("distil_errors_total", "counter", "Requests answered with an error, by status.",
                     [(f'{{status="{s}"}}', n) for s, n in sorted(self.errors.items())])
            + metric("distil_queue_depth", "gauge", "Texts waiting for a batch.", [("", queue_depth)])
            + metric("distil_inflight_requests", "gauge", "Requests being handled.", [("", self.inflight)])
            + [f"# HELP {h} Latency of successful requests.", f"# TYPE {h} histogram"]
            + [f'{h}_bucket{{le="{b}"}} {n}' for b, n in zip(self.BUCKETS, self.latency_buckets)]
            + [f'{h}_bucket{{le="+Inf"}} {self.latency_count}', f"{h}_sum {self.latency_sum:.6f}",
               f"{h}_count {self.latency_count}"]
            + self.latency.render("distil_request_seconds", "Latency of successful requests (seconds).")
            + self.queue_wait.render("distil_request_queue_wait_seconds", "Per successful request: seconds its texts "
                                     "waited from being queued to the start of their model batch (the longest).")
            + self.batch_size.render("distil_request_batch_size", "Per successful request: texts in the model batch "
                                     "its texts ran in (the largest).")
            + self.model_time.render("distil_request_model_seconds", "Per successful request: seconds from the start "
                                     "of its model batch until its texts' results were ready.")
        )
        return "\n".join(lines) + "\n"


class Batcher:
    """One queue of texts, one worker task that batches them, one model thread."""

    def __init__(self, backend: Backend, limits: Limits, metrics: Metrics, threshold: float = DEFAULT_THRESHOLD):
        self.backend, self.limits, self.metrics = backend, limits, metrics
        self.threshold = threshold
        self.queue: asyncio.Queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.accepting = True

    async def classify(self, texts: list[str], pairs: list[str] | None,
                       timing: RequestTiming | None = None) -> list:
        """Each text's result row, once the batches holding them have run (503 full or shutting down, 504 late)."""
        if not self.accepting:
            raise HTTPException(503, "the server is shutting down")
        if self.queue.qsize() + len(texts) > self.limits.max_queue:
            raise HTTPException(503, f"queue full ({self.queue.qsize()} texts waiting, --max-queue "
                                     f"{self.limits.max_queue}): retry later")
        pending = Pending(asyncio.get_running_loop().create_future(), len(texts), timing or RequestTiming())
        pending.timing.queued = time.perf_counter()
        for i, text in enumerate(texts):
            self.queue.put_nowait((text, pairs[i] if pairs is not None else None, pending, i))
        try:  # one future per request; on timeout it is cancelled, and the worker skips its texts
            return await asyncio.wait_for(pending.future, self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"not answered within {self.limits.timeout_s} s (--timeout-s)") from None

    async def _next_batch(self) -> list[tuple]:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.limits.max_wait_ms / 1000
        while len(batch) < self.limits.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    def _rows(self, logits: np.ndarray) -> list:
        """The answer row of each text: its embedding, or label and scores."""
        if self.backend.embedding:
            return [row.tolist() for row in logits]
        return results(logits, self.backend.id2label, self.backend.regression, all_scores=True,
                       multi_label=self.backend.multi_label, threshold=self.threshold)

    def _predict(self, live: list[tuple], deliver) -> None:
        """In the model thread: texts with and without a pair go in separate calls, each split into model calls of
        `Limits.texts_per_call` texts (length-sorted, so short texts are not padded to long ones; in arrival order
        for a packing backend, see predict_all); each call's rows are handed to `deliver(items, rows)` as soon as
        it is done, so their answers go out while the next call runs."""
        texts_per_call = self.limits.texts_per_call(self.backend.packs)
        with_pair = np.array([pair is not None for _, pair, _, _ in live])
        for mask, paired in ((with_pair, True), (~with_pair, False)):
            items = [live[i] for i in np.flatnonzero(mask)]
            if items:
                predict_all(self.backend, [text for text, _, _, _ in items],
                            [pair for _, pair, _, _ in items] if paired else None, texts_per_call,
                            on_batch=lambda idx, logits: deliver([items[i] for i in idx], self._rows(logits)))

    async def _run_batch(self, live: list[tuple]) -> None:
        """Run one batch in the model thread; each model call's rows go to their requests on the event loop."""
        loop = asyncio.get_running_loop()
        self.metrics.batches += 1
        number, start = self.metrics.batches, time.perf_counter()

        def give(items: list[tuple], rows: list) -> None:  # on the event loop
            seconds = time.perf_counter() - start
            for (_, _, pending, i), row in zip(items, rows):
                pending.timing.ran(number, start, len(live), seconds)
                pending.done(i, row)

        await loop.run_in_executor(self.executor, self._predict, live,
                                   lambda items, rows: loop.call_soon_threadsafe(give, items, rows))
        self.metrics.inference_seconds += time.perf_counter() - start
        self.metrics.batch_texts += len(live)

    async def run(self) -> None:
        """The worker: batch, run in the model thread, hand each request its rows; forever."""
        while True:
            batch = await self._next_batch()
            live = [item for item in batch if not item[2].future.done()]  # skip texts of timed-out requests
            try:
                if live:
                    await self._run_batch(live)
            except Exception as err:  # noqa: BLE001 - the worker must survive; the requests get a 500
                for _, _, pending, _ in live:
                    if not pending.future.done():
                        pending.future.set_exception(HTTPException(500, f"inference failed: {type(err).__name__}: {err}"))
            finally:
                for _ in batch:
                    self.queue.task_done()

    async def drain(self, timeout: float) -> None:
        """Stop taking requests, finish what is queued (at most `timeout` seconds)."""
        self.accepting = False
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.queue.join(), timeout)


async def read_body(receive, content_length: str | None, limit: int) -> bytes:
    """The request body from the ASGI `receive`, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_big = f"request body over {limit} bytes (the limit follows --max-texts and --max-chars)"
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise HTTPException(413, too_big)
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPException(400, "the client disconnected before sending the whole body")
        body += message.get("body", b"")
        if len(body) > limit:
            raise HTTPException(413, too_big)
        if not message.get("more_body", False):
            return bytes(body)


def parse_request(body: bytes, schema: type[BaseModel] = ClassifyRequest) -> ClassifyRequest:
    """Bytes → ClassifyRequest (or `schema`), with a message that says what is wrong (400 / 422)."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise HTTPException(400, f"request body is not valid UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise HTTPException(400, f"malformed JSON: {err.msg} (line {err.lineno}, column {err.colno})") from None
    try:
        return schema.model_validate(obj)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".") or "body"
            problems.append(f"{where}: {e['msg']}")
        expected = '{"texts": ["..."]}' if schema is EmbedRequest else '{"texts": ["..."], "text_pairs": ["..."]?}'
        raise HTTPException(422, '; '.join(problems) + f' (expected {expected})') from None


def check_request(req: ClassifyRequest | EmbedRequest, limits: Limits, is_pair: bool | None) -> None:
    """Sizes (413) and shape (422) of a parsed request."""
    if not req.texts:
        raise HTTPException(422, "texts is empty: send at least one text")
    if not hasattr(req, "text_pairs"):
        req = ClassifyRequest(texts=req.texts)
    if len(req.texts) > limits.max_texts:
        raise HTTPException(413, f"{len(req.texts)} texts in one request; the limit is {limits.max_texts} (--max-texts)")
    if is_pair and req.text_pairs is None:
        raise HTTPException(422, "this model classifies text pairs: send text_pairs, one per text")
    if is_pair is False and req.text_pairs is not None:
        raise HTTPException(422, "this model classifies single texts: text_pairs is not accepted")
    if req.text_pairs is not None and len(req.text_pairs) != len(req.texts):
        raise HTTPException(422, f"text_pairs has {len(req.text_pairs)} items but texts has {len(req.texts)}: "
                                 "send one text_pair per text")
    for name in ("texts", "text_pairs"):
        for i, text in enumerate(getattr(req, name) or []):
            if len(text) > limits.max_chars:
                raise HTTPException(413, f"{name}[{i}] has {len(text)} characters; the limit is {limits.max_chars} "
                                         "(--max-chars)")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise HTTPException(422, f"{name}[{i}] is not valid Unicode (a lone surrogate escape)") from None


def json_bytes(obj) -> bytes:
    """Compact UTF-8 JSON: by orjson when installed (distilkit[serve] brings it), else by the json module as
    FastAPI's JSONResponse renders it. An embedding answer (384 floats) took 147 µs in the json module against 6 µs in
    orjson, on the event loop that every request shares (docs/experiments.md)."""
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")


class HotPaths:
    """ASGI middleware: answers POST to the inference paths itself, everything else goes on to the app.

    FastAPI's request handling (routing, solving dependencies, which parses cookies no endpoint reads, the
    response classes, the middleware stack) took about two thirds of the CPU of a one-text request (py-spy, null
    model), and on a few cores the HTTP side and the model share the same cores. The paths stay declared in FastAPI,
    so /docs shows them. `handlers`: path → async (receive, content-length header) → (status, JSON body)."""

    def __init__(self, app, handlers: dict):
        self.app, self.handlers = app, handlers

    async def __call__(self, scope, receive, send) -> None:
        handler = self.handlers.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if handler is None:
            return await self.app(scope, receive, send)
        length = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"content-length"), None)
        status, body = await handler(receive, length)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def create_app(model_dir: str | Path, backend: str | Backend = "auto", max_length: int | None = None,
               threshold: float | None = None, metrics_window: int = 1024, fast_path: bool = True,
               threads: int | None = None, **limits) -> FastAPI:
    """The FastAPI app for a model folder; `backend` is a name (see load_backend) or a Backend;
    `threshold`: a multi-label model answers every label whose probability is above it (default 0.5);
    `metrics_window`: how many recent requests /metrics' quantiles cover; `fast_path`: answer the two inference
    paths in HotPaths (False: through FastAPI's routing, ~2x the HTTP cost; for comparison);
    `threads`: the model's compute threads (default one per core); `limits` are the fields of Limits."""
    limits = Limits(**limits)
    if metrics_window < 1:
        raise ConfigError(f"--metrics-window {metrics_window}: expected a number >= 1")
    model = backend if isinstance(backend, Backend) else load_backend(model_dir, backend, max_length, threads)
    threshold = check_threshold(threshold, model.multi_label)
    start = time.perf_counter()
    warmed = model.warm_up(limits.texts_per_call(model.packs))  # OpenVINO: each shape's first call is slow
    warm_up = {"shapes": warmed, "seconds": round(time.perf_counter() - start, 2)}
    metrics = Metrics(metrics_window)
    is_pair = False if model.embedding else is_pair_model(model_dir)
    kind = "embedding" if model.embedding else "classifier"

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(model, limits, metrics, threshold)
        app.state.batcher = batcher
        worker = asyncio.create_task(batcher.run())
        yield
        await batcher.drain(limits.timeout_s)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        batcher.executor.shutdown(wait=True)

    served = (f"embeddings of dimension {model.output_dim} ({model.pooling.mode} pooling"
              f"{', normalised' if model.pooling.normalize else ''}): POST /v1/embed" if model.embedding
              else f"{'tags' if model.multi_label else 'labels'}: {list(model.id2label.values())}: POST /v1/classify")
    app = FastAPI(title=f"distilkit {kind}", version="1", lifespan=lifespan,
                  description=f"{Path(model_dir).name} on {model.name}; {served}")
    app.state.warm_up = warm_up
    request_schema = {"required": True, "content": {"application/json": {"schema": ClassifyRequest.model_json_schema()}}}
    errors = {code: {"description": text} for code, text in (
        (400, "malformed JSON or invalid UTF-8"), (413, "too many texts, a text too long, or body too large"),
        (422, "wrong types, empty texts, missing or mismatched text_pairs"), (503, "queue full or shutting down"),
        (504, "timed out"))}

    async def answer(receive, content_length: str | None, want_embedding: bool) -> tuple[int, bytes]:
        """Count, read, check, queue: the status and JSON body of a classify or embed request (the same limits and
        batching for both); an error is `{"detail": message}`, as FastAPI answers it."""
        start = time.perf_counter()
        metrics.requests += 1
        metrics.inflight += 1
        try:
            if want_embedding != model.embedding:
                raise HTTPException(404, f"{Path(model_dir).name} is an embedding model: POST /v1/embed"
                                    if model.embedding else f"{Path(model_dir).name} is a classifier, not an "
                                    "embedding model: POST /v1/classify")
            body = await read_body(receive, content_length, limits.body_bytes)
            req = parse_request(body, EmbedRequest if want_embedding else ClassifyRequest)
            check_request(req, limits, is_pair)
            timing = RequestTiming()
            rows = await app.state.batcher.classify(req.texts, getattr(req, "text_pairs", None), timing)
        except HTTPException as err:
            metrics.errors[err.status_code] += 1
            return err.status_code, json_bytes({"detail": err.detail})
        finally:
            metrics.inflight -= 1
        metrics.texts += len(rows)
        metrics.observe(time.perf_counter() - start, timing)
        return 200, json_bytes({"embeddings": rows, "dimension": model.output_dim,
                                "normalized": bool(model.pooling.normalize)} if want_embedding else {"results": rows})

    # The two paths, declared to FastAPI for /docs and the OpenAPI schema; with fast_path, HotPaths answers them first
    @app.post("/v1/classify", response_model=ClassifyResponse, responses=errors,
              openapi_extra={"requestBody": request_schema})
    async def classify(request: Request):
        """Label each text (with its text_pair for pair models): label, its probability, all probabilities;
        a multi-label model: every label over the threshold, all probabilities."""
        status, body = await answer(request.receive, request.headers.get("content-length"), want_embedding=False)
        return Response(body, status, media_type="application/json")

    embed_schema = {"required": True, "content": {"application/json": {"schema": EmbedRequest.model_json_schema()}}}

    @app.post("/v1/embed", response_model=EmbedResponse, responses={**errors, 404: {"description": "not an embedding model"}},
              openapi_extra={"requestBody": embed_schema})
    async def embed(request: Request):
        """The sentence embedding of each text (normalised when the model's modules say so)."""
        status, body = await answer(request.receive, request.headers.get("content-length"), want_embedding=True)
        return Response(body, status, media_type="application/json")

    if fast_path:
        app.add_middleware(HotPaths, handlers={"/v1/classify": functools.partial(answer, want_embedding=False),
                                               "/v1/embed": functools.partial(answer, want_embedding=True)})

    @app.get("/health")
    async def health(request: Request):
        """200 with what is served; 503 while shutting down."""
        if not request.app.state.batcher.accepting:
            raise HTTPException(503, "shutting down")
        return {"status": "ok", "model": str(model_dir), "kind": kind, "backend": model.name,
                "labels": None if model.embedding else list(model.id2label.values()),
                "dimension": model.output_dim if model.embedding else None, "is_pair": is_pair, "max_length": model.max_length, "limits": vars(limits), "warm_up": warm_up,
                **({"multi_label": True, "threshold": threshold} if model.multi_label else {})}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus(request: Request):
        """Counters in Prometheus text format."""
        return PlainTextResponse(metrics.render(request.app.state.batcher.queue.qsize()),
                                 media_type="text/plain; version=0.0.4")

    return app


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, backend: str = "auto",
          max_length: int | None = None, access_log: bool = False, threshold: float | None = None,
          metrics_window: int = 1024, threads: int | None = None, **limits) -> None:
    """Run the app on uvicorn (one process; the model runs in one thread beside the event loop).

    SIGTERM/Ctrl-C: uvicorn stops accepting, waits for open requests (up to timeout_s + 1), then the
    lifespan drains the queue; uvicorn then exits by re-raising the signal (exit status -15 / 143)."""
    import uvicorn

    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: expected 0..65535")
    keep_freed_memory()  # a long-running process: keep each batch's freed activations for the next one
    app = create_app(model_dir, backend, max_length, threshold, metrics_window, threads=threads, **limits)
    if app.state.warm_up["shapes"]:
        print(f"ran each of the {app.state.warm_up['shapes']} input shapes requests can have once "
              f"({app.state.warm_up['seconds']} s), so no request pays a shape's first call", flush=True)
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=int(Limits(**limits).timeout_s) + 1,
                log_level="info", access_log=access_log)
