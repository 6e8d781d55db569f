"""ANNREC_PROCESSING_GUARANTEE=exactly-once on real Kafka: each batch's replies, dead letters and
input offsets in one transaction, so a read_committed reader of the reply topic sees each reply
once, also while workers are killed with SIGKILL."""

import json
import os
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from index_builder.publish import BuildOptions, publish_version
from schemas.events import RecommendRequest
from tests.cli import annrec
from tests.integration.helpers import produce, running_worker
from tools.chaos.harness import read_topic
from tools.client import ReplyWaiter, send_requests


def test_replies_dead_letters_and_offsets_are_committed_together(
    settings, kafka_conf, services, small_factors
):
    publish_version(small_factors, Path(settings.storage), BuildOptions(n_trees=5, quality=False))
    eos = settings.model_copy(update={"processing_guarantee": "exactly-once"})
    waiter = ReplyWaiter(kafka_conf, settings.topic_replies, read_committed=True)
    with running_worker(eos, kafka_conf, services.redis_url):
        requests = [RecommendRequest(request_id=f"eo-{u}", user_id=f"u{u}") for u in range(20)]
        send_requests(kafka_conf, settings.topic_requests, requests)
        produce(kafka_conf, settings.topic_requests, [b'{"request_id": "eo-bad", "x": 1}'])
        wanted = {r.request_id for r in requests} | {"eo-bad"}
        replies = waiter.wait(wanted, timeout_s=60)
        assert set(replies) == wanted and replies["eo-bad"].status == "error"
    waiter.close()

    committed = read_topic(kafka_conf, settings.topic_replies, read_committed=True)
    ids = [json.loads(v)["request_id"] for v in committed]
    assert sorted(ids) == sorted(wanted)  # each once
    dead = read_topic(kafka_conf, settings.topic_dead_letters, read_committed=True)
    assert [json.loads(v)["request_id"] for v in dead] == ["eo-bad"]

    # The offsets went in the transactions: the group's committed offsets cover every request.
    consumer = Consumer({**kafka_conf, "group.id": settings.group_id})
    try:
        parts = [TopicPartition(settings.topic_requests, p) for p in range(4)]
        done = sum(tp.offset for tp in consumer.committed(parts, timeout=10) if tp.offset > 0)
        ends = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts)
    finally:
        consumer.close()
    assert done == ends == 21


def test_no_duplicate_reply_for_a_read_committed_reader_under_kills(services, tmp_path):
    env = {
        **os.environ,
        "ANNREC_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ANNREC_REDIS_URL": services.redis_url,
        "TMPDIR": str(tmp_path),
    }
    out = tmp_path / "crash.json"
    result = annrec(
        "chaos", "crash", "--quick", "--guarantee", "exactly-once", "--out", str(out), env=env
    )
    assert out.exists(), result.stderr[-3000:]
    crash = json.loads(out.read_text())["scenarios"]["crash"]
    assert crash["params"]["guarantee"] == "exactly-once"
    assert crash["kills"] >= 2
    assert crash["audit"]["lost"] == 0 and crash["audit"]["duplicates"] == 0, crash["audit"]
    assert crash["passed"] and result.returncode == 0
