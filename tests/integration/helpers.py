"""Kafka helpers and an in-thread worker for the integration tests."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from worker.app import Worker
from worker.settings import WorkerSettings


@contextmanager
def running_worker(
    settings: WorkerSettings, kafka_conf: dict[str, str], redis_url: str
) -> Iterator[Worker]:
    """A real Worker in a thread; its exceptions fail the test."""
    worker = Worker(settings, kafka_conf, redis_url)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run(stop)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"worker-{settings.worker_id}")
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "worker did not stop within 60 s"
        if errors:
            raise errors[0]


def produce(kafka_conf: dict[str, str], topic: str, values: list[bytes]) -> None:
    p = Producer(kafka_conf)
    for v in values:
        p.produce(topic, key=b"k", value=v)
    assert p.flush(30) == 0


def consume_all(
    kafka_conf: dict[str, str], topic: str, n: int, timeout_s: float = 60
) -> list[Message]:
    """The first n messages of a topic (all partitions, from the beginning)."""
    c = Consumer(
        {
            **kafka_conf,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
    finally:
        c.close()
    return got


def committed_offsets(
    kafka_conf: dict[str, str], group: str, topic: str, partitions: int
) -> dict[int, int]:
    """The group's committed offset per partition (negative: nothing committed)."""
    c = Consumer({**kafka_conf, "group.id": group, "enable.auto.commit": False})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in tps}


def end_offsets(kafka_conf: dict[str, str], topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({**kafka_conf, "group.id": f"w-{uuid.uuid4().hex}"})
    try:
        return {
            p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        c.close()
