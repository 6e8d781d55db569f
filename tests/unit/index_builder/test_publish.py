import json

import numpy as np
import pytest

from adapters.index_files import load_bands
from index_builder import publish
from index_builder.publish import BuildOptions, publish_version
from query_engine.banded import max_inner_product
from query_engine.vectors import exact_inner_product_top_k
from schemas.layout import list_versions, read_latest, version_dir


def test_published_version_is_complete_and_latest_names_it(published, small_factors):
    storage, manifest = published
    assert read_latest(storage) == manifest.version
    assert list_versions(storage) == [manifest.version]
    assert not any((storage / "tmp").iterdir())  # staging left nothing behind
    directory = version_dir(storage, manifest.version)
    assert set(manifest.files) == {p.name for p in directory.iterdir()} - {"manifest.json"}
    assert manifest.dim == 8 and manifest.mips_index.dim == 9
    norms = np.linalg.norm(small_factors.item_factors, axis=1)
    assert manifest.mips_max_norm == pytest.approx(norms.max(), rel=1e-6)
    assert json.loads((directory / "manifest.json").read_text())["version"] == manifest.version


def test_mips_bands_answer_inner_product_queries(published, small_factors):
    storage, manifest = published
    bands = load_bands(
        version_dir(storage, manifest.version), manifest.mips_index, small_factors.item_factors
    )
    try:
        for u in small_factors.user_factors[:10]:
            # search_k -1 visits every node of every band searched: the answer must be exact
            got, _ = max_inner_product(bands, u, 10, -1, 0)
            np.testing.assert_array_equal(
                got, exact_inner_product_top_k(small_factors.item_factors, u, 10)
            )
    finally:
        bands.unload()


def test_failed_build_publishes_nothing(tmp_path, small_factors, monkeypatch):
    storage = tmp_path / "s"
    first = publish_version(small_factors, storage, BuildOptions(n_trees=2))

    def broken(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(publish, "build_annoy", broken)
    with pytest.raises(OSError, match="disk full"):
        publish_version(small_factors, storage, BuildOptions(n_trees=2))
    assert read_latest(storage) == first.version
    assert list_versions(storage) == [first.version]
    assert not any((storage / "tmp").iterdir())


def test_announcement_happens_after_latest_moved(tmp_path, small_factors):
    seen = []
    storage = tmp_path / "s"
    m = publish_version(
        small_factors,
        storage,
        BuildOptions(n_trees=2),
        announce=lambda man: seen.append((man.version, read_latest(storage))),
    )
    assert seen == [(m.version, m.version)]
