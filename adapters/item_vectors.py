"""The item-vectors topic: items added, changed or removed between builds, read by every worker
(its fresh segment) and by the builder (which folds them into the next version).

Compacted and keyed by item id, like the item-updates topic (adapters/item_updates.py): the
newest event per item is the state. Each worker's reader is its own consumer (no group); the
events a version cannot take are dead-lettered once by the worker group's side consumer
(worker/app.py), not by every reader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adapters.compacted_log import CompactedLog, TopicMissing
from adapters.topics import deliver
from schemas.events import ItemVector, parse_item_vector


def _entry(event: ItemVector) -> tuple[str, ItemVector]:
    return event.item_id, event


@dataclass(frozen=True)
class VectorsSnapshot:
    """The topic's state up to `through` (partition -> next offset): what a build folds in."""

    events: dict[str, ItemVector]
    through: dict[int, int]


class ItemVectorLog(CompactedLog[ItemVector, str, ItemVector]):
    """A reader of the whole item-vectors topic; `state` is what it has read so far."""

    def __init__(self, kafka_conf: Mapping[str, str], topic: str) -> None:
        super().__init__(kafka_conf, topic, parse_item_vector, _entry, "item_vectors")


def read_item_vectors(
    kafka_conf: Mapping[str, str], topic: str, timeout_s: float = 60
) -> VectorsSnapshot:
    """The current state of the topic (the builder folds it into a version); empty when the
    topic does not exist yet."""
    try:
        reader = ItemVectorLog(kafka_conf, topic)
    except TopicMissing:
        return VectorsSnapshot({}, {})
    try:
        return VectorsSnapshot(*reader.replay(timeout_s))
    finally:
        reader.close()


def publish_item_vectors(
    kafka_conf: Mapping[str, str], topic: str, events: list[ItemVector], timeout_s: float = 30
) -> None:
    """Produce item-vector events and wait until the broker has them all."""
    messages = [(e.key, e.model_dump_json()) for e in events]
    deliver(kafka_conf, topic, messages, f"{len(events)} item-vector events", timeout_s)
