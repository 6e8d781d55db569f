"""Filters through the worker's answer path: statuses, dead letters, fill, exclusions, updates."""

import json

import numpy as np
import pytest

from index_builder.attributes import table_from_columns
from index_builder.publish import BuildOptions, publish_version
from schemas.events import RecommendRequest, SimilarItemsRequest, parse_request
from worker.answer import answer, answer_batch
from worker.availability import apply_updates
from worker.index_store import load_version
from worker.parse import RawEvent, parse_batch

N = 300
COLORS = ["red", "green", "blue"]


def _color(i: int) -> str:
    return COLORS[i % 3]


@pytest.fixture(scope="module")
def attributed(tmp_path_factory):
    """The small catalogue with `color` (i % 3), `in_stock` (not a multiple of 7), `rare`
    (only i5 and i6); the version's attributes as a worker loads them."""
    from index_builder.synth import synth_factors

    factors = synth_factors(n_items=N, n_users=40, dim=8, n_clusters=6, seed=3)
    ids = factors.item_ids.tolist()
    table = table_from_columns(
        {
            "item_id": ids,
            "color": [_color(i) for i in range(N)],
            "in_stock": ["false" if i % 7 == 0 else "true" for i in range(N)],
            "rare": ["yes" if i in (5, 6) else "" for i in range(N)],
        },
        ids,
    )
    storage = tmp_path_factory.mktemp("attributed")
    manifest = publish_version(
        factors, storage, BuildOptions(n_trees=10, seed=1, quality=False), attributes=table
    )
    v = load_version(storage, manifest.version)
    yield v, factors
    v.close()


def _ask(v, **fields):
    doc = {"request_id": "r", "kind": "recommend", "user_id": "u1", **fields}
    return answer(parse_request(json.dumps(doc).encode()), v, "w")


def _rows(reply):
    return [int(i.item_id[1:]) for i in reply.items]


def test_filtered_recommend_is_the_exact_top_k_of_the_passing_items(attributed):
    v, factors = attributed
    flt = {"all": [{"attr": "color", "eq": "green"}, {"attr": "in_stock", "eq": True}]}
    reply = _ask(v, k=10, filter=flt)
    passing = [i for i in range(N) if _color(i) == "green" and i % 7]
    scores = factors.item_factors[passing] @ factors.user_factors[1]
    expected = [passing[j] for j in np.argsort(-scores)[:10]]
    assert reply.status == "ok" and reply.filter_passing == len(passing)
    assert _rows(reply) == expected
    assert not any(i.filled for i in reply.items)


def test_similar_items_filter_with_not_and_in(attributed):
    v, _ = attributed
    flt = {"not": {"attr": "color", "in": ["red", "blue"]}}
    reply = answer(
        SimilarItemsRequest.model_validate(
            {"request_id": "r", "item_id": "i4", "k": 20, "filter": flt}
        ),
        v,
        "w",
    )
    assert len(reply.items) == 20
    assert all(_color(r) == "green" for r in _rows(reply)) and 4 not in _rows(reply)


def test_a_filter_nothing_passes_is_an_empty_no_match_reply_not_an_error(attributed):
    v, _ = attributed
    flt = {"all": [{"attr": "rare", "eq": "yes"}, {"attr": "color", "eq": "green"}]}  # 5, 6: no
    for kind in ("recommend", "similar_items"):
        doc = {"request_id": "r", "kind": kind, "filter": flt}
        doc |= {"user_id": "u1"} if kind == "recommend" else {"item_id": "i1"}
        raw = RawEvent("requests", 0, 0, None, json.dumps(doc).encode())
        outcome = answer_batch(parse_batch([raw]), v, "w")
        assert not outcome.dead_letters
        [reply] = outcome.replies
        assert reply.status == "no_match" and reply.items == [] and reply.error is None
        assert reply.filter_passing == 0


def test_excluding_every_passing_item_is_no_match_too(attributed):
    v, _ = attributed
    reply = _ask(v, filter={"attr": "rare", "eq": "yes"}, exclude_items=["i5", "i6"])
    assert reply.status == "no_match" and reply.filter_passing == 2


def test_fewer_passing_items_than_k_returns_them_all_and_no_fill(attributed):
    v, _ = attributed
    reply = _ask(v, k=10, filter={"attr": "rare", "eq": "yes"})
    assert reply.status == "ok" and sorted(_rows(reply)) == [5, 6]


