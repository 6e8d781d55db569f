"""Each user's recent interactions, kept in Redis and shared by every worker.

One sorted set per user (schemas.keys.history_key): score the event's timestamp, member the
event itself (its identity, item and weight, as JSON). Writes are idempotent: ZADD NX of the same
member changes nothing, and an event that the bounds trimmed is trimmed again when it is
replayed, so a batch served again after a crash (at-least-once) or a producer's retry counts
each event once. Each write trims the set to the newest `max_length` events not older than
`max_age_s` and sets its TTL to max_age_s (an idle user's history expires); reads apply the age
bound again, so an event ages out even when no later write trims it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

import redis

from query_engine.personalize import HistoryEvent
from schemas import keys
from schemas.events import Interaction
from worker.sinks import SinkError


def member(event: Interaction) -> str:
    """The set member of an event: equal for two deliveries of the same event."""
    return json.dumps([event.identity, event.item_id, event.weight], separators=(",", ":"))


def history_event(raw: bytes | str, score: float) -> HistoryEvent:
    _identity, item_id, weight = json.loads(raw)
    return HistoryEvent(timestamp=score, item_id=str(item_id), weight=float(weight))


class RedisHistory:
    def __init__(self, client: redis.Redis, max_length: int, max_age_s: int) -> None:
        self._client = client
        self.max_length = max_length
        self.max_age_s = max_age_s

    def write(self, events: Sequence[Interaction], now: float | None = None) -> int:
        """Add the events and trim each touched user's history, in one transaction (a reader
        never sees a set over its bounds); SinkError when Redis did not take it. Returns how
        many were new (the others were already there: delivered again)."""
        if not events:
            return 0
        oldest = (time.time() if now is None else now) - self.max_age_s
        by_user: dict[str, dict[str, float]] = defaultdict(dict)
        for e in events:
            by_user[e.user_id][member(e)] = e.timestamp.timestamp()
        pipe = self._client.pipeline(transaction=True)
        for user_id, members in by_user.items():
            key = keys.history_key(user_id)
            pipe.zadd(key, members, nx=True)
            pipe.zremrangebyscore(key, "-inf", f"({oldest}")
            pipe.zremrangebyrank(key, 0, -self.max_length - 1)
            pipe.expire(key, self.max_age_s)
        try:
            results = pipe.execute()
        except redis.RedisError as exc:
            raise SinkError(f"redis history write failed: {exc}") from exc
        return int(sum(results[::4]))  # each user's ZADD: the members added

    def read(
        self, user_ids: Iterable[str], now: float | None = None
    ) -> dict[str, list[HistoryEvent]]:
        """The recent events of each user that has some, oldest first (one round trip)."""
        users = sorted(set(user_ids))
        if not users:
            return {}
        oldest = (time.time() if now is None else now) - self.max_age_s
        pipe = self._client.pipeline(transaction=False)
        for user_id in users:
            pipe.zrangebyscore(keys.history_key(user_id), oldest, "+inf", withscores=True)
        try:
            found = pipe.execute()
        except redis.RedisError as exc:
            raise SinkError(f"redis history read failed: {exc}") from exc
        out = {}
        for user_id, rows in zip(users, found, strict=True):
            if rows:
                events = [history_event(raw, score) for raw, score in rows]
                out[user_id] = events[-self.max_length :]
        return out
