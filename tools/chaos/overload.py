"""`annrec chaos overload`: one worker offered twice what it can answer, then its usual load
again. With a default deadline (ANNREC_DEFAULT_DEADLINE_MS) a request that waited past it is
answered `expired` at once instead of computed, so the wait is bounded by the deadline and the
backlog drains once the overload ends.

Phases, by send time: steady (half the measured capacity), overload (`factor` x capacity),
steady again. Per phase: replies by status and the request-to-reply delay; then how long after
the overload ended the delay (p99 per second of send time) came back to its steady value."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import numpy as np

from tools.chaos.harness import Cluster, Load, audit
from tools.client import ReplyWaiter, wait_for_workers
from tools.services import Endpoints

# Costlier requests than the other scenarios' (a wider Annoy search, more results), so one
# worker's capacity stays well within what the load generator sends on the same cores.
SEARCH_K = 20_000
K = 50


def overload(
    svc: Endpoints,
    factor: float = 2.0,
    overload_s: float = 20,
    steady_s: float = 10,
    n_items: int = 20_000,
    deadline_ms: int | None = None,
    slack_s: float = 0.05,
) -> dict[str, Any]:
    """Passes when nothing is lost and the p99 delay of the requests sent during the overload
    is within the default deadline + slack_s."""
    cluster = Cluster.create(svc, n_items)
    if deadline_ms is not None:
        cluster.extra_env["ANNREC_DEFAULT_DEADLINE_MS"] = str(deadline_ms)
    deadline_s = (deadline_ms if deadline_ms is not None else _default_deadline_ms()) / 1000
    cluster.start("w1")
    t = cluster.topics
    n_users = len(cluster.factors.user_ids)
    wait_for_workers(svc.kafka, t.topic_requests, t.topic_replies, n_users, 1)
    capacity = _capacity(cluster, n_users)
    low, high = capacity / 2, capacity * factor
    schedule = _phases([(low, steady_s), (high, overload_s), (low, steady_s)])
    load = Load(
        svc.kafka, t.topic_requests, 0, 0, _payload(n_users), "overload", schedule=schedule
    ).start()
    sent = load.join()
    result, replies, _ = audit(svc.kafka, svc.redis_url, t, sent, wait_s=120)
    cluster.stop_all()

    served: dict[str, tuple[float, str]] = {}
    for r in replies:
        at = r.served_at.timestamp()
        if r.request_id in load.delivered and at < served.get(r.request_id, (np.inf, ""))[0]:
            served[r.request_id] = (at, r.status)
    start = min(ms for _, ms in load.delivered.values()) / 1000
    bounds = (steady_s, steady_s + overload_s)
    phases: dict[str, list[tuple[float, float, str]]] = defaultdict(list)  # (sent, delay, status)
    for rid, (_, ms) in load.delivered.items():
        if rid in served:
            at, status = served[rid]
            offset = ms / 1000 - start
            name = "steady" if offset < bounds[0] else "overload" if offset < bounds[1] else "after"
            phases[name].append((offset, at - ms / 1000, status))
    figures = {name: _phase(rows) for name, rows in phases.items()}
    steady_p99 = figures["steady"]["delay_s"]["p99"] if "steady" in figures else None
    recovered = _recovery_s(phases.get("after", []), bounds[1], steady_p99)
    overload_p99 = figures.get("overload", {}).get("delay_s", {}).get("p99")
    return {
        "scenario": "overload",
        "params": {
            "factor": factor,
            "overload_s": overload_s,
            "steady_s": steady_s,
            "n_items": n_items,
            "deadline_s": deadline_s,
            "slack_s": slack_s,
            "request": f"recommend user_id k={K} search_k={SEARCH_K}",
        },
        "capacity_per_s": round(capacity, 1),
        "audit": result.as_dict(),
        "phases": figures,
        "overload_p99_s": overload_p99,
        "recovered_after_s": recovered,
        "passed": result.lost == 0
        and overload_p99 is not None
        and overload_p99 <= deadline_s + slack_s,
    }


def _default_deadline_ms() -> int:
    from worker.settings import WorkerSettings

    default: int = WorkerSettings.model_fields["default_deadline_ms"].default
    return default


def _payload(n_users: int):  # noqa: ANN202 - a closure like harness.recommend_payload
    def make(i: int, rid: str) -> bytes:
        user = f"u{(i * 7919) % n_users}"
        doc = {"request_id": rid, "kind": "recommend", "user_id": user, "k": K}
        return json.dumps(doc | {"search_k": SEARCH_K}).encode()

    return make


def _capacity(cluster: Cluster, n_users: int, n: int = 600) -> float:
    """Requests/s one worker answers from a backlog: n requests sent at once (with a deadline
    far away), timed from the first reply to the last."""
    t = cluster.topics
    waiter = ReplyWaiter(cluster.svc.kafka, t.topic_replies)
    make = _payload(n_users)
    patient = {
        f"cap-{i}": json.loads(make(i, f"cap-{i}")) | {"deadline_ms": 600_000} for i in range(n)
    }
    load = Load(
        cluster.svc.kafka,
        t.topic_requests,
        0,
        0,
        lambda i, rid: json.dumps(patient[rid]).encode(),
        "cap",
        schedule=[0.0] * n,
    ).start()
    load.join()
    got = waiter.wait(set(patient), timeout_s=120)
    waiter.close()
    times = sorted(r.served_at.timestamp() for r in got.values())
    if len(times) < n // 2 or times[-1] <= times[0]:
        raise RuntimeError(f"capacity not measured: {len(times)} of {n} replies")
    time.sleep(1.0)
    return (len(times) - 1) / (times[-1] - times[0])


def _phases(phases: list[tuple[float, float]]) -> list[float]:
    """Send times (s from the start) of requests at each (rate, duration) in turn."""
    out: list[float] = []
    t0 = 0.0
    for rate, duration in phases:
        out += [t0 + i / rate for i in range(int(rate * duration))]
        t0 += duration
    return out


def _phase(rows: list[tuple[float, float, str]]) -> dict[str, Any]:
    delays = np.array([d for _, d, _ in rows])
    statuses: dict[str, int] = defaultdict(int)
    for _, _, status in rows:
        statuses[status] += 1
    return {
        "n": len(rows),
        "statuses": dict(statuses),
        "delay_s": {
            "p50": round(float(np.percentile(delays, 50)), 3),
            "p99": round(float(np.percentile(delays, 99)), 3),
            "max": round(float(delays.max()), 3),
        },
    }


def _recovery_s(
    after: list[tuple[float, float, str]], ended: float, steady_p99: float | None
) -> float | None:
    """Seconds from the end of the overload to the first second (of send time) from which
    every second's p99 delay is within 50 ms of the steady p99 (or 2x it); None: never."""
    if steady_p99 is None or not after:
        return None
    bound = max(steady_p99 * 2, steady_p99 + 0.05)
    per_second: dict[int, list[float]] = defaultdict(list)
    for sent, delay, _ in after:
        per_second[int(sent - ended)].append(delay)
    seconds = sorted(per_second)
    for i, sec in enumerate(seconds):
        if all(np.percentile(per_second[s], 99) <= bound for s in seconds[i:]):
            return float(sec)
    return None
