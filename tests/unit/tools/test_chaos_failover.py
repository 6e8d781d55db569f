"""Failover figures from a known load and known replies."""

from datetime import UTC, datetime

from schemas.events import Reply
from tools.chaos.failover import failover_figures


def _reply(rid: str, at: float) -> Reply:
    served_at = datetime.fromtimestamp(at, UTC)
    return Reply(request_id=rid, status="ok", worker_id="w", served_at=served_at)


def test_delays_and_unserved_partitions_around_a_kill():
    # Partition 0 on the survivor: 0.1 s per request. Partition 1 on the victim, killed at 100:
    # its requests from 99.5 on wait for the move at 106.
    delivered = {f"a{i}": (0, int((95 + i) * 1000)) for i in range(10)}
    delivered |= {f"b{i}": (1, int((95 + i) * 1000)) for i in range(10)}
    replies = [_reply(f"a{i}", 95 + i + 0.1) for i in range(10)]
    replies += [_reply(f"b{i}", 95 + i + 0.1) for i in range(5)]  # up to 99.1: before the kill
    replies += [_reply(f"b{i}", 106.0) for i in range(5, 10)]
    replies.append(_reply("b7", 107.0))  # a duplicate: the first reply counts
    replies.append(_reply("other", 101.0))  # not this load's

    f = failover_figures(delivered, replies, [("w1", 100.0)], end=105.0)

    assert f["delay_s"]["n"] == 20 and f["delay_s"]["max"] == 6.0  # b5, sent at 100
    assert f["delay_s"]["p50"] == 0.1
    (kill,) = f["kills"]
    assert kill["worker"] == "w1"
    assert kill["delay_s"]["n"] == 12  # sent from 99 (one second before) to the end
    assert kill["partition_unserved_s"] == {"0": 0.1, "1": 6.0}
    assert f["partition_unserved_max_s"] == 6.0


def test_a_request_never_answered_is_not_a_delay_and_a_silent_partition_is_none():
    delivered = {"a": (0, 1000), "b": (1, 1000)}
    f = failover_figures(delivered, [_reply("a", 1.5)], [("w2", 2.0)], end=3.0)
    assert f["delay_s"] == {"n": 1, "p50": 0.5, "p99": 0.5, "max": 0.5}
    assert f["kills"][0]["partition_unserved_s"] == {"0": None, "1": None}
    assert f["kills"][0]["delay_s"]["n"] == 1  # sent one second before the kill
    assert f["partition_unserved_max_s"] is None
