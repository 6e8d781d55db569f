"""max_per and explain through the worker's answer path: known answers on a small catalogue."""

import json

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from index_builder.attributes import table_from_columns
from index_builder.publish import BuildOptions, publish_version
from query_engine.vectors import cosine_scores, top_k
from schemas.events import EXPLAIN_TOP, parse_request
from worker.answer import BadRequest, answer
from worker.index_store import load_version

N = 400


def _brand(i: int) -> str:
    return f"b{i % 7}"


@pytest.fixture(scope="module")
def branded(tmp_path_factory):
    """A small catalogue with `brand` (i % 7, none for multiples of 11), `maker` (two values),
    `in_stock` (not a multiple of 5)."""
    from index_builder.synth import synth_factors

    factors = synth_factors(n_items=N, n_users=40, dim=8, n_clusters=4, seed=5)
    ids = factors.item_ids.tolist()
    table = table_from_columns(
        {
            "item_id": ids,
            "brand": ["" if i % 11 == 0 else _brand(i) for i in range(N)],
            "maker": ["m0" if i < N // 2 else "m1" for i in range(N)],
            "in_stock": ["false" if i % 5 == 0 else "true" for i in range(N)],
        },
        ids,
    )
    storage = tmp_path_factory.mktemp("branded")
    manifest = publish_version(factors, storage, BuildOptions(n_trees=10, seed=1), attributes=table)
    v = load_version(storage, manifest.version)
    yield v, factors
    v.close()


def _ask(v, kind="recommend", **fields):
    subject = {"user_id": "u3"} if kind == "recommend" else {"item_id": "i12"}
    doc = {"request_id": "r", "kind": kind, **subject, **fields}
    return answer(parse_request(json.dumps(doc).encode()), v, "w")


def _rows(reply):
    return [int(i.item_id[1:]) for i in reply.items]


def _naive(scores, n, k, passes=lambda r: True, excluded=()):
    """The exact constrained top-k: every item in score order, taken while its brand has room."""
    taken, counts = [], {}
    for row in top_k(scores, len(scores)).tolist():
        if row in excluded or not passes(row):
            continue
        brand = None if row % 11 == 0 else _brand(row)
        if brand is not None and counts.get(brand, 0) >= n:
            continue
        counts[brand] = counts.get(brand, 0) + 1
        taken.append(row)
        if len(taken) == k:
            break
    return taken


@pytest.mark.parametrize("n", [1, 2, 3])
def test_recommend_max_per_is_the_exact_constrained_top_k(branded, n):
    v, factors = branded
    scores = factors.item_factors @ factors.user_factors[3]
    reply = _ask(v, max_per={"attr": "brand", "n": n}, k=10)
    assert reply.status == "ok" and reply.max_per.n == n
    assert _rows(reply) == _naive(scores, n, 10)
    assert not reply.unconstrained  # never the per-subject "recommended for you"


@pytest.mark.parametrize("n", [1, 2])
def test_max_per_composes_with_filter_and_exclusions(branded, n):
    v, factors = branded
    scores = factors.item_factors @ factors.user_factors[3]
    plain = _naive(scores, n, 3, passes=lambda r: r % 5 != 0)
    reply = _ask(
        v,
        max_per={"attr": "brand", "n": n},
        k=12,
        filter={"attr": "in_stock", "eq": True},
        exclude_items=[f"i{r}" for r in plain],
    )
    expected = _naive(scores, n, 12, passes=lambda r: r % 5 != 0, excluded=set(plain))
    assert reply.status == "ok" and _rows(reply) == expected


def test_similar_items_max_per_is_the_exact_constrained_top_k(branded):
    v, factors = branded
    items = factors.item_factors
    scores = cosine_scores(items, np.linalg.norm(items, axis=1), items[12])
    scores[12] = -np.inf
    reply = _ask(v, kind="similar_items", max_per={"attr": "brand", "n": 1}, k=10)
    assert reply.status == "ok" and _rows(reply) == _naive(scores, 1, 10)


def test_a_constraint_that_cannot_be_met_returns_what_can_be_as_partial(branded):
    v, factors = branded
    scores = factors.item_factors @ factors.user_factors[3]
    reply = _ask(v, max_per={"attr": "maker", "n": 2}, k=10)
    assert reply.status == "partial"  # two makers, two each: four items, all that can be
    best = top_k(scores, N).tolist()
    expected = sorted(
        [r for r in best if r < N // 2][:2] + [r for r in best if r >= N // 2][:2],
        key=best.index,
    )
    assert _rows(reply) == expected


def test_cold_start_fill_obeys_max_per(branded):
    v, _ = branded
    reply = _ask(v, user_id="nobody", max_per={"attr": "maker", "n": 1}, k=5)
    assert reply.fallback == "cold_start" and reply.status == "partial"
    assert len(reply.items) == 2 and all(i.filled for i in reply.items)
    assert {int(i.item_id[1:]) < N // 2 for i in reply.items} == {True, False}
    popular = _ask(v, user_id="nobody", max_per={"attr": "brand", "n": 1}, k=8)
    brands = [_brand(r) for r in _rows(popular) if r % 11]
    assert popular.status == "ok" and len(popular.items) == 8 and len(set(brands)) == len(brands)


def test_max_per_on_what_the_version_cannot_count_by_is_refused(branded):
    v, _ = branded
    with pytest.raises(BadRequest, match="unknown attribute 'colour'"):
        _ask(v, max_per={"attr": "colour", "n": 1})
    with pytest.raises(BadRequest, match="'in_stock' is boolean"):
        _ask(v, max_per={"attr": "in_stock", "n": 1})


def test_explain_equals_implicits_explain(branded):
    import implicit.cpu.als

    v, factors = branded
    recent = [3, 77, 150, 301]
    reply = _ask(v, user_id=None, recent_items=[f"i{r}" for r in recent], explain=True, k=6)
    assert reply.status == "ok" and reply.explain_refused is None
    f = v.manifest.fold_in
    model = implicit.cpu.als.AlternatingLeastSquares(
        factors=8, regularization=f.regularization, alpha=f.alpha
    )
    model.item_factors = factors.item_factors
    row = csr_matrix((np.ones(len(recent), np.float32), ([0] * len(recent), recent)), shape=(1, N))
    for item in reply.items:
        total, top, _ = model.explain(0, row, int(item.item_id[1:]), N=EXPLAIN_TOP)
        assert item.score == pytest.approx(total, rel=1e-4)
        assert [c.item_id for c in item.because] == [f"i{i}" for i, _ in top]
        for c, (_, value) in zip(item.because, top, strict=True):
            assert c.score == pytest.approx(value, rel=1e-4, abs=1e-6)
            assert c.share == pytest.approx(value / total, rel=1e-4)


def test_a_repeated_recent_item_is_explained_once_with_all_its_terms(branded):
    v, _ = branded
    reply = _ask(v, user_id=None, recent_items=["i3", "i77", "i3"], explain=True, k=5)
    for item in reply.items:
        assert len(item.because) == 2  # i3 once, its two mentions added up
        assert sum(c.share for c in item.because) == pytest.approx(1.0, rel=1e-4)
        assert sum(c.score for c in item.because) == pytest.approx(item.score, rel=1e-4)


def test_explain_refusals_are_in_the_reply_not_errors(branded):
    v, factors = branded
    by_vector = _ask(v, user_id=None, user_vector=factors.user_factors[3].tolist(), explain=True)
    assert by_vector.status == "ok" and len(by_vector.items) == 10
    assert "user_vector has no history" in by_vector.explain_refused
    assert all(i.because is None for i in by_vector.items)
    by_id = _ask(v, explain=True)
    assert by_id.status == "ok" and "do not carry users' histories" in by_id.explain_refused
    unknown = _ask(v, user_id=None, recent_items=["nope"], explain=True)
    assert unknown.fallback == "cold_start" and "none of recent_items" in unknown.explain_refused
    assert _ask(v).explain_refused is None


def test_explain_with_max_per_and_filled_items(branded):
    v, _ = branded
    reply = _ask(
        v,
        user_id=None,
        recent_items=["i5", "i6", "i7"],
        exclude_seen=True,
        explain=True,
        max_per={"attr": "brand", "n": 1},
        k=8,
    )
    assert reply.status == "ok" and len(reply.items) == 8
    for item in reply.items:
        assert 1 <= len(item.because) <= 3
        assert {c.item_id for c in item.because} <= {"i5", "i6", "i7"}


@pytest.mark.parametrize("n", [1, 2])
def test_the_index_path_widens_to_the_exact_constrained_top_k(branded, n):
    """The plan searches the norm bands (every node: search_k -1), so the walk runs over the
    index path's answers, widened, not over an exact scan from the start."""
    from query_engine.diversity import max_per_of
    from query_engine.plan import RecommendPlan, ServingPlan

    v, factors = branded
    search = v.search.with_plan(ServingPlan(recommend=RecommendPlan("ann", -1, 512)))
    m = max_per_of(v.attributes, "brand", n)
    for u in range(10):
        scores = factors.item_factors @ factors.user_factors[u]
        rows, got = search.recommend_max_per(factors.user_factors[u], 10, m)
        assert rows.tolist() == _naive(scores, n, 10)
        np.testing.assert_allclose(got, scores[rows], rtol=1e-5)


def test_similar_items_index_path_reads_deeper_into_its_candidates(branded):
    from query_engine.diversity import max_per_of
    from query_engine.plan import ServingPlan, SimilarPlan

    v, factors = branded
    search = v.search.with_plan(ServingPlan(similar=SimilarPlan("ann", 100_000)))
    items = factors.item_factors
    m = max_per_of(v.attributes, "brand", 1)
    for row in range(0, 100, 10):
        scores = cosine_scores(items, np.linalg.norm(items, axis=1), items[row])
        scores[row] = -np.inf
        rows, _ = search.similar_items_max_per(row, 10, m)
        assert rows.tolist() == _naive(scores, 1, 10)


def test_explain_changes_no_item_and_no_score(branded):
    """The explained reply is the plain one with `because` added: the same fold-in, the same
    items in the same order, the same scores."""
    v, _ = branded
    asked = {"user_id": None, "recent_items": ["i5", "i6", "i7", "i5"], "k": 12}
    for extra in ({}, {"max_per": {"attr": "brand", "n": 1}, "exclude_seen": True}):
        plain = _ask(v, **asked, **extra)
        explained = _ask(v, **asked, **extra, explain=True)
        assert [(i.item_id, i.score, i.filled) for i in explained.items] == [
            (i.item_id, i.score, i.filled) for i in plain.items
        ]
        assert all(i.because for i in explained.items)
