"""The worker's entry in Redis for `annrec status`: refreshed every TTL/3 seconds, deleted at
shutdown; a crashed worker's entry expires. A Redis error here is logged, never fatal."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog

from schemas import keys

log = structlog.get_logger(__name__)

# One small SET a second: cheap, and a count in `annrec status` is never older than this.
EVERY_S = 1.0


class Heartbeat:
    def __init__(self, client: redis.Redis, worker_id: str, ttl_s: int) -> None:
        self._client, self._ttl_s = client, ttl_s
        self._key = keys.worker_key(worker_id)
        self.started = time.time()
        self._next = 0.0

    def beat(self, status: Callable[[], dict[str, Any]]) -> None:
        """Write `status()` when the last write is EVERY_S old (built only then), so the counts
        `annrec status` shows are at most that stale."""
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + min(EVERY_S, self._ttl_s / 3)
        at = time.time()
        doc = {**status(), "uptime_s": round(at - self.started, 1), "at": at}
        try:
            self._client.set(self._key, json.dumps(doc), ex=self._ttl_s)
        except redis.RedisError as exc:
            log.warning("heartbeat_failed", error=str(exc))

    def gone(self) -> None:
        try:
            self._client.delete(self._key)
        except redis.RedisError as exc:
            log.warning("heartbeat_failed", error=str(exc))
