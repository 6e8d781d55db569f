import json
import urllib.error
import urllib.request

import pytest

from worker.answer import Outcome, Served
from worker.metrics import HealthState, WorkerMetrics, serve_http


def test_health_needs_a_version_and_a_recent_poll(monkeypatch):
    import types

    from worker import metrics

    now = [1000.0]  # a clock that moves only when told, instead of sleeping past the gap
    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    health = HealthState(max_poll_gap_s=0.05)
    assert health.report()[0] is False  # nothing loaded yet
    health.version = "v"
    health.polled()
    now[0] += 0.05
    assert health.report()[0] is True
    now[0] += 0.05
    ok, doc = health.report()
    assert ok is False and doc["seconds_since_poll"] == 0.1


def test_http_endpoints_serve_metrics_and_health_status():
    metrics, health = WorkerMetrics(), HealthState(max_poll_gap_s=30)
    metrics.record_batch(
        2,
        Outcome(
            served=[
                Served("recommend", "ok", 0.5, 0.001),
                Served("similar_items", "expired", None, 0.0),
            ]
        ),
        0.01,
    )
    server = serve_http(0, metrics, health)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(f"{base}/health")
        assert unhealthy.value.code == 503
        health.version = "v1"
        health.polled()
        assert json.loads(urllib.request.urlopen(f"{base}/health").read())["version"] == "v1"
        text = urllib.request.urlopen(f"{base}/metrics").read().decode()
        assert 'annrec_requests_total{kind="similar_items",outcome="expired"} 1.0' in text
        assert 'annrec_request_latency_seconds_count{stage="queue"} 1.0' in text
        assert "annrec_batch_size_sum 2.0" in text
        assert "annrec_queue_wait_seconds 0.5" in text  # the longest wait of the batch
    finally:
        server.shutdown()


def test_serving_a_new_version_replaces_the_version_label():
    metrics = WorkerMetrics()
    metrics.serving("v1", 100.0, None)
    metrics.serving("v2", 200.0, "v1")
    samples = {s.labels.get("version"): s.value for s in metrics.version.collect()[0].samples}
    assert samples == {"v2": 1.0}
    assert metrics.swaps._value.get() == 1
