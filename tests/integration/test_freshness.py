"""Lag, freshness and announcement-to-serving figures of a real worker."""

import json
import time
import urllib.request
from pathlib import Path

from index_builder.announce import announce_version
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.events import RecommendRequest
from tests.integration.helpers import running_worker
from tools.client import ReplyWaiter, send_requests


def _until(check, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_lag_age_and_announcement_delay_are_reported(settings, kafka_conf, services, small_factors):
    storage = Path(settings.storage)
    publish_version(small_factors, storage, BuildOptions(n_trees=5, quality=False))
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    with running_worker(settings, kafka_conf, services.redis_url) as worker:
        requests = [RecommendRequest(request_id=f"f-{u}", user_id=f"u{u}") for u in range(40)]
        send_requests(kafka_conf, settings.topic_requests, requests)
        assert len(waiter.wait({r.request_id for r in requests}, timeout_s=60)) == 40
        m = worker.metrics.registry

        def drained():
            lags = [
                m.get_sample_value("annrec_consumer_lag", {"partition": str(p)}) for p in range(4)
            ]
            return all(lag == 0 for lag in lags)

        assert _until(drained), "every partition measured, nothing waiting"
        age = m.get_sample_value("annrec_index_age_seconds")
        assert age is not None and 0 <= age < 600

        newer = publish_version(
            synth_factors(300, 40, 8, seed=11),
            storage,
            BuildOptions(n_trees=5, quality=False),
            announce=lambda mf: announce_version(kafka_conf, settings.topic_index_versions, mf),
        )
        more = [RecommendRequest(request_id=f"g-{i}", user_id="u1") for i in range(200)]

        def serving_newer():
            send_requests(kafka_conf, settings.topic_requests, more[:1])
            more.pop(0)
            return m.get_sample_value("annrec_announce_to_serve_seconds_count") == 1

        assert _until(serving_newer), "the announced version was served and its delay observed"
        delay = m.get_sample_value("annrec_announce_to_serve_seconds_sum")
        assert 0 <= delay < 30
        health = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/health").read()
        )
        assert (
            health["ok"]
            and health["stalled_partitions"] == []
            and health["version"] == newer.version
        )
    waiter.close()
