import numpy as np
import pytest

from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.errors import IndexRejected
from schemas.layout import version_dir
from worker.index_store import IndexStore, load_version


def test_load_version_maps_ids_and_factors(published, small_factors):
    storage, manifest = published
    v = load_version(storage, manifest.version)
    try:
        assert v.item_rows["i7"] == 7 and v.user_rows["u3"] == 3
        np.testing.assert_array_equal(v.item_factors[5], small_factors.item_factors[5])
        assert v.angular.get_n_items() == v.mips.get_n_items() == 300
    finally:
        v.close()


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "manifest"])
def test_damaged_versions_are_refused(published, damage):
    storage, manifest = published
    directory = version_dir(storage, manifest.version)
    ann = directory / manifest.angular_index.file
    if damage == "truncate":
        ann.write_bytes(ann.read_bytes()[:1000])
    elif damage == "flip":
        data = bytearray(ann.read_bytes())
        data[-10] ^= 1
        ann.write_bytes(bytes(data))
    elif damage == "delete":
        ann.unlink()
    else:
        (directory / "manifest.json").write_text('{"version": "x"}')
    with pytest.raises(IndexRejected):
        load_version(storage, manifest.version)


def test_store_swaps_to_a_new_version_and_keeps_serving_when_one_is_bad(published, small_factors):
    storage, first = published
    store = IndexStore(storage, poll_interval_s=3600)
    store.start()
    try:
        assert store.current().version == first.version

        second = publish_version(small_factors, storage, BuildOptions(n_trees=3))
        store.check_latest()
        assert store.current().version == second.version

        bad = publish_version(synth_factors(50, 5, 8, seed=9), storage, BuildOptions(n_trees=2))
        ann = version_dir(storage, bad.version) / bad.mips_index.file
        ann.write_bytes(ann.read_bytes()[:-16])  # a half-copied file
        store.check_latest()
        assert store.current().version == second.version
        assert "bytes" in store.refused[bad.version]
    finally:
        store.stop()
