"""`distil serve` on tiny models, without a socket: answers, bad input, limits, metrics, micro-batching,
queue full, timeout, draining on shutdown."""

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from distilkit.deploy.backends import OrtBackend
from distilkit.deploy.serve import create_app

from .deploy_fixtures import tiny_pair_model, tiny_student  # noqa: F401

GOOD = {"texts": ["a good film", "bad plot"]}


@pytest.fixture(scope="module")
def client(tiny_student):
    with TestClient(create_app(tiny_student, "onnx", max_texts=8, max_chars=200)) as c:
        yield c


@pytest.fixture(scope="module")
def pair_client(tiny_pair_model):
    with TestClient(create_app(tiny_pair_model, "torch")) as c:
        yield c


class SlowBackend(OrtBackend):
    """The ONNX backend, `delay` seconds slower per call."""

    delay = 0.3

    def forward(self, inputs):
        time.sleep(self.delay)
        return super().forward(inputs)


async def _with_app(app, work):
    """Run `work(client)` against the app with its lifespan (startup, shutdown) and no socket."""
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await work(client)


def _metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
                or line.startswith(name + "{"))


def test_classify(client):
    r = client.post("/v1/classify", json=GOOD)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2
    for row in results:
        assert row["label"] in ("negative", "positive")
        assert set(row["scores"]) == {"negative", "positive"} and sum(row["scores"].values()) == pytest.approx(1)
        assert row["score"] == pytest.approx(row["scores"][row["label"]]) and row["score"] >= 0.5


BAD = [
    (b'{"texts": ["good"', 400, "malformed JSON"),
    (b'{"texts": ["\xff\xfe bad"]}', 400, "not valid UTF-8"),
    (b'{"texts": "a good film"}', 422, "texts: Input should be a valid list"),
    (b'{"texts": ["fine", 3]}', 422, "texts[1]: Input should be a valid string"),
    (b'["good"]', 422, "body: Input should be a valid dictionary"),
    (b'{"text": ["good"]}', 422, "texts: Field required"),
    (b'{"texts": []}', 422, "texts is empty"),
    (json.dumps({"texts": ["good"] * 9}).encode(), 413, "9 texts in one request; the limit is 8 (--max-texts)"),
    (json.dumps({"texts": ["good", "x" * 201]}).encode(), 413, "texts[1] has 201 characters; the limit is 200"),
    (json.dumps({"texts": ["x" * 1_000_000]}).encode(), 413, "request body over"),
    (b'{"texts": ["ok \\ud800"]}', 422, "texts[0] is not valid Unicode"),
    (json.dumps({"texts": ["good"], "text_pairs": ["film"]}).encode(), 422, "single texts"),
]


@pytest.mark.parametrize("body,status,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_answering(client, body, status, message):
    r = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert client.post("/v1/classify", json=GOOD).status_code == 200


def test_fast_path_answers_as_fastapi_routing_does(tiny_student, client):
    """HotPaths answers POST /v1/classify itself; with fast_path=False FastAPI's route does: same status and body."""
    bodies = [json.dumps(GOOD).encode()] + [body for body, _, _ in BAD]
    with TestClient(create_app(tiny_student, "onnx", max_texts=8, max_chars=200, fast_path=False)) as routed:
        for body in bodies:
            fast = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
            slow = routed.post("/v1/classify", content=body, headers={"content-type": "application/json"})
            assert (fast.status_code, fast.headers["content-type"]) == (slow.status_code, slow.headers["content-type"])
            assert fast.json() == slow.json(), body[:40]
        assert routed.post("/v1/embed", json=GOOD).json() == client.post("/v1/embed", json=GOOD).json()
    assert client.post("/v1/embed", json=GOOD).status_code == 404
    assert client.get("/v1/classify").status_code == 405  # not POST: on to FastAPI


def test_pair_model_needs_one_text_pair_per_text(pair_client):
    r = pair_client.post("/v1/classify", json={"texts": ["good film"]})
    assert r.status_code == 422 and "text_pairs" in r.json()["detail"]
    r = pair_client.post("/v1/classify", json={"texts": ["good film", "bad"], "text_pairs": ["a fine movie"]})
    assert r.status_code == 422 and "text_pairs has 1 items but texts has 2" in r.json()["detail"]
    r = pair_client.post("/v1/classify", json={"texts": ["good film"], "text_pairs": ["a fine movie"]})
    assert r.status_code == 200 and r.json()["results"][0]["label"] in ("equivalent", "not_equivalent")


def test_health_and_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["backend"] == "onnx" and health["labels"] == ["negative", "positive"]
    assert health["is_pair"] is False and health["limits"]["max_texts"] == 8
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()["paths"]["/v1/classify"]["post"]
    assert "texts" in json.dumps(schema["requestBody"]) and "413" in schema["responses"]


def test_metrics_count_requests_texts_batches_errors(client):
    before = client.get("/metrics").text
    client.post("/v1/classify", json={"texts": ["good", "bad", "fine"]})
    client.post("/v1/classify", json={"texts": []})
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert _metric(text, "distil_requests_total") == _metric(before, "distil_requests_total") + 2
    assert _metric(text, "distil_texts_total") == _metric(before, "distil_texts_total") + 3
    assert _metric(text, "distil_batches_total") >= _metric(before, "distil_batches_total") + 1
    assert 'distil_errors_total{status="422"}' in text
    assert _metric(text, "distil_queue_depth") == 0
    assert 'distil_request_latency_seconds_bucket{le="+Inf"}' in text and "# TYPE distil_requests_total counter" in text


def test_micro_batching_merges_concurrent_requests(tiny_student):
    app = create_app(tiny_student, "onnx", max_batch=32, max_wait_ms=200)

    async def work(client):
        responses = await asyncio.gather(*(client.post("/v1/classify", json={"texts": [f"good film {i}"]})
                                           for i in range(16)))
        return responses, (await client.get("/metrics")).text

    responses, metrics = asyncio.run(_with_app(app, work))
    assert all(r.status_code == 200 for r in responses)
    assert _metric(metrics, "distil_texts_total") == 16
    assert _metric(metrics, "distil_batches_total") <= 4  # 16 requests, a few batches


def test_batched_results_equal_one_by_one(client):
    texts = ["good film", "very bad plot", "the actor was dull", "a nice story"]
    together = client.post("/v1/classify", json={"texts": texts}).json()["results"]
    alone = [client.post("/v1/classify", json={"texts": [t]}).json()["results"][0] for t in texts]
    for a, b in zip(together, alone):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-5)


