import numpy as np
import pytest

from adapters.index_files import load_bands
from index_builder.build import build_mips_bands
from query_engine import banded
from query_engine.vectors import exact_inner_product_top_k, recall_at_k
from schemas.errors import IndexRejected


def _skewed(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Clustered directions with lognormal norms: the shape MF factors have."""
    centers = rng.standard_normal((8, k))
    x = centers[rng.integers(0, 8, n)] + 0.7 * rng.standard_normal((n, k))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x * rng.lognormal(0, 0.8, size=(n, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def bands(tmp_path_factory):
    rng = np.random.default_rng(7)
    items = _skewed(rng, 6000, 12)  # bands of 512, 2048, then the rest
    directory = tmp_path_factory.mktemp("bands")
    spec = build_mips_bands(
        items, directory, n_trees=4, seed=1, n_jobs=1, first_band=512, band_growth=4
    )
    loaded = load_bands(directory, spec, items)
    yield items, loaded, rng.standard_normal((40, 12)).astype(np.float32)
    loaded.unload()


@pytest.mark.parametrize(
    ("n", "edges"),
    [
        (1, [0, 1]),
        (512, [0, 512]),
        (600, [0, 512, 600]),  # the first band is never merged into: it is scanned
        (2600, [0, 512, 2600]),  # 40 trailing items merge into the band before
        (1000, [0, 512, 1000]),
        (2560, [0, 512, 2560]),
        (100_000, [0, 512, 2560, 10752, 43520, 100_000]),
    ],
)
def test_band_bounds_grow_geometrically_and_cover_every_item(n, edges):
    assert banded.band_bounds(n, first=512, growth=4) == edges


def test_default_bands_at_a_million_items():
    edges = banded.band_bounds(1_000_000)
    assert edges == [0, 512, 2560, 10752, 43520, 174592, 698880, 1_000_000]


def test_bands_are_norm_ordered_with_their_own_max_norm(bands):
    items, loaded, _ = bands
    norms = np.linalg.norm(items, axis=1)
    np.testing.assert_allclose(norms[loaded.order], np.sort(norms)[::-1], rtol=1e-6)
    for band in loaded.bands:
        assert band.max_norm == pytest.approx(norms[loaded.order[band.start]], rel=1e-6)
        assert band.index.get_n_items() == band.stop - band.start


@pytest.mark.parametrize("exact_items", [0, 512, 2560, 6000])
@pytest.mark.parametrize("k", [1, 10, 37])
def test_unlimited_budget_returns_the_exact_top_k(bands, exact_items, k):
    """search_k=-1 is Annoy's default (every node): with it, or with every band scanned exactly,
    the banded answer must be the exact top-k, scores included."""
    items, loaded, queries = bands
    for q in queries:
        rows, scores = banded.max_inner_product(loaded, q, k, -1, exact_items)
        np.testing.assert_array_equal(rows, exact_inner_product_top_k(items, q, k))
        np.testing.assert_allclose(scores, items[rows] @ q, rtol=1e-5)


def test_the_norm_bound_skips_bands_that_cannot_contribute(bands, monkeypatch):
    """Exact results while searching fewer bands than exist: the whole point of the bands."""
    items, loaded, queries = bands
    searched: list[int] = []
    original = banded.NormBands.rows

    def counting_rows(self, start, stop):
        searched.append(start)
        return original(self, start, stop)

    monkeypatch.setattr(banded.NormBands, "rows", counting_rows)
    for q in queries:
        rows, _ = banded.max_inner_product(loaded, q, 10, -1, len(items))
        np.testing.assert_array_equal(rows, exact_inner_product_top_k(items, q, 10))
    assert len(searched) < len(queries) * len(loaded.bands)


def test_a_small_budget_still_finds_most_neighbours(bands):
    items, loaded, queries = bands
    recall = np.mean(
        [
            recall_at_k(banded.max_inner_product(loaded, q, 10, 50, 512)[0], exact)
            for q in queries
            for exact in [exact_inner_product_top_k(items, q, 10)]
        ]
    )
    assert recall >= 0.9


def test_more_results_than_items_returns_every_item_once(bands):
    items, loaded, queries = bands
    rows, _ = banded.max_inner_product(loaded, queries[0], len(items) + 5, -1, 0)
    assert sorted(rows.tolist()) == list(range(len(items)))


def test_load_refuses_an_order_that_is_not_a_permutation(tmp_path):
    rng = np.random.default_rng(1)
    items = _skewed(rng, 700, 6)
    spec = build_mips_bands(items, tmp_path, n_trees=2, seed=1, n_jobs=1, first_band=256)
    order = np.load(tmp_path / spec.order_file)
    order[1] = order[0]
    np.save(tmp_path / spec.order_file, order)
    with pytest.raises(IndexRejected, match="permutation"):
        load_bands(tmp_path, spec, items)


def test_load_refuses_bands_built_from_other_factors(tmp_path):
    rng = np.random.default_rng(2)
    items = _skewed(rng, 700, 6)
    spec = build_mips_bands(items, tmp_path, n_trees=2, seed=1, n_jobs=1)
    with pytest.raises(IndexRejected, match="differ"):
        load_bands(tmp_path, spec, items[::-1].copy())


def test_a_smaller_bound_factor_searches_fewer_bands(bands):
    items, loaded, queries = bands
    calls: list[int] = []
    counting = banded.NormBands.create(
        [banded.Band(b.start, b.stop, b.max_norm, _Counting(b.index, calls)) for b in loaded.bands],
        loaded.order,
        items,
    )
    searched = {}
    for factor in (1.0, 0.5):
        calls.clear()
        for q in queries:
            banded.max_inner_product(counting, q, 10, 50, 512, factor)
        searched[factor] = len(calls)
    assert searched[0.5] < searched[1.0]


class _Counting:
    """An Annoy index that counts its searches."""

    def __init__(self, index, calls):
        self._index, self._calls = index, calls

    def get_nns_by_vector(self, *args, **kwargs):
        self._calls.append(1)
        return self._index.get_nns_by_vector(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._index, name)
