"""Prometheus metrics and the health endpoint of one worker (GET /metrics, GET /health).

Each Worker has its own registry, so several workers in one process (tests) do not collide.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from worker.answer import Outcome
from worker.index_store import Serving

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "annrec_requests", "Requests handled", ["kind", "outcome"], registry=r
        )
        self.latency = Histogram(
            "annrec_request_latency_seconds",
            "Per request: queue (Kafka timestamp to consume), compute, write (batch's sinks)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.dead_letters = Counter("annrec_dead_letters", "Events sent to the DLQ", registry=r)
        self.batch_size = Histogram(
            "annrec_batch_size", "Messages per consumed batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.write_failures = Counter(
            "annrec_write_failures",
            "Batches whose results could not be written (retried, not committed)",
            registry=r,
        )
        self.cache_hits = Counter("annrec_cache_hits", "Replies served from Redis", registry=r)
        self.fresh_items = Gauge(
            "annrec_fresh_items",
            "Fresh segment: items upserted, changed or removed since the version's build",
            registry=r,
        )
        self.fresh_events = Counter(
            "annrec_item_vector_events",
            "Item-vectors events applied to the fresh segment, or skipped as refused",
            ["result"],  # upsert | removal | refused
            registry=r,
        )
        self.build_overdue = Gauge(
            "annrec_build_overdue",
            "1 while the fresh segment is past ANNREC_FRESH_MAX_ITEMS: a build should fold it in",
            registry=r,
        )
        self.swaps = Counter("annrec_index_swaps", "Index versions swapped in", registry=r)
        self.refusals = Counter("annrec_index_refusals", "Index versions refused", registry=r)
        self.version = Gauge(
            "annrec_index_version_info", "1 for the version being served", ["version"], registry=r
        )
        self.version_created = Gauge(
            "annrec_index_created_timestamp_seconds",
            "Creation time of the version being served",
            registry=r,
        )
        self.last_poll = Gauge(
            "annrec_last_poll_timestamp_seconds", "Last consumer poll", registry=r
        )
        self.lag = Gauge(
            "annrec_consumer_lag",
            "Requests waiting in an assigned partition (high watermark - position)",
            ["partition"],
            registry=r,
        )
        self.item_updates = Counter(
            "annrec_item_updates",
            "Item updates (availability) read from the item-updates topic",
            ["result"],  # applied | unchanged | invalid
            registry=r,
        )
        self.interactions = Counter(
            "annrec_interactions",
            "Interaction events read from the interactions topic",
            ["result"],  # new | repeated (already in the history: a replay) | invalid
            registry=r,
        )
        self.index_age = Gauge(
            "annrec_index_age_seconds", "Age of the version being served", registry=r
        )
        self.announce_to_serve = Histogram(
            "annrec_announce_to_serve_seconds",
            "From a version's announcement to this worker serving it",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.queue_wait = Gauge(
            "annrec_queue_wait_seconds",
            "Longest a request of the last batch waited in the topic (its Kafka timestamp to "
            "consume); past the deadline such requests are answered expired",
            registry=r,
        )
        self.shedding = Gauge(
            "annrec_overload_shedding",
            "1 while the worker sheds under sustained overload (requests without deadline_ms "
            "expire past ANNREC_SHED_WAIT_MS)",
            registry=r,
        )
        # Per model and experiment arm (variant "none": no experiment assigned the request), so
        # the two arms of a test can be compared: requests, fallbacks, compute time; which
        # version each arm serves is annrec_model_version_info (live recall is per version).
        self.model_requests = Counter(
            "annrec_model_requests",
            "Requests handled per model and experiment arm",
            ["model", "variant", "kind", "outcome"],
            registry=r,
        )
        self.model_fallbacks = Counter(
            "annrec_model_fallbacks",
            "Replies that fell back (cold_start: popular items) per model and experiment arm",
            ["model", "variant", "fallback"],
            registry=r,
        )
        self.model_compute = Histogram(
            "annrec_model_compute_seconds",
            "Per request compute time, per model and experiment arm",
            ["model", "variant"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.model_version = Gauge(
            "annrec_model_version_info",
            "1 per version a worker holds: its model, role (latest, candidate, pinned) and the "
            "experiment arm serving it (none outside experiments)",
            ["model", "version", "role", "variant"],
            registry=r,
        )
        self.stalled = Gauge(
            "annrec_stalled_partitions",
            "Assigned partitions with requests waiting and no progress for the stall window",
            registry=r,
        )

    def record_batch(self, size: int, outcome: Outcome, write_s: float) -> None:
        self.batch_size.observe(size)
        waits = [s.queue_s for s in outcome.served if s.queue_s is not None]
        if waits:
            self.queue_wait.set(max(max(waits), 0.0))
        for s in outcome.served:
            self.requests.labels(s.kind, s.outcome).inc()
            if s.model:  # a parsed request: its model and arm
                variant = s.variant or "none"
                self.model_requests.labels(s.model, variant, s.kind, s.outcome).inc()
                self.model_compute.labels(s.model, variant).observe(s.compute_s)
                if s.fallback:
                    self.model_fallbacks.labels(s.model, variant, s.fallback).inc()
            self.latency.labels("compute").observe(s.compute_s)
            self.latency.labels("write").observe(write_s)
            if s.queue_s is not None:
                self.latency.labels("queue").observe(max(s.queue_s, 0.0))
        self.dead_letters.inc(len(outcome.dead_letters))

    def holding(
        self, now: set[tuple[str, str, str, str]], before: set[tuple[str, str, str, str]]
    ) -> None:
        """annrec_model_version_info follows the snapshot: rows gone removed, new ones set."""
        for row in before - now:
            self.model_version.remove(*row)
        for row in now - before:
            self.model_version.labels(*row).set(1)

    def serving(self, version: str, created_at: float, previous: str | None) -> None:
        if previous is not None:
            self.version.remove(previous)
            self.swaps.inc()
        self.version.labels(version).set(1)
        self.version_created.set(created_at)


def held_versions(serving: Serving) -> set[tuple[str, str, str, str]]:
    """(model, version, role, variant) of every version a snapshot holds."""
    rows = set()
    for model, m in serving.models.items():
        arms = {
            a.version or m.latest.version: a.name
            for a in (m.experiment.arms if m.experiment else [])
        }
        for name in m.held:
            role = "latest" if name == m.latest.version else "pinned"
            if m.experiment and name in m.experiment.candidates:
                role = "candidate"
            rows.add((model, name, role, arms.get(name, "none")))
    return rows


class HealthState:
    """What /health reports: unhealthy when no version is loaded, the loop stopped polling, or an
    assigned partition with requests waiting made no progress for the stall window."""

    def __init__(self, max_poll_gap_s: float) -> None:
        self.max_poll_gap_s = max_poll_gap_s
        self.version: str | None = None
        self.last_poll = 0.0
        self.stalled: list[int] = []

    def polled(self) -> None:
        self.last_poll = time.monotonic()

    def report(self) -> tuple[bool, dict[str, object]]:
        gap = time.monotonic() - self.last_poll
        ok = self.version is not None and gap <= self.max_poll_gap_s and not self.stalled
        return ok, {
            "ok": ok,
            "version": self.version,
            "seconds_since_poll": round(gap, 1),
            "stalled_partitions": self.stalled,
        }


def serve_http(port: int, metrics: WorkerMetrics, health: HealthState) -> ThreadingHTTPServer:
    """Start /metrics and /health on 0.0.0.0:port in a daemon thread (port 0: any free port)."""
    routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
        "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)),
        "/health": lambda: _health(health),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = routes.get(self.path.split("?")[0])
            status, ctype, body = route() if route else (404, "text/plain", b"not found\n")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:  # scrapes are not events worth a line
            return

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def _health(health: HealthState) -> tuple[int, str, bytes]:
    ok, doc = health.report()
    return (200 if ok else 503), "application/json", json.dumps(doc).encode()
