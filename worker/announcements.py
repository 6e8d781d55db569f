"""Follow the index-versions topic: an announcement wakes the IndexStore up early.

Each worker reads the topic on its own (no consumer group: every worker must see every
announcement), from the end: a starting worker reads LATEST anyway.
"""

from __future__ import annotations

import threading
import time
import uuid

import structlog
from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from pydantic import ValidationError

from adapters.kafka_log import client_config
from schemas.events import IndexAnnounced

log = structlog.get_logger(__name__)


class AnnouncementFollower:
    def __init__(self, kafka_conf: dict[str, str], topic: str) -> None:
        self._consumer = Consumer(
            client_config(
                {
                    **kafka_conf,
                    "group.id": f"annrec-announcements-{uuid.uuid4().hex}",  # never committed
                    "enable.auto.commit": False,
                }
            )
        )
        self._consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
        # version -> when it was announced (epoch s), for the announcement-to-serving metric
        self.announced: dict[str, float] = {}
        self._interrupted = threading.Event()

    def wait(self, timeout_s: float) -> bool:
        """Block up to timeout_s (less once interrupted); True if a version was announced
        meanwhile."""
        deadline = time.monotonic() + timeout_s
        msg = None
        while msg is None and not self._interrupted.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            msg = self._consumer.poll(min(left, 0.2))  # short: a stopping worker waits no more
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

    def interrupt(self) -> None:
        """Let a wait() return now (the worker is stopping)."""
        self._interrupted.set()

    def close(self) -> None:
        self._consumer.close()
