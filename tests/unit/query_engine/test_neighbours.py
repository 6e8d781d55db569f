"""The neighbour table's answers against exact brute force, and the plan around it: what the table
cannot answer falls through to the index or the exact path."""

from dataclasses import replace

import numpy as np
import pytest
from annoy import AnnoyIndex

from index_builder.neighbours import build_neighbour_table
from index_builder.synth import synth_factors
from query_engine.banded import NormBands
from query_engine.neighbours import NeighbourTable
from query_engine.plan import ServingPlan, SimilarPlan, VersionSearch, similar_plan
from query_engine.selection import Selection
from query_engine.vectors import cosine_scores, recall_at_k, top_k
from schemas.manifest import IndexQuality

N, DIM, WIDTH = 400, 8, 12


@pytest.fixture(scope="module")
def factors():
    return synth_factors(n_items=N, n_users=5, dim=DIM, n_clusters=6, seed=11).item_factors


@pytest.fixture(scope="module")
def norms(factors):
    return np.linalg.norm(factors, axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def table(factors):
    built, method = build_neighbour_table(factors, WIDTH)
    assert method == "exact"
    return built


def exact(factors, norms, row, k, keep=None):
    scores = cosine_scores(factors, norms, factors[row])
    scores[row] = -np.inf
    if keep is not None:
        scores[~keep.mask] = -np.inf
    best = top_k(scores, k)
    best = best[np.isfinite(scores[best])]
    return best, scores[best]


def angular_index(factors):
    index = AnnoyIndex(DIM, "angular")
    for i, row in enumerate(factors):
        index.add_item(i, row)
    index.build(10)
    return index


def version(factors, norms, table, plan, angular=None):
    # The table and exact paths consult no index: an empty one proves it.
    return VersionSearch(
        angular or AnnoyIndex(DIM, "angular"),
        NormBands.create([], np.empty(0, np.int32), factors),
        factors,
        norms,
        plan,
        neighbours=table,
    )


@pytest.mark.parametrize("k", [1, 5, WIDTH])
def test_a_lookup_is_the_exact_top_k(factors, norms, table, k):
    for row in range(0, N, 7):
        rows, scores = table.lookup(row, k)
        want_rows, want_scores = exact(factors, norms, row, k)
        np.testing.assert_array_equal(rows, want_rows)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)


def test_a_filtered_lookup_is_exact_or_declines(factors, norms, table):
    keep = Selection.of_mask(np.random.default_rng(2).random(N) < 0.5)
    answered = declined = 0
    for row in range(N):
        found = table.lookup(row, 4, keep)
        if found is None:  # fewer than 4 of the row's 12 pass
            assert keep.passes(table.rows[row]).sum() < 4
            declined += 1
            continue
        np.testing.assert_array_equal(found[0], exact(factors, norms, row, 4, keep)[0])
        answered += 1
    assert answered > N // 2 and declined > 0


def reachable(table, start):
    """Every item a search from `start` can reach over the table's rows (breadth first)."""
    seen, frontier = {start}, [start]
    while frontier:
        nxt = {int(r) for f in frontier for r in table.rows[f]} - seen
        seen |= nxt
        frontier = list(nxt)
    return np.array(sorted(seen - {start}), np.int64)


def test_a_walk_rescores_exactly_and_a_beam_past_the_catalogue_is_exact(factors, norms, table):
    rows, scores = table.walk(factors, norms, 3, 40)
    assert len(rows) == 40 and 3 not in rows and len(set(rows.tolist())) == 40
    np.testing.assert_array_equal(scores, cosine_scores(factors[rows], norms[rows], factors[3]))
    assert (np.diff(scores) <= 0).all()
    for start in (3, 150, 399):
        # A beam that never fills expands everything the table reaches: the exact top-k of it.
        found = reachable(table, start)
        want = found[top_k(cosine_scores(factors[found], norms[found], factors[start]), 40)]
        np.testing.assert_array_equal(table.walk(factors, norms, start, 40, beam=N)[0], want)


def test_a_walk_finds_nearly_the_exact_answer_and_declines_past_the_catalogue():
    """A kNN graph need not reach every item (an item no one lists is reached by no walk), so
    a walk is approximate: on a small catalogue it finds nearly all of the exact top-k, more
    with a wider beam."""
    small = synth_factors(n_items=600, n_users=2, dim=DIM, n_clusters=3, seed=2).item_factors
    small_norms = np.linalg.norm(small, axis=1).astype(np.float32)
    walked, _ = build_neighbour_table(small, 8)
    recall = {}
    for beam in (1, 4):
        recall[beam] = np.mean(
            [
                recall_at_k(
                    walked.walk(small, small_norms, row, 30, beam=beam)[0],
                    exact(small, small_norms, row, 30)[0],
                )
                for row in range(0, 600, 20)
            ]
        )
    assert recall[4] >= 0.9 and recall[4] > recall[1]
    assert walked.walk(small, small_norms, 0, 600) is None  # 599 other items at most


