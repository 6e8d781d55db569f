"""Filtered top-k, property-based: random attribute tables, random filters, random queries.

The reference is deliberately naive: each filter evaluated item by item in Python, then a brute
force top-k over the passing items. Both planner strategies (index with widening over-fetch, and
exact over the subset) must return exactly that when the index budget is unlimited.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from annoy import AnnoyIndex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.index_files import load_attributes, load_bands
from index_builder.attributes import AttributeTable, Column, write_attributes
from index_builder.build import build_annoy, build_mips_bands
from index_builder.synth import synth_factors
from query_engine import filtered
from query_engine.attributes import ItemAttributes
from query_engine.selection import Selection, select
from schemas.filters import AllOf, AnyOf, AttrEquals, AttrIn, NotOf, check_shape

N_ITEMS = 400
COLORS = ["red", "green", "blue", "black", "white"]
UNLIMITED = 10**7  # search_k: every node of every tree
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Skewed-norm factors, an angular index and MIPS norm bands (small bands: several trees)."""
    directory: Path = tmp_path_factory.mktemp("filtered")
    factors = synth_factors(n_items=N_ITEMS, n_users=50, dim=8, n_clusters=6, seed=11)
    items = factors.item_factors
    build_annoy(items, directory / "a.ann", metric="angular", n_trees=8, seed=1, n_jobs=1)
    angular = AnnoyIndex(items.shape[1], "angular")
    angular.load(str(directory / "a.ann"))
    spec = build_mips_bands(items, directory, n_trees=4, seed=1, n_jobs=1, first_band=32)
    bands = load_bands(directory, spec, items)
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    yield items, norms, angular, bands, factors.user_factors
    angular.unload()
    bands.unload()


@st.composite
def tables(draw):
    """(color codes, in_stock states): -1 is 'no value'."""
    seed = draw(st.integers(0, 2**32 - 1))
    n_colors = draw(st.integers(1, len(COLORS)))
    missing = draw(st.sampled_from([0.0, 0.1, 0.5]))
    skew = draw(st.sampled_from([0.5, 0.9, 0.99]))  # share of the first color: selectivity
    rng = np.random.default_rng(seed)
    p = np.full(n_colors, (1 - skew) / max(n_colors - 1, 1))
    p[0] = skew if n_colors > 1 else 1.0
    color = rng.choice(n_colors, size=N_ITEMS, p=p / p.sum()).astype(np.int32)
    color[rng.random(N_ITEMS) < missing] = -1
    stock = (rng.random(N_ITEMS) < draw(st.sampled_from([0.02, 0.5, 0.95]))).astype(np.int32)
    stock[rng.random(N_ITEMS) < missing] = -1
    return color, stock, COLORS[:n_colors]


def leaves(colors):
    value = st.sampled_from(colors)
    return st.one_of(
        st.builds(AttrEquals, attr=st.just("color"), eq=value),
        st.builds(AttrIn, attr=st.just("color"), in_=st.lists(value, min_size=1, max_size=3)),
        st.builds(AttrEquals, attr=st.just("in_stock"), eq=st.booleans()),
    )


def filters(colors):
    return st.recursive(
        leaves(colors),
        lambda sub: st.one_of(
            st.builds(AllOf, all=st.lists(sub, min_size=1, max_size=3)),
            st.builds(AnyOf, any=st.lists(sub, min_size=1, max_size=3)),
            st.builds(NotOf, not_=sub),
        ),
        max_leaves=6,
    )


@st.composite
def cases(draw):
    color, stock, colors = draw(tables())
    flt = check_shape(draw(filters(colors)))
    allow = draw(st.none() | st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=60))
    return color, stock, colors, flt, allow


def passes(f, color: int, stock: int, colors: list[str]) -> bool:
    """One item, by the definition of the filter language."""
    if isinstance(f, AttrEquals) and f.attr == "color":
        return color >= 0 and colors[color] == f.eq
    if isinstance(f, AttrEquals):
        return stock >= 0 and bool(stock) == f.eq
    if isinstance(f, AttrIn):
        return color >= 0 and colors[color] in f.in_
    if isinstance(f, AllOf):
        return all(passes(c, color, stock, colors) for c in f.all)
    if isinstance(f, AnyOf):
        return any(passes(c, color, stock, colors) for c in f.any)
    return not passes(f.not_, color, stock, colors)


def reference_rows(color, stock, colors, flt, allow) -> np.ndarray:
    ok = [passes(flt, int(color[i]), int(stock[i]), colors) for i in range(N_ITEMS)]
    if allow is not None:
        allowed = set(allow)
        ok = [x and i in allowed for i, x in enumerate(ok)]
    return np.flatnonzero(ok)


def attributes(tmp_path, color, stock, colors) -> ItemAttributes:
    table = AttributeTable(
        N_ITEMS, [Column("color", "category", color, colors), Column("in_stock", "bool", stock)]
    )
    return load_attributes(tmp_path, write_attributes(table, tmp_path), N_ITEMS)


