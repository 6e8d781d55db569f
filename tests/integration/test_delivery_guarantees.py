"""Offsets are committed only after the results are written; a stopped worker loses nothing."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from index_builder.publish import BuildOptions, publish_version
from schemas import keys
from schemas.events import RecommendRequest
from tests.integration.helpers import committed_offsets, produce, running_worker
from tools.client import ReplyWaiter, send_requests


def test_no_offset_is_committed_while_redis_is_down_and_nothing_is_lost(
    settings, kafka_conf, services, small_factors
):
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5))
    request = RecommendRequest(request_id="while-redis-down", user_id="u2", k=4)
    dead_redis = "redis://127.0.0.1:9/0"  # discard port: connection refused
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)

    with running_worker(settings, kafka_conf, dead_redis) as worker:
        produce(kafka_conf, settings.topic_requests, [request.model_dump_json().encode()])
        time.sleep(4)  # several serve -> write fails -> rewind -> retry rounds
        assert worker.served == 0
    parts = keys.REQUEST_PARTITIONS
    assert all(
        off < 0
        for off in committed_offsets(
            kafka_conf, settings.group_id, settings.topic_requests, parts
        ).values()
    )
    assert waiter.wait({request.request_id}, timeout_s=2) == {}

    # Redis is back (a worker with the real URL joins the same group): the request is served.
    with running_worker(settings, kafka_conf, services.redis_url):
        replies = waiter.wait({request.request_id}, timeout_s=60)
    waiter.close()
    assert replies[request.request_id].status == "ok"
    assert (
        sum(
            max(o, 0)
            for o in committed_offsets(
                kafka_conf, settings.group_id, settings.topic_requests, parts
            ).values()
        )
        == 1
    )


def test_cli_worker_serves_and_exits_cleanly_on_sigterm(
    settings, kafka_conf, services, small_factors
):
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5))
    env = {
        **os.environ,
        "ANNREC_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ANNREC_REDIS_URL": services.redis_url,
        "ANNREC_STORAGE": str(settings.storage),
        "ANNREC_TOPIC_REQUESTS": settings.topic_requests,
        "ANNREC_TOPIC_REPLIES": settings.topic_replies,
        "ANNREC_TOPIC_DEAD_LETTERS": settings.topic_dead_letters,
        "ANNREC_GROUP_ID": settings.group_id,
        "ANNREC_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "worker"], env=env, stderr=subprocess.PIPE, text=True
    )
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies)
    try:
        requests = [RecommendRequest(request_id=f"cli-{i}", user_id=f"u{i}", k=3) for i in range(5)]
        send_requests(kafka_conf, settings.topic_requests, requests)
        replies = waiter.wait({r.request_id for r in requests}, timeout_s=60)
        assert len(replies) == 5
    finally:
        waiter.close()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "event='worker_stopped'" in err and "served=5" in err
