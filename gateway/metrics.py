"""Prometheus metrics of one gateway replica (GET /metrics), in a registry of its own (several
gateways in one process, as in tests, do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.bridge import KafkaBridge

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self, bridge: KafkaBridge) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "annrec_gateway_requests",
            "HTTP requests answered, by route and HTTP status code",
            ["route", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "annrec_gateway_request_latency_seconds",
            "From the body read to the reply answered (produce, worker, reply topic)",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # The gateway's own hop: a reply read off the topic by the reply thread until the
        # request waiting for it runs again on the event loop.
        self.handover = Histogram(
            "annrec_gateway_reply_handover_seconds",
            "From a reply read off the reply topic to its waiting request resumed",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.timeouts = Counter(
            "annrec_gateway_timeouts",
            "Requests answered 504: no reply within the deadline",
            registry=r,
        )
        waiting = Gauge(
            "annrec_gateway_waiting_requests",
            "Requests waiting for their reply now (0 when idle: every waiter is removed)",
            registry=r,
        )
        waiting.set_function(lambda: len(bridge.pending))
        routed = Gauge(
            "annrec_gateway_replies_routed",
            "Replies read from the reply topic that a request of this replica waited for",
            registry=r,
        )
        routed.set_function(lambda: bridge.counters.replies_routed)
        ignored = Gauge(
            "annrec_gateway_replies_ignored",
            "Replies read and dropped: for another replica, or after their request gave up",
            registry=r,
        )
        ignored.set_function(lambda: bridge.counters.replies_ignored)
