"""The worker's side of Kafka: client settings, batches, and offsets stored, committed and rewound.

At-least-once: a message's offset is stored only after both sinks acknowledged its result, and
only stored offsets are committed (automatically every second, on every partition revocation and
at shutdown). A batch whose write failed is rewound to its first offsets and served again.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from worker.parse import RawEvent
from worker.settings import WorkerSettings

log = structlog.get_logger(__name__)


def consumer_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
    return {
        **kafka_conf,
        "group.id": settings.group_id,
        "client.id": settings.worker_id,
        # Offsets are stored by us, after the results are written, and only stored offsets are
        # committed (every second, and synchronously on revoke and at shutdown).
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",  # a new group must not skip requests already waiting
        "partition.assignment.strategy": "cooperative-sticky",
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": settings.session_timeout_ms,
        **({"group.instance.id": settings.instance_id} if settings.instance_id else {}),
        **settings.consumer_config,
    }


def producer_config(settings: WorkerSettings, kafka_conf: dict[str, str]) -> dict[str, object]:
    return {**kafka_conf, "enable.idempotence": True, "linger.ms": 5, **settings.producer_config}


def next_batch(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Wait for one message, then take whatever else is already fetched, up to max_messages.

    consume(n, timeout) waits for n messages or the whole timeout, so a lone request would wait
    up to poll_timeout_s for company; and its batching changed between releases (2.13.0 returned
    after the first 200 ms slice, confluent-kafka-python #2205). Polling for the first message
    and draining the local queue with timeout 0 answers a lone request at once and still takes
    big batches from a backlog, whatever the release does with a non-zero timeout.
    """
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    if max_messages == 1:
        return [first]
    return [first, *consumer.consume(num_messages=max_messages - 1, timeout=0)]


def raw_events(messages: Sequence[Message]) -> list[RawEvent]:
    events = []
    for m in messages:
        if m.error() is not None:
            log.warning("consume_error", error=str(m.error()))
            continue
        _ts_type, ts = m.timestamp()
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        assert topic is not None and partition is not None and offset is not None  # consumed
        events.append(
            RawEvent(topic, partition, offset, m.key(), m.value(), ts if ts > 0 else None)
        )
    return events


def _next_offsets(events: Sequence[RawEvent], *, first: bool) -> list[TopicPartition]:
    pick: dict[tuple[str, int], int] = {}
    for e in events:
        tp = (e.topic, e.partition)
        offset = e.offset if first else e.offset + 1
        pick[tp] = min(pick.get(tp, offset), offset) if first else max(pick.get(tp, 0), offset)
    return [TopicPartition(t, p, o) for (t, p), o in pick.items()]


def store_offsets(consumer: Consumer, events: Sequence[RawEvent]) -> None:
    try:
        consumer.store_offsets(offsets=_next_offsets(events, first=False))
    except KafkaException as exc:
        # The partition was revoked meanwhile: its next owner re-serves from the last commit
        # (at-least-once), so this is logged, not fatal.
        log.warning("store_offsets_failed", error=str(exc.args[0]))


def commit_stored(consumer: Consumer, why: str) -> None:
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0]
        if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
            return  # nothing stored since the last commit
        log.warning("commit_failed", when=why, error=str(err))
    except RuntimeError:
        return  # consumer already closed


def rewind(consumer: Consumer, events: Sequence[RawEvent]) -> None:
    for tp in _next_offsets(events, first=True):
        try:
            consumer.seek(tp)
        except KafkaException as exc:  # partition revoked meanwhile: its next owner re-serves it
            log.warning("rewind_failed", partition=tp.partition, error=str(exc.args[0]))
