from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from index_builder.synth import synth_interactions, write_interactions
from index_builder.train import (
    Interactions,
    load_interactions,
    make_interactions,
    train_als,
)
from schemas.errors import AnnrecError, InvalidInput
from schemas.manifest import TrainParams

ROWS = [("u1", "i1", 1.0), ("7", "i2", 2.0), ("u1", "i1", 0.5), ("u2", "007", 3.0)]


def _write_csv(path, text):
    path.write_text(text)
    return path


def _dense(x: Interactions) -> dict[tuple[str, str], float]:
    coo = x.user_items.tocoo()
    return {
        (str(x.user_ids[u]), str(x.item_ids[i])): float(w)
        for u, i, w in zip(coo.row, coo.col, coo.data, strict=True)
    }


def test_csv_round_trip_sums_duplicates_and_keeps_ids_as_strings(tmp_path):
    text = "user,item,weight\n" + "".join(f"{u},{i},{w}\n" for u, i, w in ROWS)
    x = load_interactions(_write_csv(tmp_path / "log.csv", text))
    assert x.user_ids.tolist() == ["7", "u1", "u2"]  # sorted, as strings
    assert x.item_ids.tolist() == ["007", "i1", "i2"]  # "007" is not 7
    assert x.user_items.dtype == np.float32
    assert x.user_items.shape == (3, 3)
    assert _dense(x) == {("u1", "i1"): 1.5, ("7", "i2"): 2.0, ("u2", "007"): 3.0}
    assert x.n_interactions == 3


def test_parquet_round_trip_with_integer_ids(tmp_path):
    path = tmp_path / "log.parquet"
    table = pa.table(
        {
            "user": pa.array([10, 2, 10, 2], pa.int64()),
            "item": pa.array([5, 5, 5, 6], pa.int32()),
            "weight": pa.array([1.0, 2.0, 4.0, 0.5], pa.float32()),
            "timestamp": pa.array([1, 2, 3, 4]),  # extra columns are ignored
        }
    )
    pq.write_table(table, path)
    x = load_interactions(path)
    assert x.user_ids.tolist() == ["10", "2"]  # string order, not numeric
    assert x.item_ids.tolist() == ["5", "6"]
    assert _dense(x) == {("10", "5"): 5.0, ("2", "5"): 2.0, ("2", "6"): 0.5}


def test_csv_and_parquet_of_the_same_log_load_identically(tmp_path):
    log = synth_interactions(50, 80, interactions_per_user=10)
    csv_rows = write_interactions(tmp_path / "s.csv", log)
    pq_rows = write_interactions(tmp_path / "s.parquet", log)
    assert csv_rows == pq_rows == 500
    a = load_interactions(tmp_path / "s.csv")
    b = load_interactions(tmp_path / "s.parquet")
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    assert (a.user_items != b.user_items).nnz == 0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_missing_weight_column_means_weight_one(tmp_path, suffix):
    path = tmp_path / f"log{suffix}"
    if suffix == ".csv":
        _write_csv(path, "item,user\ni1,u1\ni2,u1\ni1,u1\n")  # column order does not matter
    else:
        pq.write_table(pa.table({"user": ["u1", "u1", "u1"], "item": ["i1", "i2", "i1"]}), path)
    x = load_interactions(path)
    assert _dense(x) == {("u1", "i1"): 2.0, ("u1", "i2"): 1.0}


def test_zero_weight_rows_keep_their_ids_but_add_no_entry(tmp_path):
    x = load_interactions(_write_csv(tmp_path / "z.csv", "user,item,weight\nu1,i1,1\nu2,i2,0\n"))
    assert x.user_ids.tolist() == ["u1", "u2"]
    assert x.item_ids.tolist() == ["i1", "i2"]
    assert _dense(x) == {("u1", "i1"): 1.0}


