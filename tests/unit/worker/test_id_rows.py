import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.id_rows import DuplicateIds, IdRows

ID = st.text(alphabet="abi019_-é", min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(ID, unique=True, max_size=60), probes=st.lists(ID, max_size=30))
def test_lookups_equal_a_dict(ids, probes):
    rows = IdRows(np.array(ids, dtype=str))
    expected = {x: i for i, x in enumerate(ids)}
    assert len(rows) == len(expected) and sorted(rows) == sorted(expected)
    for key in ids + probes + [k + "z" for k in ids]:  # longer than any stored id, too
        assert rows.get(key) == expected.get(key)
        assert (key in rows) == (key in expected)
    found, unknown = rows.rows(probes + ids[:5])
    assert found.tolist() == [expected[k] for k in probes + ids[:5] if k in expected]
    assert unknown == [k for k in probes if k not in expected]


def test_a_key_longer_than_the_stored_width_never_matches_its_prefix():
    rows = IdRows(np.array(["i1", "i10", "i100"]))  # stored as <U4
    assert rows.get("i1000") is None and rows.get("i100") == 2
    assert rows.rows(["i1000", "i10"])[0].tolist() == [1]
    with pytest.raises(KeyError):
        rows["i1000"]


def test_a_longer_key_is_looked_up_without_copying_the_ids():
    # numpy compares a key wider than the array by widening the whole array: a copy of every
    # id per lookup (at 1M ids, 100 upserts/s of new, longer ids took a worker's whole thread).
    ids = np.array([f"i{i}" for i in range(100_000)])  # <U6: 2.4 MB, 5.6 MB at 14 characters
    rows = IdRows(ids)
    tracemalloc.start()
    try:
        assert rows.get("fresh-8c1e-123") is None and rows.get("i99999") == 99_999
        found, unknown = rows.rows(["i7", "fresh-8c1e-123", "i99999"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.tolist() == [7, 99_999] and unknown == ["fresh-8c1e-123"]
    assert peak < 100_000  # bytes: a few small arrays, not a copy of the 2.4 MB of ids


def test_numeric_ids_are_looked_up_as_text():
    rows = IdRows(np.array([30, 10, 20]))
    assert rows["10"] == 1 and 10 not in rows and rows.rows([])[0].size == 0


def test_duplicates_are_refused_with_the_rows():
    with pytest.raises(DuplicateIds, match=r"'b' at rows \[1, 3\]"):
        IdRows(np.array(["a", "b", "c", "b"]))
