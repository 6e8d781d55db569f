import numpy as np
import pytest

from adapters.version_storage import DirectoryStorage
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
        assert v.search.angular.get_n_items() == len(v.search.mips.order) == 300
    finally:
        v.close()


def test_a_version_with_duplicate_item_ids_is_refused(published):
    """Written past the builder (which refuses duplicates) and its checksums: the loader still
    will not serve a version where one id names two rows."""
    storage, manifest = published
    path = version_dir(storage, manifest.version) / "item_ids.npy"
    ids = np.load(path)
    ids[9] = ids[4]
    np.save(path, ids)
    with pytest.raises(IndexRejected, match=r"duplicate id 'i4' at rows \[4, 9\]"):
        load_version(storage, manifest.version, checksums=False)


def test_a_version_whose_ids_are_not_strings_is_refused(published):
    """Replies carry ids as str; an id array of bytes (written past the builder, which writes
    unicode; the same size, so the file checks pass) is refused at load, not in every reply."""
    storage, manifest = published
    path = version_dir(storage, manifest.version) / "item_ids.npy"
    ids = np.load(path)
    np.save(path, ids.astype(f"S{ids.dtype.itemsize}"))
    with pytest.raises(IndexRejected, match="id arrays are not strings"):
        load_version(storage, manifest.version, checksums=False)


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
    store = IndexStore(DirectoryStorage(storage), poll_interval_s=3600)
    store.start()
    try:
        assert store.current().version == first.version

        second = publish_version(small_factors, storage, BuildOptions(n_trees=3))
        store.check_latest()
        assert store.current().version == second.version

        bad = publish_version(synth_factors(50, 5, 8, seed=9), storage, BuildOptions(n_trees=2))
        ann = version_dir(storage, bad.version) / bad.mips_index.bands[0].file
        ann.write_bytes(ann.read_bytes()[:-16])  # a half-copied file
        store.check_latest()
        assert store.current().version == second.version
        assert "bytes" in store.refused[bad.version]
    finally:
        store.stop()


def test_a_file_of_the_wrong_dimension_is_refused_even_with_matching_checksums(
    published, small_factors
):
    """Annoy files do not record their dimension; only the sampled vectors reveal it."""
    import json

    from adapters.index_files import file_entry
    from index_builder.build import build_annoy

    storage, manifest = published
    directory = version_dir(storage, manifest.version)
    padded = np.hstack([small_factors.item_factors, np.ones((300, 1), dtype=np.float32)])
    path = directory / manifest.angular_index.file
    path.unlink()
    build_annoy(padded, path, metric="angular", n_trees=10, seed=1)
    doc = json.loads((directory / "manifest.json").read_text())
    doc["files"][path.name] = file_entry(path).model_dump()  # checksums now agree
    (directory / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(
        IndexRejected, match=r"stored vectors differ|items, manifest says|cannot load"
    ):
        load_version(storage, manifest.version)


def test_an_index_file_of_another_catalogue_is_refused(published, small_factors):
    """Same size, same dimension, same checksums in the manifest: only the vectors differ."""
    import json

    from adapters.index_files import file_entry
    from index_builder.build import build_annoy

    storage, manifest = published
    directory = version_dir(storage, manifest.version)
    path = directory / manifest.mips_index.bands[0].file
    path.unlink()
    other = synth_factors(300, 1, 8, seed=99).item_factors
    build_annoy(
        np.hstack([other, np.zeros((300, 1), np.float32)]),
        path,
        metric="angular",
        n_trees=10,
        seed=1,
    )
    doc = json.loads((directory / "manifest.json").read_text())
    doc["files"][path.name] = file_entry(path).model_dump()
    (directory / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(IndexRejected, match="stored vectors differ"):
        load_version(storage, manifest.version)


def test_a_version_of_another_format_is_refused_with_the_reason(published):
    """Format 1 had a single MIPS file: a worker must say so, not fail on a missing band."""
    import json

    storage, manifest = published
    path = version_dir(storage, manifest.version) / "manifest.json"
    doc = json.loads(path.read_text())
    doc["format_version"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(IndexRejected, match=r"format_version: .*rebuild"):
        load_version(storage, manifest.version)


def _rewrite(directory, manifest, name, array):
    """Replace a version file and make the manifest's checksum agree: only the loader's own
    checks can then refuse it."""
    import json

    from adapters.index_files import file_entry

    np.save(directory / name, array)
    doc = json.loads((directory / "manifest.json").read_text())
    doc["files"][name] = file_entry(directory / name).model_dump()
    (directory / "manifest.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated", r"neighbours.rows.npy has \d+ bytes"),
        ("missing", r"neighbours.scores.npy is missing"),
        ("narrower", r"int32 \(300, 31\), expected int32 \(300, 32\)"),
        ("float_rows", r"float32 \(300, 32\), expected int32"),
        ("out_of_range", r"neighbour rows outside 0..299"),
        ("itself", r"own neighbour"),
        ("shifted", r"scores differ from the item factors' cosines"),
    ],
)
def test_a_damaged_neighbour_table_is_refused_with_the_reason(published, damage, reason):
    storage, manifest = published
    spec = manifest.neighbour_table
    assert spec is not None and spec.width == 32 and spec.method == "exact"
    directory = version_dir(storage, manifest.version)
    rows = np.load(directory / spec.rows_file)
    scores = np.load(directory / spec.scores_file)
    if damage == "truncated":
        path = directory / spec.rows_file
        path.write_bytes(path.read_bytes()[:-64])
    elif damage == "missing":
        (directory / spec.scores_file).unlink()
    elif damage == "narrower":
        _rewrite(directory, manifest, spec.rows_file, rows[:, :31])
    elif damage == "float_rows":
        _rewrite(directory, manifest, spec.rows_file, rows.astype(np.float32))
    elif damage == "out_of_range":
        rows[-1, -1] = 300
        _rewrite(directory, manifest, spec.rows_file, rows)
    elif damage == "itself":
        rows[0, 0] = 0
        _rewrite(directory, manifest, spec.rows_file, rows)
    else:  # the scores of the previous item: a table off by one row
        _rewrite(directory, manifest, spec.scores_file, np.roll(scores, 1, axis=0))
    with pytest.raises(IndexRejected, match=reason):
        load_version(storage, manifest.version)


def test_a_version_with_a_bad_table_is_refused_and_the_previous_keeps_serving(
    published, small_factors
):
    storage, first = published
    store = IndexStore(DirectoryStorage(storage), poll_interval_s=3600)
    store.start()
    try:
        bad = publish_version(small_factors, storage, BuildOptions(n_trees=3, quality=False))
        assert bad.neighbour_table is not None
        rows_file = version_dir(storage, bad.version) / bad.neighbour_table.rows_file
        rows_file.write_bytes(rows_file.read_bytes()[:-8])
        store.check_latest()
        assert store.current().version == first.version
        assert "neighbours.rows.npy" in store.refused[bad.version]
    finally:
        store.stop()


def test_a_version_without_a_table_is_served_by_its_index(tmp_path, small_factors):
    storage = tmp_path / "storage"
    manifest = publish_version(
        small_factors, storage, BuildOptions(n_trees=10, quality=False, neighbours=0)
    )
    assert manifest.neighbour_table is None
    assert not any(name.startswith("neighbours") for name in manifest.files)
    v = load_version(storage, manifest.version)
    try:
        assert v.search.neighbours is None
        assert v.search.from_table(0, 5) is None
        assert len(v.search.similar_items(0, 5)[0]) == 5
    finally:
        v.close()