class RecordingBackend(OrtBackend):
    """The ONNX backend, recording the padded shape of every model call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shapes = []

    def forward(self, inputs):
        self.shapes.append(inputs["input_ids"].shape)
        return super().forward(inputs)


def test_a_batch_runs_as_length_sorted_sub_batches(tiny_student):
    backend = RecordingBackend(tiny_student)
    texts = ["good " * n for n in (9, 1, 7, 2, 8, 3, 6, 4)]  # long and short interleaved
    app = create_app(tiny_student, backend, sub_batch=2)
    r = asyncio.run(_with_app(app, lambda client: client.post("/v1/classify", json={"texts": texts})))
    assert r.status_code == 200
    assert [shape[0] for shape in backend.shapes] == [2, 2, 2, 2]
    # sorted by length: each call pads to a neighbour's length, not to the longest text of the request
    # lengths 1 2 3 4 6 7 8 9 words pair up as (1,2) (3,4) (6,7) (8,9) (in request order: 9, 7, 8 and 6)
    assert sorted(shape[1] for shape in backend.shapes) == [2 + 2, 2 + 4, 2 + 7, 2 + 9]
    alone = [backend([t])[0] for t in texts]
    for row, logits in zip(r.json()["results"], alone):
        assert row["score"] == pytest.approx(float(np.exp(logits).max() / np.exp(logits).sum()), abs=1e-5)


class CountingBackend(SlowBackend):
    """The slow ONNX backend, counting finished model calls."""

    done = 0

    def forward(self, inputs):
        out = super().forward(inputs)
        self.done += 1
        return out


def test_answers_go_out_as_each_model_call_of_a_batch_is_done(tiny_student):
    backend = CountingBackend(tiny_student)
    app = create_app(tiny_student, backend, max_batch=3, max_wait_ms=200, sub_batch=1)

    async def work(client):
        async def one(text):
            r = await client.post("/v1/classify", json={"texts": [text]})
            return r.status_code, backend.done  # model calls finished when this answer arrived
        return await asyncio.gather(*(one(t) for t in ("good", "a bad film", "the plot was very dull")))

    answers = asyncio.run(_with_app(app, work))
    assert [status for status, _ in answers] == [200] * 3
    assert sorted(done for _, done in answers)[0] < 3  # the first answer did not wait for the batch's last call


def test_full_queue_gives_503_and_timeout_504(tiny_student):
    app = create_app(tiny_student, SlowBackend(tiny_student), max_batch=1, max_wait_ms=0, max_queue=2, timeout_s=2)

    async def work(client):
        responses = await asyncio.gather(*(client.post("/v1/classify", json={"texts": ["good"]}) for _ in range(6)))
        return responses, (await client.post("/v1/classify", json=GOOD)).status_code

    responses, after = asyncio.run(_with_app(app, work))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes, codes
    assert "queue full" in next(r.json()["detail"] for r in responses if r.status_code == 503)
    assert after == 200

    slow = create_app(tiny_student, SlowBackend(tiny_student), timeout_s=0.1)
    r = asyncio.run(_with_app(slow, lambda client: client.post("/v1/classify", json=GOOD)))
    assert r.status_code == 504 and "--timeout-s" in r.json()["detail"]


def test_shutdown_drains_in_flight_requests(tiny_student):
    app = create_app(tiny_student, SlowBackend(tiny_student), max_batch=2, max_wait_ms=0)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            async with app.router.lifespan_context(app):
                pending = [asyncio.create_task(client.post("/v1/classify", json=GOOD)) for _ in range(3)]
                await asyncio.sleep(0.1)  # queued or running when shutdown starts
            late = await client.post("/v1/classify", json=GOOD)  # after shutdown: refused
            return await asyncio.gather(*pending), late

    done, late = asyncio.run(main())
    assert [r.status_code for r in done] == [200, 200, 200]
    assert late.status_code == 503 and "shutting down" in late.json()["detail"]


def _summary(text: str, name: str) -> dict[str, float]:
    """A Prometheus summary's quantiles, sum and count from /metrics."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{quantile="):
            out[line.split('"')[1]] = float(line.split()[-1])
        elif line.startswith((name + "_sum ", name + "_count ")):
            out[line.split()[0].removeprefix(name + "_")] = float(line.split()[-1])
    return out


