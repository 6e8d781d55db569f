import json

import numpy as np
import pytest

from schemas.events import RecommendRequest, SimilarItemsRequest
from schemas.vectors import exact_cosine_top_k, exact_inner_product_top_k
from worker.answer import RawEvent, answer, answer_batch
from worker.index_store import load_version


@pytest.fixture
def version(published):
    storage, manifest = published
    v = load_version(storage, manifest.version)
    yield v
    v.close()


def _event(value: bytes | None, offset: int = 0) -> RawEvent:
    return RawEvent("requests", 0, offset, b"key", value)


def test_recommend_equals_brute_force_with_exact_scores(version, small_factors):
    for u in range(10):
        reply = answer(RecommendRequest(request_id=f"r{u}", user_id=f"u{u}", k=10), version, "w")
        user = small_factors.user_factors[u]
        truth = exact_inner_product_top_k(small_factors.item_factors, user, 10)
        assert [i.item_id for i in reply.items] == [f"i{t}" for t in truth]
        expected = small_factors.item_factors[truth] @ user
        np.testing.assert_allclose([i.score for i in reply.items], expected, rtol=1e-5)
        assert reply.index_version == version.version and reply.status == "ok"


def test_similar_items_excludes_the_item_and_equals_brute_force(version, small_factors):
    items = small_factors.item_factors
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    for row in (0, 17, 299):
        reply = answer(SimilarItemsRequest(request_id="r", item_id=f"i{row}", k=8), version, "w")
        truth = exact_cosine_top_k(items, norms, items[row], 8, exclude=row)
        assert [i.item_id for i in reply.items] == [f"i{t}" for t in truth]
        scores = [i.score for i in reply.items]
        assert scores == sorted(scores, reverse=True) and max(scores) <= 1.0 + 1e-6


def test_k_larger_than_the_catalogue_returns_the_whole_catalogue(version):
    reply = answer(RecommendRequest(request_id="r", user_id="u0", k=1000), version, "w")
    assert len(reply.items) == 300
    assert len({i.item_id for i in reply.items}) == 300


def test_batch_dead_letters_bad_events_and_answers_the_rest(version):
    events = [
        _event(b"{not json", 0),
        _event(
            json.dumps(
                {"kind": "recommend", "request_id": "bad-k", "user_id": "u1", "k": 5000}
            ).encode(),
            1,
        ),
        _event(
            json.dumps({"kind": "similar_items", "request_id": "gone", "item_id": "nope"}).encode(),
            2,
        ),
        _event(b"\xff\xfe\x00", 3),
        _event(None, 4),
        _event(
            json.dumps({"kind": "recommend", "request_id": "good", "user_id": "u1"}).encode(), 5
        ),
    ]
    out = answer_batch(events, version, "w")
    reasons = {d.source_offset: d.reason for d in out.dead_letters}
    assert set(reasons) == {0, 1, 2, 3, 4}
    assert "invalid request" in reasons[0] and "json" in reasons[0].lower()
    assert "k:" in reasons[1]
    assert "unknown item_id 'nope'" in reasons[2]
    assert out.dead_letters[3].payload() == b"\xff\xfe\x00"  # original bytes kept
    assert out.dead_letters[0].key_b64 is not None
    by_id = {r.request_id: r for r in out.replies}
    # error replies go to callers whose request_id could be read, so nobody waits in vain
    assert set(by_id) == {"bad-k", "gone", "good"}
    assert by_id["bad-k"].status == "error" and "k" in by_id["bad-k"].error
    assert by_id["good"].status == "ok" and len(by_id["good"].items) == 10
