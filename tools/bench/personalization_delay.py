"""From an interaction produced to the first `recommend` reply that reflects it, through one real
worker, Kafka and Redis, under load (issue 23's target: p99 <= 1 s at 500 events/s + 500
requests/s).

Each event is followed at once by a request for the same user (so requests run at the event
rate). The worker reads both topics in one loop, but a request may still be answered before
the event is written (another topic, another fetch): a reply tells how many history
events it used (`history_events`), and one that does not count the event yet makes the client
ask again at once. The delay of an event is the time from its produce() call to the arrival of
the first reply counting it. The same load without events runs first, on the same worker and
users: the requests' latency with and without the events, side by side. Users are the version's
own (factors trained, plus the history); their ids carry the run's tag, so their Redis histories
start empty, and each user gets fewer events than the history's length, so `history_events`
counts every one.
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Producer

from adapters.interactions import interaction_message
from adapters.kafka_log import client_config
from adapters.topics import ensure_topics, topic_specs
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.events import Interaction, RecommendRequest, Reply
from schemas.settings import CommonSettings, prefixed_topics
from tools import processes, services
from tools.bench.e2e import Run, Served, worker_env
from tools.client import ReplyWaiter, wait_for_workers

DRAIN_S = 30.0  # after sending: how long events may take to be reflected


def measure_delay(
    n_items: int, rate: int, duration_s: float, history_length: int, dim: int = 64
) -> dict[str, Any]:
    with (
        services.configured_or_local() as svc,
        tempfile.TemporaryDirectory(prefix="annrec-personal-") as tmp,
    ):
        tag = uuid.uuid4().hex[:8]
        factors = synth_factors(n_items, max(1000, n_items // 10), dim, seed=1)
        users = np.char.add(f"b{tag}-", factors.user_ids)  # histories of this run only
        factors = replace(factors, user_ids=users)
        storage = Path(tmp)
        publish_version(factors, storage, BuildOptions())
        topics = CommonSettings(**prefixed_topics(f"bench{tag}"))
        ensure_topics(svc.kafka, topic_specs(topics))
        served = Served(svc.kafka, svc.redis_url, storage, len(users), max_p99_ms=1000.0)
        env = {  # a worker on the defaults, as `annrec bench e2e` starts one
            **worker_env(served, Run("personalization", 1), topics, tag),
            "ANNREC_HISTORY_LENGTH": str(history_length),
        }
        log = (storage / "worker.log").open("ab")
        worker = processes.start_worker(env, log)
        try:
            wait_for_workers(svc.kafka, topics.topic_requests, topics.topic_replies, 10, 1)
            # Side by side in one run: the same requests without events first (the cost of
            # consuming the events is the difference), then with them.
            args = (svc.kafka, topics, users, n_items, rate, duration_s, history_length)
            without = _load(*args, events=False)
            figures = _load(*args, events=True)
        finally:
            processes.stop([worker])
            log.close()
    before = without["request_to_reply_ms"]
    after = figures["request_to_reply_ms"]
    return {
        "items": n_items,
        "dim": dim,
        "history_length": history_length,
        **figures,
        "request_to_reply_without_events_ms": before,
        "request_p99_with_vs_without_events": (
            round(after["p99"] / before["p99"], 2) if after["p99"] and before["p99"] else None
        ),
    }


def _load(
    kafka: dict[str, str],
    topics: CommonSettings,
    users: np.ndarray,
    n_items: int,
    rate: int,
    duration_s: float,
    history_length: int,
    *,
    events: bool,
) -> dict[str, Any]:
    """`rate` requests/s for duration_s, each after an event of its user when `events`."""
    n = int(rate * duration_s)
    # Fewer events per user than the history holds: history_events counts every one.
    pool = min(len(users), max(100, 4 * n // max(history_length, 1)))
    who = [str(users[(i * 7919) % pool]) for i in range(n)]
    items = np.random.default_rng(0).integers(0, n_items, size=n)
    probe = _Probe(kafka, topics, who)
    collector = threading.Thread(target=probe.collect)
    collector.start()
    start = time.perf_counter() + 0.2
    counts: dict[str, int] = {}
    for i, user in enumerate(who):
        while (wait := start + i / rate - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.005))
        probe.produced_at[i] = time.perf_counter()
        if events:
            counts[user] = probe.expected[i] = counts.get(user, 0) + 1
            event = Interaction(
                user_id=user, item_id=f"i{items[i]}", type="view", timestamp=datetime.now(UTC)
            )
            key, value = interaction_message(event)
            probe.producer.produce(topics.topic_interactions, key=key, value=value)
        probe.ask(i, 0)
        probe.producer.poll(0)
    probe.finish(collector)
    reflected = probe.delays[np.isfinite(probe.delays)]
    return {
        "rate": rate,
        "duration_s": duration_s,
        "events": n if events else 0,
        "users": pool,
        "reflected": len(reflected) if events else 0,
        "retries": probe.retries,
        "event_to_reflecting_reply_ms": _percentiles(reflected if events else np.empty(0)),
        "request_to_reply_ms": _percentiles(np.asarray(probe.request_ms)),
        "delays_ms": [round(float(d), 2) for d in reflected] if events else [],
    }


class _Probe:
    """Sends the i-th request for who[i]; a reply that does not count the user's expected[i]
    events yet makes it ask again; the first that does sets delays[i] (ms from produced_at)."""

    def __init__(self, kafka: dict[str, str], topics: CommonSettings, who: list[str]) -> None:
        n = len(who)
        self.producer = Producer(
            {**client_config(kafka), "linger.ms": 1, "enable.idempotence": True}
        )
        self.replies = ReplyWaiter(kafka, topics.topic_replies)
        self.topic = topics.topic_requests
        self.who = who
        self.run = uuid.uuid4().hex[:6]
        self.expected = np.zeros(n, dtype=np.int64)
        self.produced_at = np.full(n, np.nan)
        self.delays = np.full(n, np.nan)
        self.request_ms: list[float] = []
        self.retries = 0
        self._asked: dict[str, tuple[int, float]] = {}  # request id -> (i, sent)
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._end = float("inf")

    def ask(self, i: int, attempt: int) -> None:
        rid = f"{self.run}-{i}-{attempt}"
        request = RecommendRequest(request_id=rid, user_id=self.who[i], k=10)
        with self._lock:
            self._asked[rid] = (i, time.perf_counter())
        self.producer.produce(self.topic, key=self.who[i], value=request.model_dump_json())

    def collect(self) -> None:
        while not (
            self._done.is_set()
            and (np.isfinite(self.delays).all() or time.perf_counter() > self._end)
        ):
            for reply in self.replies.drain_replies(0.1):
                self._on_reply(reply)
            self.producer.poll(0)

    def _on_reply(self, reply: Reply) -> None:
        now = time.perf_counter()
        with self._lock:
            asked = self._asked.pop(reply.request_id, None)
        if asked is None:
            return  # warm-up, or a duplicate
        i, sent = asked
        self.request_ms.append((now - sent) * 1000)
        if np.isfinite(self.delays[i]):
            return
        if (reply.history_events or 0) >= self.expected[i]:
            self.delays[i] = (now - self.produced_at[i]) * 1000
        else:
            self.retries += 1
            self.ask(i, int(reply.request_id.rsplit("-", 1)[1]) + 1)

    def finish(self, collector: threading.Thread) -> None:
        self.producer.flush(30)
        self._end = time.perf_counter() + DRAIN_S
        self._done.set()
        collector.join()
        self.replies.close()


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"p50": None, "p90": None, "p99": None, "max": None}
    out: dict[str, float | None] = {
        f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 90, 99)
    }
    out["max"] = round(float(values.max()), 1)
    return out
