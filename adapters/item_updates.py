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

from collections.abc import Mapping
from dataclasses import dataclass

from adapters.compacted_log import CompactedLog, KeyedState, TopicMissing
from adapters.topics import deliver
from schemas.events import ItemUpdate

Key = tuple[str, str]  # (attribute, item id)
State = dict[Key, bool]


class UpdateState(KeyedState[Key, bool]):
    """The newest value per (attribute, item), as read so far (adapters/compacted_log.py)."""

    def record(self, partition: int, offset: int, update: ItemUpdate) -> None:
        self.put(partition, offset, *_entry(update))


def _entry(update: ItemUpdate) -> tuple[Key, bool]:
    return (update.attr, update.item_id), update.value


@dataclass(frozen=True)
class UpdatesSnapshot:
    """The topic's state up to `through` (partition -> next offset): what a build folds in."""

    state: State
    through: dict[int, int]


class ItemUpdateLog(CompactedLog[ItemUpdate, Key, bool]):
    """A reader of the whole item-updates topic; `state` is what it has read so far."""

    def __init__(self, kafka_conf: Mapping[str, str], topic: str) -> None:
        super().__init__(kafka_conf, topic, ItemUpdate.model_validate_json, _entry, "item_updates")


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
        return UpdatesSnapshot(*reader.replay(timeout_s))
    finally:
        reader.close()


def publish_item_updates(
    kafka_conf: Mapping[str, str], topic: str, updates: list[ItemUpdate], timeout_s: float = 30
) -> None:
    """Produce updates and wait until the broker has them all."""
    messages = [(u.key, u.model_dump_json()) for u in updates]
    deliver(kafka_conf, topic, messages, f"{len(updates)} item updates", timeout_s)
