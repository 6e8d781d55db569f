import pytest
from pydantic import ValidationError

from schemas.events import ItemVector, parse_item_vector


def test_an_upsert_carries_a_vector_and_attributes_and_is_keyed_by_item():
    event = parse_item_vector(
        b'{"item_id": 42, "vector": [0.5, -1], "attributes": {"brand": 7, "in_stock": true}}'
    )
    assert event.key == "42"
    assert event.vector == [0.5, -1.0]
    assert event.attributes == {"brand": "7", "in_stock": True}
    assert not event.removed


def test_a_removal_carries_nothing_else():
    assert parse_item_vector(b'{"item_id": "i1", "removed": true}').removed
    with pytest.raises(ValidationError, match="a removal carries no vector, users"):
        ItemVector(item_id="i1", removed=True, vector=[1.0])


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b'{"item_id": "i1"}', "give a vector or users"),
        (b'{"item_id": "i1", "vector": [1], "users": ["u1"]}', "give a vector or users"),
        (b'{"item_id": "i1", "users": []}', "at least 1"),
        (b'{"item_id": "i1", "vector": [NaN]}', "finite"),
        (b'{"item_id": "i1", "vector": [1e40]}', "less than or equal"),
        (b'{"item_id": "i1", "vector": []}', "at least 1"),
        (b'{"item_id": "i1", "vector": [1], "attributes": {"bad name": "x"}}', "pattern"),
        (b'{"item_id": "i1", "vector": [1], "colour": "red"}', "Extra inputs"),
    ],
)
def test_malformed_events_are_refused_with_the_reason(raw: bytes, why: str):
    with pytest.raises(ValidationError, match=why):
        parse_item_vector(raw)
