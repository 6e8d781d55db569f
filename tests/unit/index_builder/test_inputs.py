import numpy as np
import pytest

from index_builder.inputs import load_factors, make_factors, save_factors
from schemas.errors import InvalidInput


def test_factors_round_trip_through_npz_without_pickle(tmp_path, small_factors):
    path = tmp_path / "f.npz"
    save_factors(path, small_factors)
    loaded = load_factors(path)
    np.testing.assert_array_equal(loaded.item_factors, small_factors.item_factors)
    np.testing.assert_array_equal(loaded.user_ids, small_factors.user_ids)
    assert loaded.checksum() == small_factors.checksum()


def test_object_arrays_that_need_pickle_are_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, item_factors=np.ones((2, 2)), item_ids=np.array(["a", 1], dtype=object))
    with pytest.raises(InvalidInput, match="pickle"):
        load_factors(path)


def test_duplicate_ids_are_refused_naming_the_rows():
    with pytest.raises(InvalidInput, match=r"duplicate id 'b' at rows \[1, 3\]"):
        make_factors(np.ones((4, 2)), np.ones((0, 2)), ["a", "b", "c", "b"])


def test_non_finite_rows_are_refused_naming_the_row():
    items = np.ones((5, 3))
    items[3, 1] = np.nan
    with pytest.raises(InvalidInput, match="item_factors row 3"):
        make_factors(items, np.ones((1, 3)))


def test_mismatched_dimensions_and_counts_are_refused():
    with pytest.raises(InvalidInput, match="K=4"):
        make_factors(np.ones((3, 3)), np.ones((2, 4)))
    with pytest.raises(InvalidInput, match="3 ids"):
        make_factors(np.ones((3, 3)), np.ones((2, 3)), ["a", "b"])


def test_integer_ids_become_compact_strings():
    f = make_factors(np.ones((3, 2)), np.ones((1, 2)), np.array([10, 200, 3]))
    assert f.item_ids.tolist() == ["10", "200", "3"]
    assert f.item_ids.dtype == np.dtype("<U3")
    assert f.user_ids.tolist() == ["0"]


def test_separate_npy_files_load_like_an_npz(tmp_path, small_factors):
    from index_builder.inputs import load_factor_arrays

    paths = {}
    for name in ("item_factors", "user_factors", "item_ids", "user_ids"):
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], getattr(small_factors, name))
    loaded = load_factor_arrays(**paths)
    assert loaded.checksum() == small_factors.checksum()
    only_items = load_factor_arrays(paths["item_factors"])
    assert only_items.user_factors.shape == (0, 8) and only_items.item_ids[5] == "5"
