"""Redis as both the worker and the tools open it: one line, naming the server and the setting
to check, when it refuses or cannot be reached (never the password)."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis

from schemas import keys


def redis_refusal(redis_url: str, exc: redis.RedisError) -> str:
    """One line naming the Redis that refused and the setting to check."""
    where = urlsplit(redis_url)
    host = f"{where.hostname or 'localhost'}:{where.port or 6379}"
    if isinstance(exc, redis.AuthenticationError):  # a ConnectionError too: checked first
        why = "refused the password"
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        why = "is not reachable"
    else:
        why = f"failed ({type(exc).__name__})"
    return f"Redis at {host} {why}: check {keys.ENV_REDIS_URL} or `annrec stack up`"