def brute(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    order = np.lexsort((rows, -scores[rows]))
    return rows[order][:k]


@PROPERTY
@given(case=cases())
def test_selection_is_the_set_of_items_passing_the_filter(tmp_path, case):
    color, stock, colors, flt, allow = case
    attrs = attributes(tmp_path, color, stock, colors)
    keep = select(attrs, flt, None if allow is None else np.array(allow), N_ITEMS)
    expected = reference_rows(color, stock, colors, flt, allow)
    probe = np.arange(0, N_ITEMS, 7)
    passing = set(expected.tolist())
    # before and after the mask exists: the two lookups must agree with the definition
    assert [keep.contains(int(r)) for r in probe] == [r in passing for r in probe.tolist()]
    assert keep.passes(probe).tolist() == [r in passing for r in probe.tolist()]
    assert keep.rows.tolist() == expected.tolist()
    assert keep.count == len(expected)
    assert keep.mask.sum() == len(expected)
    assert keep.passes(probe).tolist() == [r in passing for r in probe.tolist()]


@PROPERTY
@given(case=cases(), user=st.integers(0, 49), k=st.sampled_from([1, 5, 10, 25]))
def test_recommend_equals_exact_filtered_top_k(tmp_path, catalogue, case, user, k):
    items, _norms, _angular, bands, users = catalogue
    color, stock, colors, flt, allow = case
    keep = select(attributes(tmp_path, color, stock, colors), flt, _allow(allow), N_ITEMS)
    query = users[user]
    expected = brute(items @ query, reference_rows(color, stock, colors, flt, allow), k)
    # threshold 0: always the index path (its trees: no exact head); above 1: always exact, by
    # scoring the whole subset (gather) or band by band under the norm bound (gather limit 0)
    for threshold, limits in (
        (0.0, {"FILTERED_HEAD": 0}),
        (1.01, {"GATHER_ROWS": N_ITEMS}),
        (1.01, {"GATHER_ROWS": 0}),
    ):
        with _limits(**limits):
            (rows, scores), _ = filtered.max_inner_product(
                bands, query, k, keep, threshold, UNLIMITED, exact_items=0
            )
        assert sorted(rows.tolist()) == sorted(expected.tolist()), (threshold, limits)
        np.testing.assert_allclose(scores, items[rows] @ query, rtol=1e-5, atol=1e-5)
        assert (np.diff(scores) <= 1e-6).all()  # best first


@PROPERTY
@given(case=cases(), row=st.integers(0, N_ITEMS - 1), k=st.sampled_from([1, 5, 10, 25]))
def test_similar_items_equals_exact_filtered_top_k(tmp_path, catalogue, case, row, k):
    items, norms, angular, _bands, _users = catalogue
    color, stock, colors, flt, allow = case
    keep = select(attributes(tmp_path, color, stock, colors), flt, _allow(allow), N_ITEMS)
    cosine = (items @ items[row]) / (norms * norms[row])
    passing = reference_rows(color, stock, colors, flt, allow)
    expected = brute(cosine, passing[passing != row], k)
    for threshold in (0.0, 1.01):
        (rows, _scores), _ = filtered.similar_items(
            angular, items, norms, row, k, keep, threshold, UNLIMITED
        )
        assert row not in rows.tolist()
        assert sorted(rows.tolist()) == sorted(expected.tolist()), threshold


def test_the_planner_switches_strategy_at_the_threshold(catalogue):
    _items, _norms, _angular, bands, users = catalogue
    rng = np.random.default_rng(0)
    keep = Selection.of_rows(N_ITEMS, np.sort(rng.choice(N_ITEMS, 40, replace=False)))  # 10%
    assert filtered.max_inner_product(bands, users[0], 5, keep, 0.11, UNLIMITED)[1] == "exact"
    assert filtered.max_inner_product(bands, users[0], 5, keep, 0.09, UNLIMITED)[1] == "ann"


def test_an_empty_selection_returns_nothing(catalogue):
    items, norms, angular, bands, users = catalogue
    empty = Selection.of_rows(N_ITEMS, np.empty(0, np.int64))
    for threshold in (0.0, 1.0):
        (rows, _), _ = filtered.max_inner_product(bands, users[0], 10, empty, threshold)
        assert len(rows) == 0
        (rows, _), _ = filtered.similar_items(angular, items, norms, 3, 10, empty, threshold)
        assert len(rows) == 0


@contextmanager
def _limits(**values):
    """Set query_engine.filtered constants for one call (hypothesis examples share the module)."""
    saved = {name: getattr(filtered, name) for name in values}
    for name, value in values.items():
        setattr(filtered, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(filtered, name, value)


def _allow(allow):
    return None if allow is None else np.array(allow, dtype=np.int64)


def test_a_band_that_returned_too_few_passing_items_is_widened(catalogue):
    """Band 1's passing items sit just past what its index is asked for, and band 2 offers k
    worse passing ones: returning those would be wrong (found: user 7); the planner must see
    that band 1 may hide better ones, and widen."""
    items, _norms, _angular, bands, users = catalogue
    query, k = users[7], 5
    band1, band2 = (bands.order[b.start : b.stop].astype(np.int64) for b in bands.bands[1:3])
    band1 = band1[np.argsort(-(items[band1] @ query))]
    band2 = band2[np.argsort(-(items[band2] @ query))]
    hidden = band1[62:67]
    worse = band2[(items[band2] @ query) < (items[hidden] @ query).min()][:60]
    keep = Selection.of_rows(N_ITEMS, np.sort(np.concatenate([hidden, worse])))
    assert math.ceil(2 * k / keep.fraction) <= 62  # band 1 is asked for its best 62 or fewer
    with _limits(FILTERED_HEAD=0):  # band 1 searched by its trees, not scanned
        (rows, _), strategy = filtered.max_inner_product(bands, query, k, keep, 0.0, UNLIMITED)
    assert strategy == "ann"
    assert set(rows.tolist()) == set(hidden.tolist())
