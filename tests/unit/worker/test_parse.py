"""Reading a request id from any event: bounded work, whatever the nesting."""

import json
import time

import pytest

from worker.answer import answer_batch
from worker.parse import RawEvent, parse_batch, readable_request_id, top_level_members


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


@pytest.mark.parametrize("depth", [10, 1_000, 10_000, 100_000])
def test_the_id_is_read_before_and_after_deep_nesting(depth):
    before = b'{"request_id": "r-1", "x": ' + _nested(depth) + b"}"
    after = b'{"x": ' + _nested(depth) + b', "request_id": "r-2"}'
    objects = b'{"x": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b', "request_id": "r-3"}'
    assert readable_request_id(before) == "r-1"
    assert readable_request_id(after) == "r-2"
    assert readable_request_id(objects) == "r-3"


def test_deep_nesting_costs_linear_time():
    event = b'{"x": ' + _nested(400_000) + b', "request_id": "r"}'  # ~0.8 MB of brackets
    start = time.perf_counter()
    assert readable_request_id(event) == "r"
    assert time.perf_counter() - start < 0.5


def test_only_the_top_level_id_counts():
    assert readable_request_id(b'{"x": {"request_id": "nested"}}') is None
    assert readable_request_id(b'{"x": [{"request_id": "nested"}], "request_id": "top"}') == "top"
    assert readable_request_id(b'{"x": "{\\"request_id\\": \\"in a string\\"}"}') is None
    assert readable_request_id(b'[{"request_id": "r"}]') is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"request_id": "r1", "request_id": "r2"}', "r2"),  # the last, as json.loads
        (b'  {\n "request\\u005fid" : "r1" }', "r1"),  # escapes in the name
        (b'{"a": "x,}]\\"", "request_id": "r1"}', "r1"),  # structure inside strings
        (b'{"a": 1, "b": true, "c": null, "request_id": "r1"}', "r1"),
        (b'{"request_id": "r1", "user_id": "\xff\xfe"}', "r1"),  # bad bytes elsewhere
        (b'{"request_id": "r1", "k": ', "r1"),  # truncated after the id
        ('{"request_id": "r1"}'.encode("utf-16"), "r1"),
        (b'{"request_id": "r\xff"}', None),  # bad bytes in the id
        (b'{"request_id": 7}', None),  # ids are strings
        (b'{"request_id": ""}', None),
        (b'{"request_id": "has space"}', None),
        (b'{"request_id": ["r1"]}', None),
        (b'{"request_id": "r1', None),
        (b'{"x": "never closed, "request_id": "r1"}', None),
        (b"", None),
        (b"null", None),
        (b"{", None),
        (b"\x00" * 8, None),
    ],
)
def test_ids_read_as_json_reads_them(payload, expected):
    assert readable_request_id(payload) == expected


def test_members_agree_with_json_on_ordinary_objects():
    doc = {"request_id": "r", "k": 5, "f": {"all": [{"attr": "a", "in": ["x", "y,]"]}]}, "z": []}
    text = json.dumps(doc)
    members = top_level_members(text)
    assert [name for name, _ in members] == list(doc)
    assert {name: json.loads(value) for name, value in members} == doc


def test_an_event_nested_10000_deep_gets_its_error_reply(version):
    events = [
        RawEvent("req", 0, i, None, b'{"request_id": "deep-%d", "x": ' % i + _nested(10_000) + b"}")
        for i in range(3)
    ]
    outcome = answer_batch(parse_batch(events), version, "w")
    assert [d.request_id for d in outcome.dead_letters] == ["deep-0", "deep-1", "deep-2"]
    assert [(r.request_id, r.status) for r in outcome.replies] == [
        ("deep-0", "error"),
        ("deep-1", "error"),
        ("deep-2", "error"),
    ]
