"""The reply cache (`ANNREC_SERVE_FROM_CACHE`): a step before answering that splits a batch into
requests already answered for this version (hits) and the rest (misses).

Keyed by what was asked, not by who asked, so a repeated request is answered from Redis without
touching the index. Best effort: a failed lookup means computing, never failing the batch. The
entries of freshly computed replies are written by the Redis sink in the same pipeline as the
replies (one round trip, and only once the batch is answered).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import redis
import structlog

from schemas import keys
from schemas.events import Reply, utc_now
from worker.parse import AnyRequest, Parsed

log = structlog.get_logger(__name__)


class CacheEntry(NamedTuple):
    key: str
    value: str
    ttl_s: int


class ReplyCache:
    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s

    def split(
        self, parsed: Sequence[Parsed], version: str
    ) -> tuple[list[tuple[Parsed, Reply]], list[Parsed]]:
        """(hits with their cached reply, addressed to this request; misses to answer)."""
        wanted = [(p, keys.cache_key(version, r)) for p in parsed if (r := _cacheable(p))]
        if not wanted:
            return [], list(parsed)
        try:
            values = self._client.mget([k for _, k in wanted])
        except redis.RedisError as exc:
            log.warning("cache_lookup_failed", error=str(exc))
            return [], list(parsed)
        found = {
            id(p): _addressed(raw, p)
            for (p, _), raw in zip(wanted, values, strict=True)
            if raw is not None
        }
        hits = [(p, found[id(p)]) for p in parsed if id(p) in found]
        return hits, [p for p in parsed if id(p) not in found]

    def entries(
        self, answered: Sequence[Parsed], replies: Sequence[Reply], version: str
    ) -> list[CacheEntry]:
        """Cache entries for the ok replies just computed for `answered`."""
        by_id = {r.request_id: r for r in replies if r.status == "ok" and not r.from_cache}
        out = []
        for p in answered:
            request = _cacheable(p)
            if request is not None and request.request_id in by_id:
                doc = by_id[request.request_id].model_dump_json()
                out.append(CacheEntry(keys.cache_key(version, request), doc, self._ttl_s))
        return out


def _addressed(raw: bytes | str, p: Parsed) -> Reply:
    assert p.request is not None
    return Reply.model_validate_json(raw).model_copy(
        update={"request_id": p.request.request_id, "served_at": utc_now(), "from_cache": True}
    )


def _cacheable(p: Parsed) -> AnyRequest | None:
    # A filter's answer changes with availability updates within a version, and the cache is
    # keyed by version only: filtered requests are always computed.
    if p.request is None or p.request.filter is not None:
        return None
    return p.request
