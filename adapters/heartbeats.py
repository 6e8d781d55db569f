"""The workers' heartbeat entries in Redis (`annrec:worker:<id>`, TTL'd: a crashed worker drops
out), as `annrec status` and the gateway's /v1/status read them."""

from __future__ import annotations

import json
from typing import Any

import redis

from schemas import keys


def read_heartbeats(client: redis.Redis, group: str) -> list[dict[str, Any]]:
    """The heartbeat documents of the workers of `group`, each with `expires_in_s`, sorted by
    worker id. Raises redis.RedisError; the caller words it (adapters.redis_client)."""
    found = []
    for key in client.scan_iter(match=keys.WORKER_KEY_PATTERN, count=1000):
        raw = client.get(key)
        if raw is None:  # expired between the scan and the read
            continue
        doc: dict[str, Any] = json.loads(raw)
        if doc.get("group") == group:
            doc["expires_in_s"] = client.ttl(key)
            found.append(doc)
    return sorted(found, key=lambda d: str(d["worker_id"]))
