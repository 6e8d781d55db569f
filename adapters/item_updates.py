"""The item-updates topic: real-time availability, read by every worker and by the builder.

The topic is compacted and keyed `<attr>:<item_id>`, so it holds the newest value of every
(attribute, item) pair ever updated: reading it from the beginning gives the current state.
Workers replay it before serving and then apply what arrives between two batches; the builder
replays it to fold the state into the version it publishes. Each reader is its own consumer (no
group: every worker needs every update), so N workers read N copies; updates are small.

An unreadable update is logged and counted, not dead-lettered: every worker reads every update,
so each would dead-letter its own copy. `annrec item-update` validates before producing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)
from pydantic import ValidationError

from adapters.kafka_log import client_config
from adapters.topics import deliver
from schemas.errors import AnnrecError
from schemas.events import ItemUpdate

log = structlog.get_logger(__name__)

Key = tuple[str, str]  # (attribute, item id)
State = dict[Key, bool]


class UpdateState:
    """What the topic says, as read so far: the newest value per (attribute, item), and, per
    partition, the keys in the order of their newest offset, so that what came after a given
    offset (what a version has not folded in) is found without walking everything."""

    def __init__(self) -> None:
        self.values: State = {}
        self._by_partition: dict[int, dict[Key, int]] = {}  # key -> offset, oldest first
        self.next_offsets: dict[int, int] = {}

    def record(self, partition: int, offset: int, update: ItemUpdate) -> None:
        key = (update.attr, update.item_id)
        self.values[key] = update.value
        recent = self._by_partition.setdefault(partition, {})
        recent.pop(key, None)  # re-inserted last: the dict stays in offset order
        recent[key] = offset
        self.advance(partition, offset)

    def advance(self, partition: int, offset: int) -> None:
        """Offset `offset` of `partition` was read (an update, a tombstone, or unreadable)."""
        self.next_offsets[partition] = max(self.next_offsets.get(partition, 0), offset + 1)

    def since(self, through: Mapping[int, int]) -> State:
        """The newest value of every key updated at or after `through` (partition -> offset;
        a partition not named: from its beginning)."""
        out: State = {}
        for partition, recent in self._by_partition.items():
            start = through.get(partition, 0)
            for key in reversed(recent):
                if recent[key] < start:
                    break  # older ones all are
                out[key] = self.values[key]
        return out


@dataclass(frozen=True)
class UpdatesSnapshot:
    """The topic's state up to `through` (partition -> next offset): what a build folds in."""

    state: State
    through: dict[int, int]


class TopicMissing(AnnrecError):
    """The item-updates topic does not exist (yet): nobody has published an update."""


class ItemUpdateLog:
    """A reader of the whole topic, from the beginning; `state` is what it has read so far."""

    def __init__(self, kafka_conf: Mapping[str, str], topic: str) -> None:
        self._topic = topic
        self._consumer = Consumer(
            client_config(
                {
                    **kafka_conf,
                    "group.id": f"annrec-item-updates-{uuid.uuid4().hex}",  # never committed
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
        self.state = UpdateState()
        self.read = 0  # updates read (valid ones)
        self.invalid = 0

    def replay(self, timeout_s: float = 60.0) -> UpdatesSnapshot:
        """Read up to the end the topic had when called; the state then. Raises AnnrecError
        when the end is not reached within timeout_s (a worker must not serve stale state)."""
        ends = {}
        for p in self._partitions:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, p), timeout=timeout_s, cached=False
            )
            ends[p] = high
        deadline = time.monotonic() + timeout_s
        while self._behind(ends):
            if time.monotonic() > deadline:
                raise AnnrecError(f"{self._topic}: not replayed to its end in {timeout_s:.0f}s")
            self._take(self._consumer.consume(num_messages=1000, timeout=0.5))
        log.info("item_updates_replayed", topic=self._topic, updates=len(self.state.values))
        return UpdatesSnapshot(dict(self.state.values), dict(self.state.next_offsets))

    def _behind(self, ends: dict[int, int]) -> bool:
        # The consumer's position, not the last offset read: compaction leaves offset gaps.
        positions = self._consumer.position([TopicPartition(self._topic, p) for p in ends])
        return any(
            max(tp.offset, self.state.next_offsets.get(tp.partition, 0)) < ends[tp.partition]
            for tp in positions
        )

    def poll(self) -> list[ItemUpdate]:
        """The updates already fetched in the background (never waits)."""
        got: list[ItemUpdate] = []
        while True:
            messages = self._consumer.consume(num_messages=1000, timeout=0)
            if not messages:
                return got
            got += self._take(messages)

    def _take(self, messages: list[Message]) -> list[ItemUpdate]:
        got = []
        for m in messages:
            error = m.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("item_updates_error", error=str(error))
                continue
            partition, offset, value = m.partition(), m.offset(), m.value()
            assert partition is not None and offset is not None  # a consumed message has both
            self.state.advance(partition, offset)
            if value is None:
                continue  # a tombstone: compaction's delete marker, nothing to apply
            try:
                update = ItemUpdate.model_validate_json(value)
            except (ValidationError, ValueError) as exc:
                self.invalid += 1
                log.warning("item_update_invalid", offset=offset, reason=str(exc)[:300])
                continue
            self.state.record(partition, offset, update)
            self.read += 1
            got.append(update)
        return got

    def close(self) -> None:
        self._consumer.close()


def read_item_updates(
    kafka_conf: Mapping[str, str], topic: str, timeout_s: float = 60
) -> UpdatesSnapshot:
    """The current state of the topic (the builder folds it into a version); empty when the
    topic does not exist yet."""
    try:
        reader = ItemUpdateLog(kafka_conf, topic)
    except TopicMissing:
        return UpdatesSnapshot({}, {})
    try:
        return reader.replay(timeout_s)
    finally:
        reader.close()


def publish_item_updates(
    kafka_conf: Mapping[str, str], topic: str, updates: list[ItemUpdate], timeout_s: float = 30
) -> None:
    """Produce updates and wait until the broker has them all."""
    messages = [(u.key, u.model_dump_json()) for u in updates]
    deliver(kafka_conf, topic, messages, f"{len(updates)} item updates", timeout_s)
