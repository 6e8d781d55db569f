import json

import numpy as np
import pytest

from query_engine.vectors import exact_cosine_top_k, exact_inner_product_top_k
from schemas.events import RecommendRequest, SimilarItemsRequest
from worker.answer import Policy, answer, answer_batch
from worker.index_store import load_version
from worker.parse import RawEvent, parse_batch


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
    out = answer_batch(parse_batch(events), version, "w")
    reasons = {d.source_offset: d.reason for d in out.dead_letters}
    assert set(reasons) == {0, 1, 2, 3, 4}
    assert "invalid request" in reasons[0] and "json" in reasons[0].lower()
    assert "recommend.k must be at most 1000 (got 5000)" in reasons[1]
    assert "unknown item_id 'nope'" in reasons[2]
    assert out.dead_letters[3].payload() == b"\xff\xfe\x00"  # original bytes kept
    assert out.dead_letters[0].key_b64 is not None
    by_id = {r.request_id: r for r in out.replies}
    # error replies go to callers whose request_id could be read, so nobody waits in vain
    assert set(by_id) == {"bad-k", "gone", "good"}
    assert by_id["bad-k"].status == "error" and "k" in by_id["bad-k"].error
    assert by_id["good"].status == "ok" and len(by_id["good"].items) == 10


def _ids(reply):
    return [i.item_id for i in reply.items]


def test_exclusions_are_honoured_and_results_filled_to_k(version, small_factors):
    plain = answer(RecommendRequest(request_id="a", user_id="u3", k=10), version, "w")
    top = _ids(plain)
    excluded = answer(
        RecommendRequest(
            request_id="b", user_id="u3", k=10, exclude_items=[*top[:4], "not-an-item"]
        ),
        version,
        "w",
    )
    assert not set(top[:4]) & set(_ids(excluded)) and len(excluded.items) == 10
    assert _ids(excluded)[:6] == top[4:]  # the rest keeps its order
    # excluding all but 5 items: the 5 are returned, and nothing else exists to fill with
    keep = {"i1", "i2", "i3", "i4", "i5"}
    rest = [f"i{i}" for i in range(300) if f"i{i}" not in keep]
    squeezed = answer(
        RecommendRequest(request_id="c", user_id="u3", k=10, exclude_items=rest), version, "w"
    )
    assert set(_ids(squeezed)) == keep


def test_fill_comes_from_the_popularity_list_with_exact_scores(version, small_factors):
    # search_k=1 leaves the angular index almost nothing to rerank. (user -> items cannot come
    # up short here: 300 items are one norm band, scanned exactly.)
    reply = answer(
        SimilarItemsRequest(request_id="r", item_id="i1", k=20, search_k=1), version, "w"
    )
    assert len(reply.items) == 20
    filled = [i for i in reply.items if i.filled]
    assert filled, "a tiny search_k must leave gaps to fill"
    popular = [f"i{r}" for r in np.asarray(version.popularity).tolist() if r != 1]
    # filled items are the most popular ones not already in the results, in popularity order
    present = {i.item_id for i in reply.items if not i.filled}
    expected = [p for p in popular if p not in present][: len(filled)]
    assert [i.item_id for i in filled] == expected
    items = small_factors.item_factors
    for item in filled:
        other = items[int(item.item_id[1:])]
        exact = float(other @ items[1] / (np.linalg.norm(other) * np.linalg.norm(items[1])))
        assert item.score == pytest.approx(exact, rel=1e-5)


def test_cold_start_gets_popular_items_or_an_error(version):
    reply = answer(RecommendRequest(request_id="r", user_id="stranger", k=5), version, "w")
    assert reply.fallback == "cold_start" and reply.status == "ok"
    assert _ids(reply) == [f"i{r}" for r in np.asarray(version.popularity[:5]).tolist()]
    assert all(i.filled and i.score is None for i in reply.items)
    from worker.answer import BadRequest

    with pytest.raises(BadRequest, match="cold start disabled"):
        answer(
            RecommendRequest(request_id="r", user_id="stranger"),
            version,
            "w",
            Policy(cold_start="error"),
        )


