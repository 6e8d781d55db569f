"""A compacted topic read whole by every reader: the item-updates and item-vectors topics.

Such a topic holds the newest event per key, so reading it from the beginning gives the current
state. Each reader is its own consumer (no group: every worker needs every event). The state
remembers, per partition, the keys in the order of their newest offset, so that what came at or
after given offsets (what a version's build did not fold in) is found without walking it all.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)
from pydantic import ValidationError

from adapters.kafka_log import client_config
from schemas.errors import AnnrecError

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
E = TypeVar("E")


# Between tries of a retriable error reading a partition's end.
RETRY_PAUSE_S = 0.2
# Errors of a partition that has no leader yet: librdkafka does not flag them retriable() on
# the watermark call, so they are named.
_LEADERLESS = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def end_offset(consumer: Consumer, partition: TopicPartition, deadline: float) -> int:
    """The partition's high watermark, retrying what the broker says is retriable until
    `deadline` (time.monotonic): a topic created a moment ago has partitions without a leader
    yet (NOT_LEADER_FOR_PARTITION, LEADER_NOT_AVAILABLE), which made a worker starting beside
    its creation exit. Anything else, or the deadline, raises AnnrecError."""
    while True:
        left = deadline - time.monotonic()
        try:
            _low, high = consumer.get_watermark_offsets(
                partition, timeout=max(left, 0.1), cached=False
            )
            return int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            retriable = isinstance(error, KafkaError) and (
                error.retriable() or error.code() in _LEADERLESS
            )
            if not retriable or time.monotonic() + RETRY_PAUSE_S > deadline:
                raise AnnrecError(
                    f"{partition.topic}[{partition.partition}]: end offset not read: {error}"
                ) from exc
            log.info("end_offset_retry", topic=partition.topic, error=str(error))
            time.sleep(RETRY_PAUSE_S)


class KeyedState(Generic[K, V]):
    """What the topic says, as read so far: the newest value per key, and per partition the
    keys in the order of their newest offset."""

    def __init__(self) -> None:
        self.values: dict[K, V] = {}
        self._by_partition: dict[int, dict[K, int]] = {}  # key -> offset, oldest first
        self.next_offsets: dict[int, int] = {}

    def put(self, partition: int, offset: int, key: K, value: V) -> None:
        self.values[key] = value
        recent = self._by_partition.setdefault(partition, {})
        recent.pop(key, None)  # re-inserted last: the dict stays in offset order
        recent[key] = offset
        self.advance(partition, offset)

    def advance(self, partition: int, offset: int) -> None:
        """Offset `offset` of `partition` was read (an event, a tombstone, or unreadable)."""
        self.next_offsets[partition] = max(self.next_offsets.get(partition, 0), offset + 1)

    def since(self, through: Mapping[int, int]) -> dict[K, V]:
        """The newest value of every key written at or after `through` (partition -> offset;
        a partition not named: from its beginning)."""
        out: dict[K, V] = {}
        for partition, recent in self._by_partition.items():
            start = through.get(partition, 0)
            for key in reversed(recent):
                if recent[key] < start:
                    break  # older ones all are
                out[key] = self.values[key]
        return out


class TopicMissing(AnnrecError):
    """The topic does not exist (yet): nobody has published to it."""


class CompactedLog(Generic[E, K, V]):
    """A reader of the whole topic, from the beginning; `state` is what it has read so far.
    `decode` turns a value into an event (raising ValidationError/ValueError when it cannot),
    `entry` an event into its (key, value) in the state; `name` prefixes the log lines."""

    def __init__(
        self,
        kafka_conf: Mapping[str, str],
        topic: str,
        decode: Callable[[bytes], E],
        entry: Callable[[E], tuple[K, V]],
        name: str,
    ) -> None:
        self._topic = topic
        self._decode = decode
        self._entry = entry
        self._name = name
        self._consumer = Consumer(
            client_config(
                {
                    **kafka_conf,
                    "group.id": f"annrec-{name}-{uuid.uuid4().hex}",  # never committed
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                }
            )
        )
        meta = self._consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            self._consumer.close()
            raise TopicMissing(f"topic {topic} is not available: {meta.error if meta else 'none'}")
        self._partitions = sorted(meta.partitions)
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in self._partitions]
        )
        self.state: KeyedState[K, V] = KeyedState()
        self.read = 0  # events read (valid ones)
        self.invalid = 0

    def replay(self, timeout_s: float = 60.0) -> tuple[dict[K, V], dict[int, int]]:
        """Read up to the end the topic had when called; (the state, partition -> next offset)
        then. Raises AnnrecError when the end is not reached within timeout_s (a worker must not
        serve stale state)."""
        deadline = time.monotonic() + timeout_s
        ends = {
            p: end_offset(self._consumer, TopicPartition(self._topic, p), deadline)
            for p in self._partitions
        }
        while self._behind(ends):
            if time.monotonic() > deadline:
                raise AnnrecError(f"{self._topic}: not replayed to its end in {timeout_s:.0f}s")
            self._take(self._consumer.consume(num_messages=1000, timeout=0.5))
        log.info(f"{self._name}_replayed", topic=self._topic, keys=len(self.state.values))
        return dict(self.state.values), dict(self.state.next_offsets)

    def _behind(self, ends: dict[int, int]) -> bool:
        # The consumer's position, not the last offset read: compaction leaves offset gaps.
        positions = self._consumer.position([TopicPartition(self._topic, p) for p in ends])
        return any(
            max(tp.offset, self.state.next_offsets.get(tp.partition, 0)) < ends[tp.partition]
            for tp in positions
        )

    def poll(self) -> list[E]:
        """The events already fetched in the background (never waits)."""
        got: list[E] = []
        while True:
            messages = self._consumer.consume(num_messages=1000, timeout=0)
            if not messages:
                return got
            got += self._take(messages)

    def _take(self, messages: list[Message]) -> list[E]:
        got = []
        for m in messages:
            error = m.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning(f"{self._name}_error", error=str(error))
                continue
            partition, offset, value = m.partition(), m.offset(), m.value()
            assert partition is not None and offset is not None  # a consumed message has both
            self.state.advance(partition, offset)
            if value is None:
                continue  # a tombstone: compaction's delete marker, nothing to apply
            try:
                event = self._decode(value)
            except (ValidationError, ValueError) as exc:
                self.invalid += 1
                log.warning(f"{self._name}_invalid", offset=offset, reason=str(exc)[:300])
                continue
            key, entry = self._entry(event)
            self.state.put(partition, offset, key, entry)
            self.read += 1
            got.append(event)
        return got

    def close(self) -> None:
        self._consumer.close()