def test_make_interactions_matches_the_loader():
    users, items, weights = zip(*ROWS, strict=True)
    x = make_interactions(users, items, weights)
    assert _dense(x) == {("u1", "i1"): 1.5, ("7", "i2"): 2.0, ("u2", "007"): 3.0}


# Each bad file has its bad row at data row 3 (the header is not a data row), so the message must
# say "row 3", never the 0-based 2 or the line number 4.
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("u1,i1,1\nu2,i2,1\nu3,i3,nan\n", "weight nan is not finite"),
        ("u1,i1,1\nu2,i2,1\nu3,i3,inf\n", "weight inf is not finite"),
        ("u1,i1,1\nu2,i2,1\nu3,i3,-0.5\n", "weight -0.5 is negative"),
        ("u1,i1,1\nu2,i2,1\n,i3,1\n", "empty user"),
        ("u1,i1,1\nu2,i2,1\nu3,,1\n", "empty item"),
        ("u1,i1,1\nu2,i2,1\nu3,i3,\n", "empty weight"),
        ("u1,i1,1\nu2,i2,1\nu3,i3,lots\n", "weight 'lots' is not a number"),
        ("u1,i1,1\nu2,i2,1\nu3,i3\n", "has 2 fields, the header has 3"),  # a missing field
    ],
    ids=["nan", "inf", "negative", "empty-user", "empty-item", "empty-weight", "text", "short"],
)
def test_bad_csv_rows_are_refused_naming_the_row(tmp_path, body, reason):
    path = _write_csv(tmp_path / "bad.csv", "user,item,weight\n" + body + "u4,i4,1\n")
    with pytest.raises(InvalidInput, match=r"row 3 \(") as info:
        load_interactions(path)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message
    assert "header not counted" in message  # says how it counts


def test_missing_column_in_the_header_is_refused_naming_it(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", "usr,item,weight\nu1,i1,1\n")
    with pytest.raises(InvalidInput, match=r"header has no 'user' column .*'usr'"):
        load_interactions(path)


def test_bad_parquet_rows_are_refused_naming_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table({"user": ["a", "b", "c"], "item": ["x", "y", "z"], "weight": [1.0, None, -1.0]}),
        path,
    )
    with pytest.raises(InvalidInput, match=r"row 2 \(counted from 1\): empty weight"):
        load_interactions(path)
    pq.write_table(pa.table({"user": ["a", "b"], "item": ["x", None]}), path)
    with pytest.raises(InvalidInput, match=r"row 2 \(counted from 1\): empty item"):
        load_interactions(path)
    pq.write_table(pa.table({"item": ["x"]}), path)
    with pytest.raises(InvalidInput, match="schema has no 'user' column"):
        load_interactions(path)


def test_unreadable_or_empty_files_are_refused(tmp_path):
    with pytest.raises(InvalidInput, match=r"\.csv or \.parquet"):
        load_interactions(tmp_path / "log.tsv")
    with pytest.raises(InvalidInput, match="does not exist"):
        load_interactions(tmp_path / "nope.csv")
    with pytest.raises(InvalidInput, match="no interactions"):
        load_interactions(_write_csv(tmp_path / "empty.csv", "user,item,weight\n"))
    with pytest.raises(InvalidInput, match="cannot read"):
        load_interactions(_write_csv(tmp_path / "junk.parquet", "not parquet"))


