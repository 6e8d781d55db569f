"""user -> items under max_per in one band walk, against the naive constrained top-k (every item
scored, walked in score order)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.index_files import load_bands
from index_builder.build import build_mips_bands
from query_engine import banded_max_per
from query_engine.diversity import MaxPer
from query_engine.vectors import recall_at_k
from tests.unit.query_engine.test_banded import _skewed
from tests.unit.query_engine.test_diversity import naive

N, K = 3000, 8


@pytest.fixture(scope="module")
def bands(tmp_path_factory):
    rng = np.random.default_rng(11)
    items = _skewed(rng, N, K)  # bands of 512 and the rest
    directory = tmp_path_factory.mktemp("bands")
    spec = build_mips_bands(
        items, directory, n_trees=4, seed=1, n_jobs=1, first_band=512, band_growth=4
    )
    loaded = load_bands(directory, spec, items)
    yield items, loaded
    loaded.unload()


def _codes(rng, n_values, crowded_by=None):
    """Value codes, -1 (no value) for a tenth of the items; `crowded_by`: the value follows the
    item's direction, so a query's best items share a few values (the wall max_per is for)."""
    if crowded_by is None:
        codes = rng.integers(0, n_values, N)
    else:
        directions = rng.standard_normal((K, n_values))
        codes = (crowded_by @ directions).argmax(axis=1)
    codes[rng.random(N) < 0.1] = -1
    return codes.astype(np.int32)


@settings(max_examples=40, deadline=None)
@given(
    n_values=st.integers(1, 30),
    n=st.integers(1, 3),
    k=st.integers(1, 25),
    crowded=st.booleans(),
    all_exact=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_an_unlimited_budget_gives_the_exact_constrained_top_k(
    bands, n_values, n, k, crowded, all_exact, seed
):
    """Every band scanned, or every tree band searched with search_k -1 (every node): the walk's
    answer is the greedy top-k over all items, exact scores, fewer only when no more meet it."""
    items, loaded = bands
    rng = np.random.default_rng(seed)
    codes = _codes(rng, n_values, items if crowded else None)
    query = rng.standard_normal(K).astype(np.float32)
    excluded = rng.choice(N, 5, replace=False)
    scores = items @ query
    rows, got = banded_max_per.max_inner_product(
        loaded, query, k, MaxPer(codes, n), excluded, -1, N if all_exact else 512
    )
    assert rows.tolist() == naive(scores, codes, n, k, set(excluded.tolist()))
    np.testing.assert_allclose(got, scores[rows], rtol=1e-5, atol=1e-6)


def test_a_constraint_that_cannot_be_met_returns_every_item_that_meets_it(bands):
    items, loaded = bands
    codes = np.arange(N, dtype=np.int32) % 3  # three values, every item has one
    query = np.ones(K, np.float32)
    rows, _ = banded_max_per.max_inner_product(
        loaded, query, 10, MaxPer(codes, 2), np.empty(0, np.int64), 10, 512, 0.5
    )
    assert rows.tolist() == naive(items @ query, codes, 2, 10)  # six: two of each value


def test_a_small_budget_still_finds_the_crowded_answer(bands):
    """The plan's budget (search_k 10 per tree band, bound factor 0.5, only the first band
    exact) on queries whose best items crowd into few values: the walk widens the bands that
    hold the answer and keeps recall against the exact constrained top-k."""
    items, loaded = bands
    rng = np.random.default_rng(3)
    codes = _codes(rng, 20, items)
    recalls = []
    for query in rng.standard_normal((30, K)).astype(np.float32):
        rows, _ = banded_max_per.max_inner_product(
            loaded, query, 10, MaxPer(codes, 1), np.empty(0, np.int64), 10, 512, 0.5
        )
        assert len(rows) == 10 and len(set(codes[rows][codes[rows] >= 0].tolist())) == len(
            codes[rows][codes[rows] >= 0]
        )
        recalls.append(recall_at_k(rows, naive(items @ query, codes, 1, 10)))
    assert np.mean(recalls) >= 0.95
