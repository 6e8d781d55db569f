"""HTTP bodies -> request events: the events' limits and wording, the gateway's defaults."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from gateway.requests import Deadlines, Invalid, parse_body, parse_doc, parse_stream, wait_s
from schemas.errors import describe
from schemas.events import MAX_K, RecommendRequest, SimilarItemsRequest

DEADLINES = Deadlines(default_ms=5000, max_ms=60_000)


def _refusal(body: object, kind="recommend") -> Invalid:
    with pytest.raises(Invalid) as caught:
        parse_body(json.dumps(body).encode(), kind, DEADLINES)
    return caught.value


def test_a_body_gets_the_kind_of_its_path_an_id_and_the_default_deadline():
    before = datetime.now(UTC)
    request = parse_body(b'{"item_id": 7, "k": 3}', "similar_items", DEADLINES)
    assert isinstance(request, SimilarItemsRequest)
    assert request.item_id == "7" and request.k == 3
    assert len(request.request_id) == 32 and request.deadline_ms == 5000
    assert request.sent_at is not None and before <= request.sent_at <= datetime.now(UTC)
    assert wait_s(request, 5000) == 5.0
    other = parse_body(b'{"item_id": 7, "k": 3}', "similar_items", DEADLINES)
    assert other.request_id != request.request_id


def test_what_the_caller_gives_is_kept():
    sent = datetime(2026, 1, 2, tzinfo=UTC)
    body = {
        "request_id": "r-1",
        "user_id": "u1",
        "deadline_ms": 250,
        "sent_at": sent.isoformat(),
        "kind": "recommend",
    }
    request = parse_body(json.dumps(body).encode(), "recommend", DEADLINES)
    assert isinstance(request, RecommendRequest)
    assert (request.request_id, request.deadline_ms, request.sent_at) == ("r-1", 250, sent)
    assert wait_s(request, 5000) == 0.25
    nulls = parse_body(
        b'{"user_id": "u1", "request_id": null, "deadline_ms": null}', "recommend", DEADLINES
    )
    assert nulls.request_id and nulls.deadline_ms == 5000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u1", "k": MAX_K + 1}, "k"),
        ({"user_id": "u1", "k": "ten"}, "k"),
        ({"user_id": "u1", "colour": "red"}, "colour"),
        ({"user_id": "u1", "exclude_items": ["i"] * 1001}, "exclude_items"),
        ({"user_id": "u1", "max_per": {"attr": "brand", "n": 0}}, "max_per.n"),
        ({"user_vector": [0.1, 1e12]}, "user_vector.1"),
    ],
)
def test_an_invalid_body_is_refused_in_the_events_wording_naming_the_field(body, field):
    refusal = _refusal(body)
    with pytest.raises(ValidationError) as event_error:  # what the worker would say of it
        RecommendRequest.model_validate({"request_id": "x", **body})
    assert refusal.reason == describe(event_error.value, 5, whole="body")
    assert refusal.field == field
    assert refusal.request_id is None  # the caller named none: nothing to look up later


def test_a_refusal_keeps_the_callers_request_id():
    assert _refusal({"request_id": "mine", "user_id": "u1", "k": 0}).request_id == "mine"


def test_the_body_must_be_a_json_object_of_the_paths_kind():
    with pytest.raises(Invalid, match=r"^body is not valid JSON"):
        parse_body(b'{"user_id": ', "recommend", DEADLINES)
    with pytest.raises(Invalid, match=r"^body must be an object"):
        parse_body(b"[1, 2]", "recommend", DEADLINES)
    refusal = _refusal({"user_id": "u1", "kind": "similar_items"})
    assert (refusal.reason, refusal.field) == ("kind must be 'recommend' at this path", "kind")
    with pytest.raises(Invalid, match="kind must be one of 'recommend', 'similar_items'"):
        parse_doc({"user_id": "u1"}, None, DEADLINES)  # a stream item must say its kind


def test_a_deadline_past_the_gateways_longest_wait_is_refused():
    refusal = _refusal({"user_id": "u1", "deadline_ms": 60_001})
    assert refusal.field == "deadline_ms"
    assert refusal.reason == "deadline_ms must be at most 60000 through the gateway (got 60001)"
    assert parse_body(b'{"user_id": "u1", "deadline_ms": 60000}', "recommend", DEADLINES)


def test_a_stream_body_is_a_bounded_list_of_requests():
    items = parse_stream(b'{"requests": [{"kind": "recommend"}, 3]}', max_requests=2)
    assert items == [{"kind": "recommend"}, 3]  # items are parsed one by one later
    with pytest.raises(Invalid, match=r"requests must have 1 to 2 items \(got 3\)"):
        parse_stream(b'{"requests": [1, 2, 3]}', max_requests=2)
    with pytest.raises(Invalid, match="must be a list"):
        parse_stream(b'{"requests": {"kind": "recommend"}}', max_requests=2)
    with pytest.raises(Invalid, match="extra is not a known field"):
        parse_stream(b'{"requests": [1], "extra": 1}', max_requests=2)


def test_sent_at_defaults_to_now_so_the_worker_expires_what_the_gateway_gave_up_on():
    request = parse_body(b'{"user_id": "u1", "deadline_ms": 100}', "recommend", DEADLINES)
    assert request.sent_at is not None
    assert datetime.now(UTC) - request.sent_at < timedelta(seconds=5)


def test_model_version_and_subject_pass_through_to_the_event_unchanged():
    """The gateway parses bodies with the events' models: a body naming a model, pinning a
    version or giving an assignment subject makes an event that says the same (issue 15)."""
    version = "20261125T205540.195030Z-a404ff"
    body = {"recent_items": ["i1"], "model": "eu", "version": version, "subject": "s-9"}
    request = parse_body(json.dumps(body).encode(), "recommend", DEADLINES)
    assert (request.model, request.version, request.subject) == ("eu", version, "s-9")
    assert parse_body(b'{"user_id": "u1"}', "recommend", DEADLINES).model == "default"
    assert _refusal({"user_id": "u1", "model": "../etc"}).field == "model"
