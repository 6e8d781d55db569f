"""The requests waiting for their reply, by request_id: futures on the event loop, filled by
the bridge's consumer thread. Pure asyncio: no Kafka here.

Every entry is removed by the request that made it (`waiting(...)` is a context manager), on a
reply, a timeout, a cancelled client or an error alike: the `waiting` gauge returns to 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.events import Reply


@dataclass(frozen=True)
class Delivered:
    """A reply as it came off the topic (the exact bytes, answered as they are) and parsed;
    `read_at`: time.perf_counter() when the reply thread read it off the topic."""

    raw: bytes
    reply: Reply
    read_at: float


class AlreadyWaiting(Exception):
    """A request_id someone is already waiting for: its reply could not tell the two apart."""


class UnreadableReply(Exception):
    """A message keyed with a waited request_id that is not a reply."""


class PendingReplies:
    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Delivered]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, request_id: object) -> bool:
        # Read from the consumer thread too: a dict lookup is atomic under the GIL, and an id is
        # registered before its request is produced, so its reply never finds it missing.
        return request_id in self._waiting

    @contextmanager
    def waiting(self, request_id: str) -> Iterator[asyncio.Future[Delivered]]:
        """A future for request_id's reply, removed when the block ends, however it ends."""
        if request_id in self._waiting:
            raise AlreadyWaiting(request_id)
        future: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            yield future
        finally:
            if self._waiting.get(request_id) is future:
                del self._waiting[request_id]

    def deliver(self, messages: Iterable[tuple[str, bytes]], read_at: float | None = None) -> int:
        """Fill the futures of the (request_id, reply bytes) given; on the event loop. Returns
        how many found a waiting request (the rest arrived after it gave up). read_at: when
        they were read off the topic (default: now)."""
        read_at = time.perf_counter() if read_at is None else read_at
        delivered = 0
        for request_id, raw in messages:
            future = self._waiting.get(request_id)
            if future is None or future.done():
                continue
            try:
                future.set_result(Delivered(raw, Reply.model_validate_json(raw), read_at))
            except ValidationError as exc:
                future.set_exception(UnreadableReply(f"reply to {request_id}: {exc}"))
            delivered += 1
        return delivered

    def fail(self, request_id: str, exc: Exception) -> None:
        """The request could not be sent (a delivery failure): its waiter gets `exc`."""
        future = self._waiting.get(request_id)
        if future is not None and not future.done():
            future.set_exception(exc)
