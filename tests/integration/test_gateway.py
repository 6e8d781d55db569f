"""annrec gateway on real Kafka and Redis, with a real worker: HTTP round trips, limits and
errors, deadlines, concurrency, Server-Sent Events, several replicas."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from index_builder.announce import announce_version
from index_builder.publish import BuildOptions, publish_version
from schemas.events import MAX_REQUEST_BYTES, Reply
from tests.integration.gateway_server import gateway_settings, running_gateway
from tests.integration.helpers import running_worker
from tools.client import ReplyWaiter


@pytest.fixture
def served(settings, kafka_conf, small_factors):
    """One version of the small catalogue, published and announced (exact answers on 300
    items: tests/conftest.py)."""
    return publish_version(
        small_factors,
        Path(settings.storage),
        BuildOptions(n_trees=10, quality=False),
        announce=lambda m: announce_version(kafka_conf, settings.topic_index_versions, m),
    )


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics").text
    [value] = re.findall(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(value)


def _status_with_workers(http: httpx.Client, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        status = http.get("/v1/status").json()
        if status["workers"] or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def test_http_round_trips_of_both_kinds_equal_the_kafka_reply(
    settings, kafka_conf, services, served
):
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)  # reads every reply from now on
    with (
        running_worker(settings, kafka_conf, services.redis_url),
        running_gateway(gateway_settings(settings), kafka_conf, services.redis_url) as base,
        httpx.Client(base_url=base, timeout=60) as http,
    ):
        asked = {
            "/v1/recommend": {"request_id": "http-rec", "user_id": "u3", "k": 5},
            "/v1/similar-items": {"request_id": "http-sim", "item_id": "i7", "k": 5},
        }
        answers = {}
        for path, body in asked.items():
            response = http.post(path, json={**body, "deadline_ms": 30_000})
            assert response.status_code == 200, response.text
            assert response.headers["x-request-id"] == body["request_id"]
            answers[body["request_id"]] = response
        from_kafka = waiter.wait(set(answers), timeout_s=30)
        for rid, response in answers.items():
            reply = Reply.model_validate_json(response.content)
            assert reply == from_kafka[rid]
            assert reply.status == "ok" and reply.index_version == served.version
            assert len(reply.items) == 5
            # and the same reply is in Redis, read through the gateway
            stored = http.get(f"/v1/replies/{rid}")
            assert stored.status_code == 200
            assert Reply.model_validate_json(stored.content) == reply
        # without a request_id the gateway assigns one; the kind comes from the path
        response = http.post("/v1/recommend", json={"user_id": 4, "k": 3})
        assert response.status_code == 200
        reply = Reply.model_validate_json(response.content)
        assert reply.request_id == response.headers["x-request-id"]
        assert reply.subject_id == "4" or reply.fallback == "cold_start"
        # the worker's refusal (an item this version does not know) is a 422 carrying its reply
        response = http.post("/v1/similar-items", json={"item_id": "nope", "k": 3})
        assert response.status_code == 422
        assert "unknown item_id 'nope'" in response.json()["error"]
        # what the page shows: the serving version and its workers, LATEST served (the
        # worker's heartbeat is written every second, from a thread of its own)
        status = _status_with_workers(http)
        assert status["latest"] == served.version and status["serving_latest"]
        assert [v["version"] for v in status["versions"]] == [served.version]
        assert status["versions"][0]["workers"] == [settings.worker_id]
    waiter.close()


def test_malformed_bodies_are_refused_naming_the_field(settings, kafka_conf, services):
    with (
        running_gateway(gateway_settings(settings), kafka_conf, services.redis_url) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        cases = [
            ({"user_id": "u1", "k": 5000}, "k", "k must be at most 1000 (got 5000)"),
            ({"user_id": "u1", "kk": 5}, "kk", "kk is not a known field"),
            ({"k": 5}, None, "give exactly one of user_id, user_vector, recent_items"),
            ({"user_id": "u1", "exclude_items": ["i"] * 1001}, "exclude_items", "at most 1000"),
            ({"user_vector": [1, float("inf")]}, "user_vector.1", "must be a finite number"),
            ({"user_id": "u1", "kind": "similar_items"}, "kind", "kind must be 'recommend'"),
            ({"user_id": "u1", "deadline_ms": 120_000}, "deadline_ms", "at most 60000"),
            ({"user_id": "x" * 257}, "user_id", "user_id must have at most 256"),
        ]
        for body, field, reason in cases:
            response = http.post("/v1/recommend", content=json.dumps(body, allow_nan=True).encode())
            assert response.status_code == 422, body
            doc = response.json()
            assert doc["status"] == "invalid" and reason in doc["error"], doc
            assert doc.get("field") == field, doc
        response = http.post("/v1/similar-items", content=b'{"item_id": "i1",')
        assert response.status_code == 422
        assert response.json()["error"].startswith("body is not valid JSON")
        big = json.dumps({"item_id": "i1", "exclude_items": ["x" * 200] * 6000}).encode()
        assert len(big) > MAX_REQUEST_BYTES
        response = http.post("/v1/similar-items", content=big)
        assert response.status_code == 413
        assert response.json()["error"] == f"body exceeds the {MAX_REQUEST_BYTES}-byte limit"
        assert http.get("/v1/replies/never-asked").status_code == 404
        assert http.get("/v1/replies/has space").status_code == 422
        # nothing of it was sent, and nothing waits
        assert _metric(base, "annrec_gateway_waiting_requests") == 0


def test_a_deadline_is_answered_504_in_time_and_leaves_nothing_waiting(
    settings, kafka_conf, services
):
    # No worker: nothing will ever answer.
    with (
        running_gateway(gateway_settings(settings), kafka_conf, services.redis_url) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        started = time.perf_counter()
        response = http.post("/v1/recommend", json={"user_id": "u1", "deadline_ms": 300})
        took = time.perf_counter() - started
        assert response.status_code == 504
        doc = response.json()
        assert doc["status"] == "timeout" and "no reply within 300 ms" in doc["error"]
        assert doc["reply_url"] == f"/v1/replies/{doc['request_id']}"
        assert 0.3 <= took < 1.3, took
        assert _metric(base, "annrec_gateway_waiting_requests") == 0
        assert _metric(base, "annrec_gateway_timeouts_total") == 1
        assert http.get("/healthz").json() == {
            "ok": True,
            "reply_consumer_alive": True,
            "seconds_since_poll": pytest.approx(0, abs=1),
            "waiting": 0,
        }


def test_when_a_tenth_of_the_requests_time_out_no_waiting_request_is_left(
    settings, kafka_conf, services, served
):
    async def run(base: str) -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            # Every tenth waits 1 ms: less than any Kafka round trip, so it times out (or the
            # worker's reply says expired: a 504 either way).
            bodies = [
                {"user_id": f"u{i % 40}", "k": 5, "deadline_ms": 1 if i % 10 == 0 else 30_000}
                for i in range(300)
            ]
            responses = await asyncio.gather(*(http.post("/v1/recommend", json=b) for b in bodies))
            return [r.status_code for r in responses]

    with (
        running_worker(settings, kafka_conf, services.redis_url),
        running_gateway(gateway_settings(settings), kafka_conf, services.redis_url) as base,
    ):
        codes = asyncio.run(run(base))
        assert codes.count(504) == 30 and codes.count(200) == 270
        assert _metric(base, "annrec_gateway_waiting_requests") == 0


def test_1000_concurrent_requests_each_get_their_own_reply(settings, kafka_conf, services, served):
    async def run(base: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
            return await asyncio.gather(
                *(
                    http.post(
                        "/v1/recommend" if i % 2 else "/v1/similar-items",
                        json={
                            "request_id": f"c{i}",
                            ("user_id" if i % 2 else "item_id"): f"{'u' if i % 2 else 'i'}{i % 40}",
                            "k": 1 + i % 10,
                            "deadline_ms": 60_000,
                        },
                    )
                    for i in range(1000)
                )
            )

    with (
        running_worker(settings, kafka_conf, services.redis_url),
        running_gateway(gateway_settings(settings), kafka_conf, services.redis_url) as base,
    ):
        responses = asyncio.run(run(base))
        for i, response in enumerate(responses):
            assert response.status_code == 200, response.text
            reply = Reply.model_validate_json(response.content)
            assert reply.request_id == f"c{i}"
            assert reply.kind == ("recommend" if i % 2 else "similar_items")
            assert reply.subject_id == f"{'u' if i % 2 else 'i'}{i % 40}"
            assert len(reply.items) == 1 + i % 10
        assert _metric(base, "annrec_gateway_waiting_requests") == 0


def test_a_stream_answers_each_request_with_an_event_as_its_reply_comes(
    settings, kafka_conf, services, served
):
    requests = [
        {"kind": "recommend", "request_id": f"s{i}", "user_id": f"u{i}", "k": 3} for i in range(20)
    ]
    requests.insert(5, {"kind": "recommend", "request_id": "bad", "user_id": "u1", "k": 0})
    with (
        running_worker(settings, kafka_conf, services.redis_url),
        running_gateway(gateway_settings(settings), kafka_conf, services.redis_url) as base,
        httpx.Client(base_url=base, timeout=60) as http,
        http.stream("POST", "/v1/stream", json={"requests": requests}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events, event = [], {}
        for line in response.iter_lines():
            if not line:
                if event:
                    events.append(event)
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                event[name] = value.strip()
    names = [e["event"] for e in events]
    assert names[0] == "invalid" and names[-1] == "done" and names.count("reply") == 20
    invalid = json.loads(events[0]["data"])
    assert invalid["field"] == "requests.5.k" and "k must be at least 1" in invalid["error"]
    replies = [Reply.model_validate_json(e["data"]) for e in events if e["event"] == "reply"]
    assert {r.request_id for r in replies} == {f"s{i}" for i in range(20)}
    assert all(e["id"] == json.loads(e["data"])["request_id"] for e in events[1:-1])
    assert json.loads(events[-1]["data"]) == {"invalid": 1, "reply": 20}


def test_two_replicas_each_answer_their_own_requests(settings, kafka_conf, services, served):
    """Every replica reads every reply and drops the ones it does not wait for
    (gateway/bridge.py): each gets its own replies, and sees the other's go by."""

    async def run(bases: list[str]) -> list[list[httpx.Response]]:
        async with httpx.AsyncClient(timeout=60) as http:

            async def ask(base: str, tag: str) -> list[httpx.Response]:
                return await asyncio.gather(
                    *(
                        http.post(
                            f"{base}/v1/recommend",
                            json={"request_id": f"{tag}-{i}", "user_id": f"u{i}", "k": 2},
                        )
                        for i in range(40)
                    )
                )

            return await asyncio.gather(ask(bases[0], "a"), ask(bases[1], "b"))

    gw = gateway_settings(settings)
    with (
        running_worker(settings, kafka_conf, services.redis_url),
        running_gateway(gw, kafka_conf, services.redis_url) as first,
        running_gateway(gw, kafka_conf, services.redis_url) as second,
    ):
        for tag, responses in zip("ab", asyncio.run(run([first, second])), strict=True):
            assert [r.status_code for r in responses] == [200] * 40
            assert [Reply.model_validate_json(r.content).request_id for r in responses] == [
                f"{tag}-{i}" for i in range(40)
            ]
        for base in (first, second):
            assert _metric(base, "annrec_gateway_replies_routed") == 40
            assert _metric(base, "annrec_gateway_replies_ignored") >= 40
