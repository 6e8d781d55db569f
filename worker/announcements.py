"""Follow the index-versions topic: an announcement wakes the IndexStore up early.

Each worker reads the topic on its own (no consumer group: every worker must see every
announcement), from the end: a starting worker reads LATEST anyway.
"""

from __future__ import annotations

import uuid

import structlog
from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from pydantic import ValidationError

from schemas.events import IndexAnnounced

log = structlog.get_logger(__name__)


class AnnouncementFollower:
    def __init__(self, kafka_conf: dict[str, str], topic: str) -> None:
        self._consumer = Consumer(
            {
                **kafka_conf,
                "group.id": f"annrec-announcements-{uuid.uuid4().hex}",  # never committed
                "enable.auto.commit": False,
            }
        )
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
        # version -> when it was announced (epoch s), for the announcement-to-serving metric
        self.announced: dict[str, float] = {}

    def wait(self, timeout_s: float) -> bool:
        """Block up to timeout_s; True if a version was announced meanwhile."""
        msg = self._consumer.poll(timeout_s)
        if msg is None or msg.error() is not None:
            return False
        try:
            event = IndexAnnounced.model_validate_json(msg.value() or b"")
        except ValidationError as exc:
            log.warning("announcement_unreadable", offset=msg.offset(), errors=exc.error_count())
            return False
        log.info("index_announced", version=event.version)
        self.announced[event.version] = event.announced_at.timestamp()
        while len(self.announced) > 64:  # only recent ones can still be waiting to be served
            del self.announced[next(iter(self.announced))]
        return True

    def close(self) -> None:
        self._consumer.close()
