"""From an interaction produced to the first `recommend` reply that reflects it, through one real
worker, Kafka and Redis, under load (issue 23's target: p99 <= 1 s at 500 events/s + 500
requests/s).

Each event is followed at once by a request for the same user (so requests run at the event
rate). The worker reads both topics with one consumer, but a request may still be answered
before the event is written (another partition, another fetch): a reply tells how many history
events it used (`history_events`), and one that does not count the event yet makes the client
ask again at once. The delay of an event is the time from its produce() call to the arrival of
the first reply counting it. Users are the version's own (factors trained, plus the history);
their ids carry the run's tag, so their Redis histories start empty, and each user gets fewer
events than the history's length, so `history_events` counts every one.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
from adapters.reply_topic import replies_from_now
from adapters.topics import ensure_topics, topic_specs
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.events import Interaction, RecommendRequest, Reply
from schemas.settings import CommonSettings, prefixed_topics, topic_env
from tools import processes, services
from tools.client import wait_for_workers

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
        env = {
            **os.environ,
            "ANNREC_KAFKA_BOOTSTRAP": svc.kafka["bootstrap.servers"],
            "ANNREC_REDIS_URL": svc.redis_url,
            "ANNREC_STORAGE": str(storage),
            **topic_env(topics),
            "ANNREC_GROUP_ID": f"bench{tag}",
            "ANNREC_METRICS_PORT": "-1",
            "ANNREC_HISTORY_LENGTH": str(history_length),
        }
        log = (storage / "worker.log").open("ab")
        worker = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "--log-level", "WARNING", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_workers(svc.kafka, topics.topic_requests, topics.topic_replies, 10, 1)
            figures = _load(svc.kafka, topics, users, n_items, rate, duration_s, history_length)
        finally:
            processes.stop([worker])
            log.close()
    return {"items": n_items, "dim": dim, "history_length": history_length, **figures}


def _load(
    kafka: dict[str, str],
    topics: CommonSettings,
    users: np.ndarray,
    n_items: int,
    rate: int,
    duration_s: float,
    history_length: int,
) -> dict[str, Any]:
    n = int(rate * duration_s)
    # Fewer events per user than the history holds: history_events counts every one.
    pool = min(len(users), max(100, 4 * n // max(history_length, 1)))
    run = uuid.uuid4().hex[:6]
    producer = Producer({**client_config(kafka), "linger.ms": 1, "enable.idempotence": True})
    replies = replies_from_now(kafka, topics.topic_replies)
    rng = np.random.default_rng(0)
    who = [str(users[(i * 7919) % pool]) for i in range(n)]
    counts: dict[str, int] = {}
    expected = np.zeros(n, dtype=np.int64)
    produced_at = np.full(n, np.nan)
    asked_at: dict[str, tuple[int, float]] = {}  # request id -> (event, sent)
    delays = np.full(n, np.nan)
    request_ms: list[float] = []
    retries = 0
    lock = threading.Lock()
    done = threading.Event()

    def ask(i: int, attempt: int) -> None:
        rid = f"{run}-{i}-{attempt}"
        request = RecommendRequest(request_id=rid, user_id=who[i], k=10)
        with lock:
            asked_at[rid] = (i, time.perf_counter())
        producer.produce(topics.topic_requests, key=who[i], value=request.model_dump_json())

    def collect() -> None:
        nonlocal retries
        while not (done.is_set() and (np.isfinite(delays).all() or time.perf_counter() > end)):
            first = replies.poll(0.1)
            if first is None:
                continue
            for m in [first, *replies.consume(num_messages=1000, timeout=0)]:
                if m.error() is not None:
                    continue
                now = time.perf_counter()
                reply = Reply.model_validate_json(m.value() or b"")
                with lock:
                    asked = asked_at.pop(reply.request_id, None)
                if asked is None:
                    continue  # warm-up, or a duplicate
                i, sent = asked
                request_ms.append((now - sent) * 1000)
                if np.isfinite(delays[i]):
                    continue
                if (reply.history_events or 0) >= expected[i]:
                    delays[i] = (now - produced_at[i]) * 1000
                else:
                    retries += 1
                    ask(i, int(reply.request_id.rsplit("-", 1)[1]) + 1)
            producer.poll(0)

    end = float("inf")
    collector = threading.Thread(target=collect)
    collector.start()
    start = time.perf_counter() + 0.2
    items = rng.integers(0, n_items, size=n)
    for i in range(n):
        at = start + i / rate
        while (wait := at - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.005))
        user = who[i]
        counts[user] = counts.get(user, 0) + 1
        expected[i] = counts[user]
        event = Interaction(
            user_id=user, item_id=f"i{items[i]}", type="view", timestamp=datetime.now(UTC)
        )
        key, value = interaction_message(event)
        produced_at[i] = time.perf_counter()
        producer.produce(topics.topic_interactions, key=key, value=value)
        ask(i, 0)
        producer.poll(0)
    producer.flush(30)
    end = time.perf_counter() + DRAIN_S
    done.set()
    collector.join()
    replies.close()
    reflected = delays[np.isfinite(delays)]
    return {
        "rate": rate,
        "duration_s": duration_s,
        "events": n,
        "users": pool,
        "reflected": len(reflected),
        "retries": retries,
        "event_to_reflecting_reply_ms": _percentiles(reflected),
        "request_to_reply_ms": _percentiles(np.asarray(request_ms)),
        "delays_ms": [round(float(d), 2) for d in reflected],
    }


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    if not len(values):
        return {"p50": None, "p90": None, "p99": None, "max": None}
    out: dict[str, float | None] = {
        f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 90, 99)
    }
    out["max"] = round(float(values.max()), 1)
    return out
