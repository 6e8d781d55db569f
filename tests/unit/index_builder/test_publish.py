import json

import numpy as np
import pytest
from annoy import AnnoyIndex

from index_builder import publish
from index_builder.publish import BuildOptions, publish_version
from schemas.layout import list_versions, read_latest, version_dir
from schemas.vectors import augment_query, exact_inner_product_top_k


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


def test_mips_index_answers_inner_product_queries(published, small_factors):
    storage, manifest = published
    index = AnnoyIndex(manifest.mips_index.dim, manifest.mips_index.metric)
    index.load(str(version_dir(storage, manifest.version) / manifest.mips_index.file))
    for u in small_factors.user_factors[:10]:
        # search_k = n_items * n_trees visits every leaf: what remains is the augmented
        # distance's ordering, which must be the inner product's
        got = index.get_nns_by_vector(
            augment_query(u), 10, search_k=300 * manifest.mips_index.n_trees
        )
        np.testing.assert_array_equal(
            got, exact_inner_product_top_k(small_factors.item_factors, u, 10)
        )


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