@pytest.mark.parametrize(
    ("flt", "words"),
    [
        ({"attr": "size", "eq": "xl"}, ["unknown attribute 'size'", "color"]),
        ({"attr": "color", "eq": "purple"}, ["no value 'purple'"]),
        ({"attr": "in_stock", "eq": "yes"}, ["boolean"]),
        ({"attr": "color", "eq": True}, ["categorical"]),
    ],
)
def test_a_filter_the_version_cannot_evaluate_is_dead_lettered_with_the_reason(
    attributed, flt, words
):
    v, _ = attributed
    doc = {"request_id": "bad", "kind": "recommend", "user_id": "u1", "filter": flt}
    outcome = answer_batch(
        parse_batch([RawEvent("requests", 0, 3, None, json.dumps(doc).encode())]), v, "w"
    )
    [dead] = outcome.dead_letters
    assert all(w in dead.reason for w in words), dead.reason
    [reply] = outcome.replies
    assert reply.status == "error" and reply.request_id == "bad"


def test_a_filter_on_a_version_without_attributes_is_dead_lettered(version):
    doc = {"request_id": "r", "kind": "recommend", "user_id": "u1"}
    doc["filter"] = {"attr": "color", "eq": "red"}
    outcome = answer_batch(
        parse_batch([RawEvent("requests", 0, 0, None, json.dumps(doc).encode())]), version, "w"
    )
    [dead] = outcome.dead_letters
    assert "no item attributes" in dead.reason


def test_cold_start_fill_and_exclusion_fill_respect_the_filter(attributed):
    v, _ = attributed
    cold = _ask(v, user_id="nobody", k=15, filter={"attr": "color", "eq": "blue"})
    assert cold.fallback == "cold_start" and len(cold.items) == 15
    assert all(
        _color(r) == "blue" and i.filled for r, i in zip(_rows(cold), cold.items, strict=True)
    )
    top = _ask(v, k=5, filter={"attr": "color", "eq": "blue"})
    excluded = [i.item_id for i in top.items]
    again = _ask(v, k=5, filter={"attr": "color", "eq": "blue"}, exclude_items=excluded)
    assert len(again.items) == 5 and not set(excluded) & {i.item_id for i in again.items}
    assert all(_color(r) == "blue" for r in _rows(again))


def test_allow_items_alone_and_with_a_filter(attributed):
    v, _ = attributed
    allow = [f"i{i}" for i in range(30)] + ["not-an-item"]
    alone = _ask(v, k=50, allow_items=allow)
    assert sorted(_rows(alone)) == list(range(30)) and alone.filter_passing == 30
    both = _ask(v, k=50, allow_items=allow, filter={"attr": "color", "eq": "red"})
    assert sorted(_rows(both)) == [i for i in range(30) if _color(i) == "red"]


def test_an_availability_update_changes_the_next_answer(attributed):
    v, _ = attributed
    flt = {"attr": "in_stock", "eq": True}
    before = _ask(v, k=5, filter=flt)
    gone = before.items[0].item_id
    assert apply_updates(v, {("in_stock", gone): False, ("in_stock", "no-such-item"): False}) == 1
    try:
        after = _ask(v, k=5, filter=flt)
        assert gone not in {i.item_id for i in after.items}
        assert after.filter_passing == before.filter_passing - 1
        assert apply_updates(v, {("in_stock", gone): False}) == 0  # already so: unchanged
    finally:
        apply_updates(v, {("in_stock", gone): True})
    assert _ask(v, k=5, filter=flt).items == before.items


def test_unfiltered_answers_ignore_attributes(attributed):
    v, _ = attributed
    plain = answer(RecommendRequest(request_id="r", user_id="u1", k=10), v, "w")
    assert plain.filter_passing is None and not plain.filtered


def test_every_recommend_form_takes_a_filter(attributed):
    v, factors = attributed
    flt = {"attr": "color", "eq": "red"}
    vector = factors.user_factors[2].tolist()
    by_vector = _ask(v, user_id=None, user_vector=vector, k=8, filter=flt)
    by_id = _ask(v, user_id="u2", k=8, filter=flt)
    assert _rows(by_vector) == _rows(by_id)  # the same user, the same answer
    seen = ["i3", "i6", "i9"]  # red ones, folded in and then excluded
    folded = _ask(v, user_id=None, recent_items=seen, exclude_seen=True, k=8, filter=flt)
    assert len(folded.items) == 8
    assert all(_color(r) == "red" for r in _rows(folded))
    assert not {i.item_id for i in folded.items} & set(seen)
