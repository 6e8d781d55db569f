import pytest
from pydantic import ValidationError

from schemas.events import MAX_K, RecommendRequest, SimilarItemsRequest, parse_request


def test_requests_parse_by_kind_and_ids_may_be_numbers():
    req = parse_request(b'{"kind": "similar_items", "request_id": "r1", "item_id": 42, "k": 3}')
    assert isinstance(req, SimilarItemsRequest)
    assert req.item_id == "42"
    rec = parse_request(b'{"kind": "recommend", "request_id": "r2", "user_id": "u1"}')
    assert isinstance(rec, RecommendRequest)
    assert rec.k == 10


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"kind": "recommend", "request_id": "r", "item_id": "1"}', "item_id"),
        (b'{"kind": "recommend", "request_id": "r"}', "exactly one of user_id"),
        (
            b'{"kind": "recommend", "request_id": "r", "user_id": "u", "user_vector": [1]}',
            "got user_id, user_vector",
        ),
        (b'{"kind": "recommend", "request_id": "r", "user_vector": [1, NaN]}', "finite"),
        (
            b'{"kind": "recommend", "request_id": "r", "user_vector": [1], "exclude_seen": true}',
            "exclude_seen needs recent_items or user_id",
        ),
        (b'{"kind": "recommend", "request_id": "r", "user_id": "u", "search_k": 0}', "search_k"),
        (
            b'{"kind": "recommend", "request_id": "r", "user_id": "u", "deadline_ms": -5}',
            "deadline_ms",
        ),
        (b'{"kind": "nearest", "request_id": "r", "item_id": "1"}', "kind"),
        (b'{"kind": "recommend", "request_id": "r", "user_id": "u", "k": 0}', "k"),
        (f'{{"kind":"recommend","request_id":"r","user_id":"u","k":{MAX_K + 1}}}'.encode(), "k"),
        (b'{"kind": "recommend", "request_id": "r", "user_id": "u", "typo": 1}', "typo"),
        (b'{"kind": "recommend", "request_id": "r", "user_id": true}', "user_id"),
        (b"not json", "json"),
        (b"\xff\xfe", "json"),
    ],
)
def test_malformed_requests_are_refused_with_the_field_named(raw, fragment):
    with pytest.raises(ValidationError) as info:
        parse_request(raw)
    assert fragment in str(info.value).lower()


def test_a_too_long_id_is_worded_in_characters_and_a_too_long_list_in_items():
    from schemas.errors import describe

    with pytest.raises(ValidationError) as long_id:
        SimilarItemsRequest.model_validate({"request_id": "r", "item_id": "x" * 300, "k": 5})
    assert describe(long_id.value).startswith("item_id must have at most 256 characters")
    with pytest.raises(ValidationError) as long_list:
        SimilarItemsRequest.model_validate(
            {"request_id": "r", "item_id": "i", "k": 5, "exclude_items": ["a"] * 100_000}
        )
    assert describe(long_list.value).startswith("exclude_items must have at most")
    assert "items" in describe(long_list.value)
