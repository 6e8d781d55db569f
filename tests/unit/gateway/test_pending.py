"""The waiting requests: every entry is removed however its request ends."""

from __future__ import annotations

import asyncio

import pytest

from gateway.pending import AlreadyWaiting, PendingReplies, UnreadableReply
from schemas.events import Reply

REPLY = Reply(request_id="r1", status="ok", worker_id="w").model_dump_json().encode()


def test_a_reply_reaches_its_waiter_and_the_entry_goes():
    async def run() -> None:
        pending = PendingReplies()
        with pending.waiting("r1") as future:
            assert "r1" in pending and len(pending) == 1
            assert pending.deliver([("other", b"{}"), ("r1", REPLY)], read_at=12.5) == 1
            delivered = await future
        assert delivered.raw == REPLY and delivered.reply.request_id == "r1"
        assert delivered.read_at == 12.5  # when the reply thread read it: the hand-over's start
        assert len(pending) == 0 and "r1" not in pending

    asyncio.run(run())


def test_timeouts_cancellations_and_failures_leave_nothing_waiting():
    async def wait(pending: PendingReplies, rid: str, timeout_s: float) -> None:
        with pending.waiting(rid) as future:
            await asyncio.wait_for(future, timeout_s)

    async def run() -> None:
        pending = PendingReplies()
        tasks = [
            asyncio.ensure_future(wait(pending, f"r{i}", 0.01 if i in (1, 3) else 10))
            for i in range(10)
        ]
        await asyncio.sleep(0)  # every task registered
        assert len(pending) == 10
        pending.fail("r0", RuntimeError("not delivered"))
        tasks[2].cancel()  # a client that went away
        results = await asyncio.gather(*tasks[:4], return_exceptions=True)
        assert [type(r) for r in results] == [
            RuntimeError,  # r0: its delivery failed
            TimeoutError,  # r1
            asyncio.CancelledError,  # r2: the client went away
            TimeoutError,  # r3
        ]
        assert len(pending) == 6
        for t in tasks[4:]:
            t.cancel()
        await asyncio.gather(*tasks[4:], return_exceptions=True)
        assert len(pending) == 0

    asyncio.run(run())


def test_a_reply_after_its_request_gave_up_is_ignored():
    async def run() -> None:
        pending = PendingReplies()
        with pending.waiting("r1"):
            pass
        assert pending.deliver([("r1", REPLY)]) == 0

    asyncio.run(run())


def test_an_id_already_waited_for_is_refused_without_disturbing_the_first():
    async def run() -> None:
        pending = PendingReplies()
        with pending.waiting("r1") as first:
            with pytest.raises(AlreadyWaiting), pending.waiting("r1"):
                pass
            assert "r1" in pending
            pending.deliver([("r1", REPLY)])
            assert (await first).reply.request_id == "r1"

    asyncio.run(run())


def test_a_message_that_is_not_a_reply_fails_its_waiter_with_the_reason():
    async def run() -> None:
        pending = PendingReplies()
        with pending.waiting("r1") as future:
            pending.deliver([("r1", b"not json")])
            with pytest.raises(UnreadableReply, match="reply to r1"):
                await future

    asyncio.run(run())