def test_user_vector_must_match_the_dimension(version, small_factors):
    from worker.answer import BadRequest

    u = small_factors.user_factors[2]
    by_vector = answer(RecommendRequest(request_id="v", user_vector=u.tolist(), k=7), version, "w")
    by_id = answer(RecommendRequest(request_id="i", user_id="u2", k=7), version, "w")
    assert _ids(by_vector) == _ids(by_id)
    with pytest.raises(BadRequest, match=r"user_vector has 3 values, index .* has K=8"):
        answer(RecommendRequest(request_id="v", user_vector=[1.0, 2.0, 3.0]), version, "w")


def test_recent_items_fold_in_like_implicit_recalculate_user():
    """Known answer: the fold-in equals implicit's own ALS user step for the same items."""
    from scipy.sparse import csr_matrix

    from index_builder.synth import synth_interactions
    from index_builder.train import make_interactions, train_als
    from query_engine.vectors import fold_in, item_gramian

    users, items, weights = synth_interactions(200, 300, dim=8, interactions_per_user=15, seed=2)
    inter = make_interactions(users, items, weights)
    factors, params = train_als(
        inter, factors=8, regularization=0.05, alpha=2.0, iterations=5, show_progress=False
    )
    import implicit.cpu.als

    model = implicit.cpu.als.AlternatingLeastSquares(factors=8, regularization=0.05, alpha=2.0)
    model.item_factors = factors.item_factors
    seen = [3, 17, 42, 99]
    row = csr_matrix((np.ones(4, np.float32), ([0] * 4, seen)), shape=(1, 300))
    expected = model.recalculate_user(0, row)
    got = fold_in(
        item_gramian(factors.item_factors),
        factors.item_factors[seen],
        params.regularization,
        params.alpha,
    )
    np.testing.assert_allclose(got, np.ravel(expected), rtol=2e-3, atol=2e-4)


def test_recent_items_recommend_excludes_seen_and_reports_unknown(version):
    reply = answer(
        RecommendRequest(request_id="r", recent_items=["i5", "i6", "zzz"], k=10, exclude_seen=True),
        version,
        "w",
    )
    assert reply.status == "ok" and reply.unknown_items == ["zzz"]
    assert not {"i5", "i6"} & set(_ids(reply)) and len(reply.items) == 10
    scores = [i.score for i in reply.items]
    assert scores == sorted(scores, reverse=True)
    unknown_only = answer(RecommendRequest(request_id="r", recent_items=["zzz"]), version, "w")
    assert unknown_only.fallback == "cold_start"


def test_a_request_past_its_deadline_is_not_computed(version):
    import json as _json

    now_ms = 1_800_000_000_000  # the batch is answered at this instant, whatever the load
    req = {"kind": "recommend", "request_id": "late", "user_id": "u1", "deadline_ms": 50}
    old = RawEvent(
        "requests",
        0,
        0,
        None,
        _json.dumps(req).encode(),
        timestamp_ms=now_ms - 1000,
    )
    fresh = RawEvent(
        "requests",
        0,
        1,
        None,
        _json.dumps({**req, "request_id": "ok"}).encode(),
        timestamp_ms=now_ms,
    )
    out = answer_batch(parse_batch([old, fresh]), version, "w", now=now_ms / 1000)
    by_id = {r.request_id: r for r in out.replies}
    assert by_id["late"].status == "expired" and by_id["late"].items == []
    assert by_id["ok"].status == "ok"
    assert [s.outcome for s in out.served] == ["expired", "ok"]
    assert out.served[0].queue_s == pytest.approx(1.0)