def test_metrics_report_p50_p99_of_queue_wait_batch_size_and_model_time(tiny_student):
    app = create_app(tiny_student, SlowBackend(tiny_student), max_batch=4, max_wait_ms=50, metrics_window=100)

    async def work(client):
        first = await asyncio.gather(*(client.post("/v1/classify", json={"texts": [f"good film {i}"]}) for i in range(6)))
        second = await client.post("/v1/classify", json={"texts": ["a", "b", "c"]})
        return [*first, second], (await client.get("/metrics")).text

    responses, text = asyncio.run(_with_app(app, work))
    assert all(r.status_code == 200 for r in responses)
    assert "# TYPE distil_request_queue_wait_seconds summary" in text and "over the last 100 requests" in text
    wait, size, model, latency = (_summary(text, f"distil_request_{n}") for n in
                                  ("queue_wait_seconds", "batch_size", "model_seconds", "seconds"))
    for s in (wait, size, model, latency):
        assert set(s) == {"0.5", "0.99", "sum", "count"} and s["count"] == 7, s
        assert 0 <= s["0.5"] <= s["0.99"]
    # 6 concurrent one-text requests in batches of at most 4 (two batches of a 0.3 s slower model), then 3 texts alone
    assert 1 <= size["0.5"] <= size["0.99"] <= 4 and size["sum"] >= 6 + 3
    assert model["0.5"] >= SlowBackend.delay * 0.9 and model["0.99"] < 5
    assert wait["0.99"] >= SlowBackend.delay * 0.9  # the second batch waited for the first one's model call
    assert latency["0.99"] >= model["0.99"] and latency["0.5"] >= wait["0.5"]


def test_metrics_quantiles_cover_a_bounded_window():
    from distilkit.deploy.serve import Metrics, RequestTiming

    metrics = Metrics(window=10)
    assert 'distil_request_batch_size{quantile="0.5"} NaN' in metrics.render(0)  # no request yet
    for i in range(100):
        metrics.observe(0.01, RequestTiming(queue_wait=i / 1000, batch_size=i, model_seconds=0.005))
    size = _summary(metrics.render(0), "distil_request_batch_size")
    assert size["count"] == 100 and size["sum"] == sum(range(100))
    assert 90 <= size["0.5"] <= size["0.99"] <= 99  # the last 10 requests only


def test_answers_are_the_same_json_with_or_without_orjson(monkeypatch):
    """orjson (distilkit[serve]) writes the answers, the json module when it is missing: the same JSON either way."""
    pytest.importorskip("orjson", reason="orjson is not installed: `pip install 'distilkit[serve]'`")
    from distilkit.deploy import serve

    answer = {"embeddings": [[0.1, -2.5e-05, 3.0, 1e20]], "dimension": 4, "normalized": True, "label": "négatif"}
    fast = serve.json_bytes(answer)
    monkeypatch.setattr(serve, "orjson", None)
    plain = serve.json_bytes(answer)
    assert json.loads(fast) == json.loads(plain) == answer and fast.decode().isascii() is False