def test_synth_interactions_are_reproducible_for_a_seed_and_differ_across_seeds():
    a = synth_interactions(200, 300, 8, 20, seed=1)
    b = synth_interactions(200, 300, 8, 20, seed=1)
    c = synth_interactions(200, 300, 8, 20, seed=2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    users, items, weights = a
    assert len(users) == len(items) == len(weights) == 200 * 20
    assert (weights >= 1).all()


def test_synth_interactions_are_popularity_skewed():
    _, items, _ = synth_interactions(2000, 1000, 16, 30, seed=0)
    counts = np.sort(np.unique(items, return_counts=True)[1])[::-1]
    # The top 10% of items take far more than 10% of the interactions.
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """(training interactions, held-out item column per user): one pair per user removed."""
    path = tmp_path_factory.mktemp("train") / "log.parquet"
    write_interactions(path, synth_interactions(300, 400, 16, 30, seed=5, n_clusters=16))
    full = load_interactions(path)
    matrix = full.user_items.copy()
    rng = np.random.default_rng(0)
    held = np.empty(matrix.shape[0], dtype=np.int64)
    for u in range(matrix.shape[0]):
        k = rng.integers(matrix.indptr[u], matrix.indptr[u + 1])
        held[u] = matrix.indices[k]
        matrix.data[k] = 0  # the whole (user, item) pair: duplicates were already summed
    matrix.eliminate_zeros()
    assert (np.diff(matrix.indptr) > 0).all()  # every user still has something to learn from
    return Interactions(full.user_ids, full.item_ids, matrix), held


def test_als_factors_have_the_right_shapes_and_ids(held_out):
    train, _ = held_out
    factors, params = train_als(train, factors=16, iterations=10, seed=3, show_progress=False)
    n_users, n_items = train.user_items.shape
    assert factors.item_factors.shape == (n_items, 16)
    assert factors.user_factors.shape == (n_users, 16)
    assert factors.item_factors.dtype == factors.user_factors.dtype == np.float32
    assert np.isfinite(factors.item_factors).all() and np.isfinite(factors.user_factors).all()
    np.testing.assert_array_equal(factors.item_ids, train.item_ids)
    np.testing.assert_array_equal(factors.user_ids, train.user_ids)
    assert params == TrainParams(
        factors=16,
        regularization=0.01,
        alpha=1.0,
        iterations=10,
        seed=3,
        n_interactions=train.n_interactions,
        implicit_version=params.implicit_version,
    )
    assert params.algorithm == "implicit.als"
    assert params.implicit_version.startswith("0.")


def test_als_is_reproducible_for_a_seed(held_out):
    train, _ = held_out
    a, _ = train_als(train, factors=8, iterations=3, seed=7, show_progress=False)
    b, _ = train_als(train, factors=8, iterations=3, seed=7, show_progress=False)
    c, _ = train_als(train, factors=8, iterations=3, seed=8, show_progress=False)
    assert a.checksum() == b.checksum()
    assert a.checksum() != c.checksum()


def test_als_ranks_held_out_items_far_above_chance_and_popularity(held_out):
    train, held = held_out
    factors, _ = train_als(train, factors=16, iterations=10, seed=0, show_progress=False)
    users = np.arange(len(held))
    seen = train.user_items.nonzero()

    def hit_rate(scores: np.ndarray) -> float:
        scores = scores.astype(np.float64)
        scores[seen] = -np.inf  # rank only what the user has not interacted with
        rank = (scores > scores[users, held][:, None]).sum(axis=1)
        return float((rank < 50).mean())

    n_items = train.user_items.shape[1]
    als = hit_rate(factors.user_factors @ factors.item_factors.T)
    popularity = np.asarray(train.user_items.sum(axis=0)).ravel()
    most_popular = hit_rate(np.tile(popularity, (len(users), 1)))
    assert als > 3 * 50 / n_items, (als, 50 / n_items)
    assert als > most_popular + 0.1, (als, most_popular)  # personal, not just popular items


def test_bad_als_parameters_are_refused(held_out):
    train, _ = held_out
    with pytest.raises(InvalidInput, match="factors"):
        train_als(train, factors=0, show_progress=False)
    with pytest.raises(InvalidInput, match="alpha"):
        train_als(train, alpha=-1.0, show_progress=False)


def test_training_without_implicit_names_the_extra(held_out, monkeypatch):
    monkeypatch.setitem(sys.modules, "implicit", None)  # what an absent package looks like
    with pytest.raises(AnnrecError, match=r"pip install 'annrec\[train\]'"):
        train_als(held_out[0], show_progress=False)


def test_chunked_arrow_ids_encode_like_contiguous_ones():
    """At millions of rows pa.array returns a ChunkedArray (found by the 1M benchmark)."""
    users = np.array(["b", "a", "c", "a"])
    items = np.array(["x", "y", "x", "z"])
    plain = make_interactions(users, items)
    chunked = pa.chunked_array([pa.array(users[:2]), pa.array(users[2:])])
    from index_builder.train import _encode

    codes, uniq = _encode(chunked, "user", lambda i: f"row {i}")
    assert uniq.tolist() == plain.user_ids.tolist() == ["a", "b", "c"]
    assert codes.tolist() == [1, 0, 2, 0]


@pytest.mark.parametrize(
    ("values", "expected_order"),
    [
        (["3", "1.5", "2"], [2, 0, 1]),  # epoch numbers
        (["2024-03-01T10:00:00", "2024-01-01", "2024-02-01 12:00:00"], [2, 0, 1]),  # ISO 8601
        (["2024-03-01T10:00:00Z", "2024-01-01T00:00+01:00", "2024-02-01T12:00:00.5Z"], [2, 0, 1]),
    ],
    ids=["numbers", "iso8601", "iso8601-offsets"],
)
def test_csv_timestamps_are_kept_row_by_row(tmp_path, values, expected_order):
    text = "user,item,weight,timestamp\n" + "".join(
        f"u{r},i{r},1,{v}\n" for r, v in enumerate(values)
    )
    x = load_interactions(_write_csv(tmp_path / "t.csv", text))
    assert x.events is not None and x.events.timestamps is not None
    assert np.argsort(x.events.timestamps).argsort().tolist() == expected_order
    assert x.events.users.tolist() == [0, 1, 2] and x.events.weights.tolist() == [1.0] * 3


def test_parquet_timestamp_and_date_columns_order_the_rows(tmp_path):
    import datetime as dt

    when = [dt.datetime(2024, 5, 1, 12), dt.datetime(2023, 1, 1), dt.datetime(2024, 5, 1, 11)]
    for column in (pa.array(when, pa.timestamp("ms")), pa.array([w.date() for w in when])):
        path = tmp_path / "t.parquet"
        pq.write_table(
            pa.table({"user": ["a", "b", "c"], "item": ["x", "y", "z"], "timestamp": column}), path
        )
        x = load_interactions(path)
        assert x.events is not None and x.events.timestamps is not None
        assert x.events.timestamps[1] < min(x.events.timestamps[0], x.events.timestamps[2])


@pytest.mark.parametrize(
    ("value", "reason"), [("", "empty timestamp"), ("yesterday", "'yesterday' is not a number")]
)
def test_bad_timestamps_are_refused_naming_the_row(tmp_path, value, reason):
    text = f"user,item,timestamp\nu1,i1,1\nu2,i2,{value}\nu3,i3,3\n"
    with pytest.raises(InvalidInput, match=rf"row 2 \(.*{reason}"):
        load_interactions(_write_csv(tmp_path / "t.csv", text))


def test_zero_weight_rows_are_not_events():
    x = make_interactions(["u1", "u2", "u1"], ["i1", "i1", "i2"], [1.0, 0.0, 2.0], [1, 2, 3])
    assert x.events is not None
    assert x.events.users.tolist() == [0, 0] and x.events.items.tolist() == [0, 1]
    assert x.events.timestamps is not None and x.events.timestamps.tolist() == [1.0, 3.0]


@pytest.mark.parametrize("weighting", ["bm25", "tfidf"])
def test_weighted_training_is_recorded_and_differs_from_raw(held_out, weighting):
    train, _ = held_out
    raw, _ = train_als(train, factors=8, iterations=3, seed=7, show_progress=False)
    weighted, params = train_als(
        train, factors=8, iterations=3, seed=7, show_progress=False, weighting=weighting
    )
    assert params.weighting == weighting and raw.checksum() != weighted.checksum()
