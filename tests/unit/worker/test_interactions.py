"""Consumed interaction events -> interactions or reasons; their set members in the history."""

import json

from worker.history import history_event, member
from worker.interactions import parse_interactions
from worker.parse import RawEvent

GOOD = {"user_id": "u1", "item_id": "i7", "timestamp": "2026-11-25T20:55:43Z", "weight": 2}


def _event(value: bytes | None, offset: int = 0) -> RawEvent:
    return RawEvent("interactions", 1, offset, b"u1", value)


def test_valid_events_are_read_and_bad_ones_kept_with_their_reason():
    events = [
        _event(json.dumps(GOOD).encode(), 0),
        _event(b"{not json", 1),
        _event(json.dumps({**GOOD, "weight": -1}).encode(), 2),
        _event(None, 3),
        _event(b"\xff\xfe\x00", 4),
        _event(b"[" * 100_000, 5),
    ]
    got = parse_interactions(events)
    assert [(e.user_id, e.item_id, e.weight) for e in got.valid] == [("u1", "i7", 2.0)]
    assert [e.offset for e, _ in got.refused] == [1, 2, 3, 4, 5]
    reasons = dict((e.offset, r) for e, r in got.refused)
    assert all(r.startswith("invalid interaction") for r in reasons.values())
    assert "weight" in reasons[2]


def test_two_deliveries_of_an_event_are_one_member_and_read_back_as_it_was():
    first = parse_interactions([_event(json.dumps(GOOD).encode(), 0)]).valid[0]
    again = parse_interactions([_event(json.dumps(GOOD).encode(), 9)]).valid[0]
    assert member(first) == member(again)
    back = history_event(member(first), first.timestamp.timestamp())
    assert (back.item_id, back.weight, back.timestamp) == ("i7", 2.0, first.timestamp.timestamp())
