"""The serving loop: consume a batch, answer it, write Redis and Kafka, then commit.

At-least-once: offsets are committed only after both sinks acknowledged the batch. When a write
fails, the consumer seeks back to the batch's first offsets and the batch is served again after a
backoff, so nothing is lost; a reply may then be written twice (same request_id, harmless).
A stop request (SIGTERM/SIGINT) only sets an event: the current batch finishes and commits first.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import redis
import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from schemas.topics import ensure_topics, topic_specs
from worker.answer import RawEvent, answer_batch
from worker.index_store import IndexStore, LoadedVersion
from worker.settings import WorkerSettings
from worker.sinks import KafkaSink, RedisSink, SinkError
from worker.version_source import version_source

log = structlog.get_logger(__name__)


def consumer_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
    return {
        **kafka_conf,
        "group.id": settings.group_id,
        "client.id": settings.worker_id,
        "enable.auto.commit": False,  # we commit after the results are written, never before
        "auto.offset.reset": "earliest",  # a new group must not skip requests already waiting
        "partition.assignment.strategy": "cooperative-sticky",
    }


def producer_config(kafka_conf: dict[str, str]) -> dict[str, object]:
    return {**kafka_conf, "enable.idempotence": True, "linger.ms": 5}


class Worker:
    def __init__(
        self, settings: WorkerSettings, kafka_conf: dict[str, str], redis_url: str
    ) -> None:
        self.settings = settings
        self._kafka_conf = kafka_conf
        self._redis_url = redis_url
        self.served = 0
        self.dead_lettered = 0

    def run(self, stop: threading.Event) -> None:
        s = self.settings
        ensure_topics(self._kafka_conf, topic_specs(s))
        store = IndexStore(
            version_source(s.storage, s.cache_dir, s.storage_options),
            poll_interval_s=s.index_poll_interval_s,
            checksums=s.verify_checksums,
        )
        store.start()
        consumer = Consumer(consumer_config(s, self._kafka_conf))
        producer = Producer(producer_config(self._kafka_conf))
        redis_sink = RedisSink(redis.Redis.from_url(self._redis_url))
        kafka_sink = KafkaSink(producer, s.topic_replies, s.topic_dead_letters)
        try:
            if _wait_for_index(store, stop, s.index_poll_interval_s) is None:
                return
            consumer.subscribe([s.topic_requests], on_assign=_on_assign, on_revoke=_on_revoke)
            log.info(
                "worker_started", worker_id=s.worker_id, group=s.group_id, topic=s.topic_requests
            )
            while not stop.is_set():
                messages = consumer.consume(num_messages=s.batch_size, timeout=s.poll_timeout_s)
                events = _events(messages)
                if not events:
                    continue
                version = store.current()
                assert version is not None  # _wait_for_index returned one
                self._serve(consumer, events, version, redis_sink, kafka_sink, stop)
        finally:
            consumer.close()  # leaves the group now, so partitions move without a session timeout
            producer.flush(10)
            store.stop()
            log.info(
                "worker_stopped",
                worker_id=s.worker_id,
                served=self.served,
                dead_lettered=self.dead_lettered,
            )

    def _serve(
        self,
        consumer: Consumer,
        events: list[RawEvent],
        version: LoadedVersion,
        redis_sink: RedisSink,
        kafka_sink: KafkaSink,
        stop: threading.Event,
    ) -> None:
        outcome = answer_batch(events, version, self.settings.worker_id)
        try:
            redis_sink.write(outcome.replies)
            kafka_sink.write(outcome.replies, outcome.dead_letters)
        except SinkError as exc:
            log.error("batch_not_written", reason=str(exc), size=len(events))
            _rewind(consumer, events)
            stop.wait(self.settings.retry_backoff_s)
            return
        _commit(consumer, events)
        self.served += len(outcome.replies)
        self.dead_lettered += len(outcome.dead_letters)
        for dead in outcome.dead_letters:
            log.warning(
                "dead_letter",
                reason=dead.reason,
                request_id=dead.request_id,
                partition=dead.source_partition,
                offset=dead.source_offset,
            )


def _wait_for_index(
    store: IndexStore, stop: threading.Event, interval_s: float
) -> LoadedVersion | None:
    """Requests are not consumed before a version can answer them (they wait in Kafka)."""
    logged = False
    while not stop.is_set():
        version = store.current()
        if version is not None:
            return version
        if not logged:
            log.info("waiting_for_index")
            logged = True
        store.check_latest()
        stop.wait(interval_s)
    return None


def _events(messages: Sequence[Message]) -> list[RawEvent]:
    events = []
    for m in messages:
        if m.error() is not None:
            log.warning("consume_error", error=str(m.error()))
            continue
        events.append(RawEvent(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
    return events


def _next_offsets(events: Sequence[RawEvent], *, first: bool) -> list[TopicPartition]:
    pick: dict[tuple[str, int], int] = {}
    for e in events:
        tp = (e.topic, e.partition)
        offset = e.offset if first else e.offset + 1
        pick[tp] = min(pick.get(tp, offset), offset) if first else max(pick.get(tp, 0), offset)
    return [TopicPartition(t, p, o) for (t, p), o in pick.items()]


def _commit(consumer: Consumer, events: Sequence[RawEvent]) -> None:
    try:
        consumer.commit(offsets=_next_offsets(events, first=False), asynchronous=False)
    except KafkaException as exc:
        # Typically a rebalance took the partition away: its new owner re-serves from the last
        # commit (at-least-once), so this is logged, not fatal.
        log.warning("commit_failed", error=str(exc.args[0]))


def _rewind(consumer: Consumer, events: Sequence[RawEvent]) -> None:
    for tp in _next_offsets(events, first=True):
        try:
            consumer.seek(tp)
        except KafkaException as exc:  # partition revoked meanwhile: its next owner re-serves it
            log.warning("rewind_failed", partition=tp.partition, error=str(exc.args[0]))


def _on_assign(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
    log.info("partitions_assigned", partitions=[p.partition for p in partitions])


def _on_revoke(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
    log.info("partitions_revoked", partitions=[p.partition for p in partitions])