def test_the_plan_serves_from_the_table_and_falls_through_beyond_it(factors, norms, table):
    plan = ServingPlan(similar=SimilarPlan("exact", table=True, walk_max_k=0))
    v = version(factors, norms, table, plan)
    for row in (0, 17, 255):
        for fetch in (WIDTH, 3 * WIDTH):  # a lookup; then k above the width: the exact scan
            rows, _ = v.similar_items(row, fetch)
            np.testing.assert_array_equal(rows, exact(factors, norms, row, fetch)[0])
        # A filter leaving fewer than k among the row's neighbours: the exact filtered path.
        keep = Selection.of_rows(N, np.arange(0, N, 10))
        assert table.lookup(row, 5, keep) is None
        rows, _ = v.similar_items(row, 5, keep)
        np.testing.assert_array_equal(rows, exact(factors, norms, row, 5, keep)[0])


def test_a_plan_without_the_table_never_reads_it(factors, norms, table):
    poisoned = NeighbourTable(np.zeros_like(table.rows), np.ones_like(table.scores))
    plan = ServingPlan(similar=SimilarPlan("exact", table=False))
    rows, _ = version(factors, norms, poisoned, plan).similar_items(9, 5)
    np.testing.assert_array_equal(rows, exact(factors, norms, 9, 5)[0])
    # A request's own search_k asks for the index path, not the table: here every node of it.
    plan = ServingPlan(similar=SimilarPlan("ann", table=True))
    served = version(factors, norms, poisoned, plan, angular_index(factors))
    rows, _ = served.similar_items(9, 5, search_k=N * 10 * 10)
    np.testing.assert_array_equal(rows, exact(factors, norms, 9, 5)[0])
    assert served.from_table(9, 5) is not None  # the poisoned table would have answered


def test_a_refined_lookup_finds_what_a_damaged_row_lost(factors, norms, table):
    """An approximate graph's row misses some true neighbours; one round of a walk over the rows
    of its best items finds them. A filtered request keeps the plain lookup."""
    wider, _ = build_neighbour_table(factors, WIDTH + 1)
    # Every row without its best neighbour (which the rows of its other neighbours list).
    damaged = NeighbourTable(wider.rows[:, 1:].copy(), wider.scores[:, 1:].copy())
    lookup = version(factors, norms, damaged, ServingPlan(similar=SimilarPlan("exact")))
    refined = version(factors, norms, damaged, ServingPlan(similar=SimilarPlan("exact", refine=1)))
    lost = found = 0
    for row in range(0, N, 5):
        want = exact(factors, norms, row, 5)[0]
        lost += 5 - len(set(lookup.similar_items(row, 5)[0].tolist()) & set(want.tolist()))
        found += len(set(refined.similar_items(row, 5)[0].tolist()) & set(want.tolist()))
    assert lost > 0 and found >= 0.97 * 5 * len(range(0, N, 5))
    keep = Selection.of_mask(np.ones(N, np.bool_))
    np.testing.assert_array_equal(
        refined.similar_items(7, 5, keep)[0], lookup.similar_items(7, 5, keep)[0]
    )


def test_above_the_k_where_the_index_loses_to_the_scan_the_scan_serves(factors, norms):
    """The index's search_k (and time) grows with k, the scan's time does not: a report that
    timed the index at 1.6x the scan for k=10 has the scan serve k above 16."""
    report = IndexQuality(
        tuning_queries=10,
        curve=[],
        search_k=30,
        reached_target=True,
        heldout_queries=10,
        recall_at_k=0.95,
        queries_per_s=52.0,
        brute_force_queries_per_s=31.0,
        strategy="ann",
    )
    plan = similar_plan(report)
    assert plan.index_max_k == 16
    one_tree = AnnoyIndex(DIM, "angular")
    for i, row in enumerate(factors):
        one_tree.add_item(i, row)
    one_tree.build(1)
    v = version(factors, norms, None, ServingPlan(similar=plan), one_tree)
    missed = 0
    for row in range(0, N, 40):
        for k in (16, 17, 40):
            rows, _ = v.similar_items(row, k)
            if k > 16:
                np.testing.assert_array_equal(rows, exact(factors, norms, row, k)[0])
            else:  # the index: one tree at a small search_k misses some
                missed += not np.array_equal(rows, exact(factors, norms, row, k)[0])
    assert missed
    # A report whose index lost to the scan at k=10 already serves every k by the scan.
    assert similar_plan(report.model_copy(update={"strategy": "exact"})).index_max_k == 0


def test_a_walk_takes_the_beam_its_k_was_measured_with(factors, norms, table, monkeypatch):
    beams = []
    real = NeighbourTable.walk

    def spy(self, item_factors, item_norms, row, fetch, beam=2):
        beams.append((fetch, beam))
        return real(self, item_factors, item_norms, row, fetch, beam)

    monkeypatch.setattr(NeighbourTable, "walk", spy)
    plan = SimilarPlan(
        "exact", table=True, walk_max_k=60, walk_beam=3, walk_beams=((20, 1), (40, 2))
    )
    v = version(factors, norms, table, ServingPlan(similar=plan))
    for fetch in (WIDTH - 2, 20, 30, 50):
        v.similar_items(5, fetch)
    v.with_plan(ServingPlan(similar=replace(plan, walk_beams=()))).similar_items(5, 30)
    # Within the width: a lookup; 20 -> beam 1, 30 -> 2, 50 past the last: walk_beam.
    assert beams == [(20, 1), (30, 2), (50, 3), (30, 3)]
