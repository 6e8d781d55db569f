"""The interaction event: what it accepts, and what makes two deliveries the same event."""

import pytest
from pydantic import ValidationError

from schemas.events import Interaction, parse_interaction

BASE = b'{"user_id": "u1", "item_id": 7, "timestamp": "2026-11-25T20:55:43+01:00"'


def test_defaults_and_utc_timestamp():
    e = parse_interaction(BASE + b"}")
    assert (e.item_id, e.type, e.weight, e.event_id) == ("7", "interaction", 1.0, None)
    assert e.timestamp.isoformat() == "2026-11-25T19:55:43+00:00"


def test_the_same_content_is_the_same_event_and_an_event_id_decides_when_given():
    a, b = parse_interaction(BASE + b"}"), parse_interaction(BASE + b"}")
    assert a.identity == b.identity
    other = parse_interaction(BASE + b', "weight": 2}')
    assert other.identity != a.identity
    x = parse_interaction(BASE + b', "event_id": "e1"}')
    y = parse_interaction(BASE + b', "event_id": "e1", "weight": 2}')
    assert x.identity == y.identity == "id:e1"


@pytest.mark.parametrize(
    ("raw", "named"),
    [
        (b'{"user_id": "u1", "item_id": "i7"}', "timestamp"),
        (b'{"user_id": "u1", "item_id": "i7", "timestamp": "2026-11-25T20:55:43"}', "time zone"),
        (BASE + b', "weight": 0}', "weight"),
        (BASE + b', "weight": -3}', "weight"),
        (BASE + b', "type": "Add To Cart"}', "type"),
        (BASE + b', "item": "i8"}', "item"),
        (b'{"user_id": "", "item_id": "i7", "timestamp": "2026-11-25T20:55:43Z"}', "user_id"),
    ],
)
def test_malformed_interactions_are_refused_with_the_field_named(raw, named):
    with pytest.raises(ValidationError, match=named):
        parse_interaction(raw)


def test_an_infinite_weight_is_refused():
    with pytest.raises(ValidationError):
        Interaction(user_id="u", item_id="i", weight=float("inf"), timestamp="2026-01-01T00:00Z")