def test_a_version_measured_slower_than_the_scan_is_served_exactly(
    tmp_path, small_factors, monkeypatch
):
    """No index point beat the scan (fixed here, not left to the machine's timing: on 300 items
    it usually is so, but a loaded machine can flip a point): the builder says `exact`, and the
    answers are exact."""
    from index_builder import quality
    from index_builder.publish import BuildOptions, publish_version

    monkeypatch.setattr(quality, "_wins", lambda *_: False)
    manifest = publish_version(small_factors, tmp_path / "s", BuildOptions(n_trees=2))
    assert manifest.quality.recommend.strategy == "exact"
    v = load_version(tmp_path / "s", manifest.version)
    try:
        assert v.search.plan.recommend.strategy == "exact"
        for u in range(20):
            reply = answer(RecommendRequest(request_id="r", user_id=f"u{u}", k=10), v, "w")
            truth = exact_inner_product_top_k(
                small_factors.item_factors, small_factors.user_factors[u], 10
            )
            assert _ids(reply) == [f"i{t}" for t in truth]
    finally:
        v.close()


def test_the_default_deadline_expires_requests_without_one_and_their_own_wins(version):
    now_ms = 1_800_000_000_000
    waited = {
        "plain": (None, 6_000),  # no deadline_ms, waited past the default (5 s): expired
        "recent": (None, 100),  # no deadline_ms, within the default: computed
        "patient": (60_000, 6_000),  # its own deadline, longer than the default: computed
        "hurried": (50, 100),  # its own, shorter: expired
    }
    events = []
    for i, (rid, (deadline, wait_ms)) in enumerate(waited.items()):
        req = {"kind": "recommend", "request_id": rid, "user_id": "u1"}
        if deadline is not None:
            req["deadline_ms"] = deadline
        events.append(RawEvent("requests", 0, i, None, json.dumps(req).encode(), now_ms - wait_ms))
    policy = Policy(default_deadline_ms=5_000)
    out = answer_batch(parse_batch(events), version, "w", policy, now=now_ms / 1000)
    status = {r.request_id: r.status for r in out.replies}
    assert status == {"plain": "expired", "recent": "ok", "patient": "ok", "hurried": "expired"}
    unlimited = answer_batch(parse_batch(events[:1]), version, "w", Policy(), now=now_ms / 1000)
    assert unlimited.replies[0].status == "ok"


def test_a_deadline_passed_while_the_batch_is_answered_expires_the_rest(version, monkeypatch):
    import types

    from worker import answer as answer_module

    clock = iter(1_800_000_000.0 + i for i in range(100))  # one second per look at the clock
    monkeypatch.setattr(
        answer_module,
        "time",
        types.SimpleNamespace(time=lambda: next(clock), perf_counter=lambda: 0.0),
    )
    sent_ms = 1_800_000_000_000 - 500
    events = [
        RawEvent(
            "requests",
            0,
            i,
            None,
            json.dumps(
                {"kind": "recommend", "request_id": f"r{i}", "user_id": "u1", "deadline_ms": 2000}
            ).encode(),
            sent_ms,
        )
        for i in range(3)
    ]
    out = answer_batch(parse_batch(events), version, "w")
    # Looked at 0.5 s, 1.5 s and 2.5 s after sending: the third is past its 2 s deadline.
    assert [r.status for r in out.replies] == ["ok", "ok", "expired"]


def test_similar_items_for_k_of_the_table_width_are_a_lookup(version, monkeypatch):
    """The search never returns the item itself, so a request for as many items as a table row
    holds is answered by the row (it used to ask for one more and miss the table)."""
    from query_engine.neighbours import NeighbourTable

    table = version.search.neighbours
    asked = []
    real = NeighbourTable.lookup

    def spy(self, row, fetch, keep=None):
        asked.append(fetch)
        return real(self, row, fetch, keep)

    monkeypatch.setattr(NeighbourTable, "lookup", spy)
    item = str(version.item_ids[7])
    reply = answer(SimilarItemsRequest(request_id="r", item_id=item, k=table.width), version, "w")
    assert asked == [table.width]
    want = [str(version.item_ids[r]) for r in table.rows[7]]
    assert [i.item_id for i in reply.items] == want
    # With an excluded item the row is one short: the search goes on past the table.
    other = want[0]
    reply = answer(
        SimilarItemsRequest(request_id="r", item_id=item, k=table.width, exclude_items=[other]),
        version,
        "w",
    )
    assert asked == [table.width] and other not in [i.item_id for i in reply.items]
    assert len(reply.items) == table.width
