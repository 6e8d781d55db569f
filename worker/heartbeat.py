"""The worker's entry in Redis for `annrec status`: refreshed every second, deleted at shutdown;
a crashed worker's entry expires. A Redis error here is logged, never fatal."""

from __future__ import annotations

import json
import threading
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
    """Beats from a thread of its own, so a slow or frozen Redis never holds up the serving loop
    (nor absorbs an outage the loop's own writes should see)."""

    def __init__(
        self,
        client: redis.Redis,
        worker_id: str,
        ttl_s: int,
        status: Callable[[], dict[str, Any] | None],
    ) -> None:
        self._client, self._ttl_s, self._status = client, ttl_s, status
        self._key = keys.worker_key(worker_id)
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        """No more beats, and the entry removed: `annrec status` drops this worker at once."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        try:
            self._client.delete(self._key)
        except redis.RedisError as exc:
            log.warning("heartbeat_failed", error=str(exc))

    def beat(self) -> None:
        """Write the status document now (nothing while `status` has none: not serving yet)."""
        doc = self._status()
        if doc is None:
            return
        at = time.time()
        doc = {**doc, "uptime_s": round(at - self.started, 1), "at": at}
        try:
            self._client.set(self._key, json.dumps(doc), ex=self._ttl_s)
        except redis.RedisError as exc:
            log.warning("heartbeat_failed", error=str(exc))

    def _run(self) -> None:
        interval = min(EVERY_S, self._ttl_s / 3)
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(interval)
