"""The open-loop load generator of the Kafka benches: requests on a fixed schedule, each reply's
latency from its *scheduled* send (a stalled system cannot hide its queue: coordinated omission).

One `LoadClient` (a producer and a reply consumer) serves every point of a sweep, as a frontend's
long-lived clients would, and its first point is preceded by a warm-up at that point's rate whose
replies are reported apart (`warmup` in the point) and not counted. Why
(benchmarks/results/e2e-tail-diag/: an echo worker at 1,000/s in 10-s windows, each hop
stamped): the first window after a worker starts holds the tail (p99 65-200 ms, most of the
slow replies in its first second), later windows 10-19 ms; a new producer and reply consumer
per window can put more of a window's tail in its first second. A frontend does not reconnect
per second of traffic, and a worker warms once per start; a bench that counts either measures
its own start-up.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Producer

from adapters.kafka_log import client_config
from schemas.settings import CommonSettings
from tools.bench.traffic import MakeRequest
from tools.client import ReplyWaiter

WARMUP_S = 2.0  # the fresh clients' and workers' second of slow replies, and a margin


class LoadClient:
    """A producer of requests and a reader of their replies, kept for a whole sweep."""

    def __init__(
        self,
        kafka: dict[str, str],
        topics: CommonSettings,
        *,
        read_committed: bool = False,
        warmup_s: float = WARMUP_S,
    ) -> None:
        """read_committed: exactly-once workers' replies count once committed. warmup_s: sent
        before the first point at its rate, not counted (0: none)."""
        self._topic = topics.topic_requests
        self._waiter = ReplyWaiter(kafka, topics.topic_replies, read_committed=read_committed)
        self._producer = Producer(
            {**client_config(kafka), "linger.ms": 1, "enable.idempotence": True}
        )
        self._warmup_s = warmup_s

    def __enter__(self) -> LoadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._producer.flush(10)
        self._waiter.close()

    def run(
        self,
        rate: int,
        duration_s: float,
        make_request: MakeRequest,
        max_p99_ms: float,
        on_sent: Callable[[], None] | None = None,
    ) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
        """`rate` requests/s for `duration_s` (request i is make_request(request_id, i)): the
        point's figures and every latency in ms. The first run of a client sends its warm-up
        first, on the same schedule without a pause (requests i = n, n+1, ...: the measured ones
        are the same stream with or without it). `on_sent` runs once the last reply arrived or
        the wait for them ended (e.g. to read a worker's CPU time)."""
        n = int(rate * duration_s)
        n_warm = int(rate * self._warmup_s)
        self._warmup_s = 0.0
        run_id = uuid.uuid4().hex[:6]
        ids = [f"{run_id}-w{j}" for j in range(n_warm)] + [f"{run_id}-{i}" for i in range(n)]
        stream = [n + j for j in range(n_warm)] + list(range(n))
        received: dict[str, float] = {}
        done = threading.Event()
        deadline = float("inf")

        def collect() -> None:
            while not done.is_set() or len(received) < len(ids):
                for rid in self._waiter.drain(0.2):
                    received.setdefault(rid, time.perf_counter())
                if done.is_set() and time.perf_counter() > deadline:
                    return

        collector = threading.Thread(target=collect)
        collector.start()
        scheduled: dict[str, float] = {}
        start = time.perf_counter() + 0.2
        for slot, (rid, i) in enumerate(zip(ids, stream, strict=True)):
            at = start + slot / rate
            while (wait := at - time.perf_counter()) > 0:
                time.sleep(min(wait, 0.005))
            req = make_request(rid, i)
            scheduled[rid] = at
            self._producer.produce(
                self._topic, key=rid.encode(), value=req.model_dump_json().encode()
            )
            self._producer.poll(0)
        self._producer.flush(30)
        measured = ids[n_warm:]
        backlog = sum(1 for r in measured if r not in received)
        deadline = time.perf_counter() + 30.0
        done.set()
        collector.join()
        if on_sent is not None:
            on_sent()

        def latencies(rids: list[str]) -> npt.NDArray[np.float64]:
            return np.array([(received[r] - scheduled[r]) * 1000 for r in rids if r in received])

        lat = latencies(measured)
        point = point_figures(rate, n, lat, backlog, max_p99_ms)
        if n_warm:
            warm = latencies(ids[:n_warm])
            point["warmup"] = {
                "seconds": round(n_warm / rate, 3),
                "sent": n_warm,
                "answered": len(warm),
                "latency_ms": _percentiles(warm),
            }
        return point, lat


def open_loop(
    kafka: dict[str, str],
    topics: CommonSettings,
    rate: int,
    duration_s: float,
    make_request: MakeRequest,
    max_p99_ms: float,
) -> tuple[dict[str, Any], npt.NDArray[np.float64]]:
    """One point with clients of its own and no warm-up: where the thing compared (the
    gateway's HTTP path, tools/bench/e2e_gateway.py) starts its own client per point too."""
    with LoadClient(kafka, topics, warmup_s=0.0) as client:
        return client.run(rate, duration_s, make_request, max_p99_ms)


def _percentiles(lat: npt.NDArray[np.float64]) -> dict[str, float]:
    return (
        {f"p{q}": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)} if len(lat) else {}
    )


def point_figures(
    rate: int, sent: int, lat: npt.NDArray[np.float64], backlog: int, max_p99_ms: float
) -> dict[str, Any]:
    """One rate's figures from its latencies (ms): sustained when every request was answered,
    the backlog at the end of sending was under a second's worth, and p99 <= max_p99_ms."""
    pct = _percentiles(lat)
    ok = len(lat) == sent and backlog <= rate and pct.get("p99", float("inf")) <= max_p99_ms
    return {
        "rate": rate,
        "sent": sent,
        "answered": len(lat),
        "backlog_at_end": backlog,
        "latency_ms": {**pct, "max": round(float(lat.max()), 1) if len(lat) else None},
        "sustained": bool(ok),
    }
