"""A worker whose broker disappears: it says so once, its log stays in the project's format with a
bounded number of connection-failure lines, it exits within 5 s of SIGTERM, and it committed
nothing past what it wrote.

The broker is stopped for real, so this test runs its own local stack (tools/stack.py), not the
session's services.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis
from confluent_kafka import Consumer, KafkaException, TopicPartition

from adapters.topics import ensure_topics, topic_specs
from index_builder.publish import BuildOptions, publish_version
from schemas import keys
from schemas.events import RecommendRequest
from schemas.settings import CommonSettings, prefixed_topics, topic_env
from tests.integration.helpers import committed_offsets
from tools.client import ReplyWaiter, send_requests
from tools.stack import LocalStack

LIBRDKAFKA_LINE = re.compile(r"^%\d\|")  # librdkafka's own stderr format


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    stack = LocalStack(tmp_path_factory.mktemp("broker-loss-stack"))
    # A stack of its own (the session's services must not be stopped): it needs java and Maven,
    # which CI has; failing to start it fails the test rather than skipping it unseen.
    info = stack.up()
    try:
        yield stack, info
    finally:
        stack.down()


def _outside_format(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("ts=")]


def _committed(kafka: dict[str, str], group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets, once the restarted broker has loaded its coordinator."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return committed_offsets(kafka, group, topic, keys.REQUEST_PARTITIONS)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _requests_below(kafka: dict[str, str], topic: str, committed: dict[int, int]) -> list[str]:
    """request_id of every message below the committed offset of its partition."""
    c = Consumer({**kafka, "group.id": f"audit-{uuid.uuid4().hex}", "enable.auto.commit": False})
    ids: list[str] = []
    try:
        for partition, end in committed.items():
            if end <= 0:
                continue
            c.assign([TopicPartition(topic, partition, 0)])
            got = 0
            deadline = time.monotonic() + 30
            while got < end and time.monotonic() < deadline:
                m = c.poll(0.5)
                if m is None or m.error() is not None:
                    continue
                got += 1
                ids.append(RecommendRequest.model_validate_json(m.value() or b"").request_id)
            assert got == end, f"partition {partition}: read {got} of {end}"
    finally:
        c.close()
    return ids


def test_worker_without_its_broker_stays_quiet_and_stops_within_5s(
    own_stack, tmp_path, small_factors
):
    stack, info = own_stack
    kafka = {"bootstrap.servers": info.kafka_bootstrap}
    topics = prefixed_topics(f"t{uuid.uuid4().hex[:8]}")
    ensure_topics(kafka, topic_specs(CommonSettings(**topics)))
    storage = tmp_path / "storage"
    publish_version(small_factors, storage, BuildOptions(n_trees=5, quality=False))
    group = f"g{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **topic_env(CommonSettings(**topics)),
        keys.ENV_KAFKA_BOOTSTRAP: info.kafka_bootstrap,
        keys.ENV_REDIS_URL: info.redis_url,
        "ANNREC_STORAGE": str(storage),
        "ANNREC_GROUP_ID": group,
        "ANNREC_METRICS_PORT": "-1",
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,  # not a terminal: what a log collector gets
        )
    try:
        waiter = ReplyWaiter(kafka, topics["topic_replies"])
        requests = [RecommendRequest(request_id=f"bl-{i}", user_id=f"u{i}", k=3) for i in range(8)]
        send_requests(kafka, topics["topic_requests"], requests)
        assert len(waiter.wait({r.request_id for r in requests}, timeout_s=60)) == 8
        waiter.close()

        # The broker goes away (restart_kafka: stopped, down for 12 s, started again on the same
        # ports and data); the worker is told to stop while it is down.
        restarted = threading.Thread(target=stack.restart_kafka, kwargs={"down_s": 12})
        restarted.start()
        deadline = time.monotonic() + 40
        while info.kafka.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not info.kafka.alive()
        time.sleep(6)  # connection failures pile up
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        exit_s = time.monotonic() - sent
        restarted.join(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    log = log_path.read_text()
    assert worker.returncode == 0, log[-2000:]
    assert exit_s < 5.0, f"exited {exit_s:.1f} s after SIGTERM"
    assert _outside_format(log) == [], "lines outside the key=value format"
    assert not any(LIBRDKAFKA_LINE.match(line) for line in log.splitlines())
    assert log.count("event='kafka_unreachable'") == 1
    assert "check='ANNREC_KAFKA_BOOTSTRAP'" in log
    failures = [line for line in log.splitlines() if "kafka_client_log" in line]
    # 8 s of outage, 5 clients with several connections each: before, ~60 lines a second.
    assert len(failures) <= 20, f"{len(failures)} librdkafka lines"
    assert "event='worker_stopped'" in log and "served=8" in log

    # Committed nothing past what it wrote: every request below a committed offset has its reply
    # in Redis (the group serves the rest again).
    committed = _committed(kafka, group, topics["topic_requests"])
    below = _requests_below(kafka, topics["topic_requests"], committed)
    client = redis.Redis.from_url(info.redis_url)
    assert all(client.exists(keys.reply_key(rid)) for rid in below)
    assert set(below) <= {r.request_id for r in requests}


def test_status_off_a_terminal_prints_no_librdkafka_line(own_stack, tmp_path):
    _stack, info = own_stack
    env = {
        **os.environ,
        keys.ENV_KAFKA_BOOTSTRAP: info.kafka_bootstrap,
        keys.ENV_REDIS_URL: info.redis_url,
        "ANNREC_STORAGE": str(tmp_path / "storage"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "status"],
        env=env,
        capture_output=True,  # neither stream a terminal
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for line in (done.stdout + done.stderr).splitlines():
        assert not LIBRDKAFKA_LINE.match(line), line
    assert _outside_format(done.stderr) == [], done.stderr
