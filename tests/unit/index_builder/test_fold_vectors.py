import numpy as np

from index_builder.attributes import table_from_columns
from index_builder.fold_vectors import fold_item_vectors
from index_builder.synth import synth_factors
from schemas.events import ItemVector
from schemas.manifest import FALSE, UNKNOWN


def test_upserts_replace_or_append_rows_and_removals_drop_them():
    factors = synth_factors(n_items=20, n_users=5, dim=4, n_clusters=2, seed=1)
    ids = factors.item_ids.tolist()
    table = table_from_columns(
        {"item_id": ids, "color": ["red"] * 20, "in_stock": ["true"] * 20}, ids
    )
    events = {
        "i3": ItemVector(item_id="i3", removed=True),
        "i5": ItemVector(item_id="i5", vector=[1, 2, 3, 4]),  # keeps its attributes
        "n1": ItemVector(
            item_id="n1", vector=[4, 3, 2, 1], attributes={"color": "violet", "in_stock": False}
        ),
        "n2": ItemVector(item_id="n2", vector=[1, 2]),  # another dimension: skipped
        "n3": ItemVector(item_id="n3", vector=[1, 1, 1, 1], attributes={"size": "xl"}),
        "gone": ItemVector(item_id="gone", removed=True),  # never in the version: nothing
    }
    folded = fold_item_vectors(factors, table, events)
    out = folded.factors
    assert folded.applied == 3 and folded.skipped == 2
    assert out.item_ids.tolist() == [i for i in ids if i != "i3"] + ["n1"]
    row = {x: i for i, x in enumerate(out.item_ids.tolist())}
    np.testing.assert_array_equal(out.item_factors[row["i5"]], [1, 2, 3, 4])
    np.testing.assert_array_equal(out.item_factors[row["n1"]], [4, 3, 2, 1])
    np.testing.assert_array_equal(out.item_factors[row["i7"]], factors.item_factors[7])
    assert folded.attributes is not None and folded.attributes.n_items == 20
    color, in_stock = folded.attributes.columns
    assert color.values == ["red", "violet"]
    assert color.codes[row["n1"]] == 1 and color.codes[row["i5"]] == 0
    assert in_stock.codes[row["n1"]] == FALSE and in_stock.codes[row["i5"]] != UNKNOWN
    assert out.user_factors is factors.user_factors


def test_no_events_changes_nothing():
    factors = synth_factors(n_items=10, n_users=3, dim=4, n_clusters=2, seed=1)
    folded = fold_item_vectors(factors, None, {})
    assert folded.factors is factors and folded.applied == 0


def test_an_item_given_by_its_users_is_folded_in_as_the_worker_folds_it():
    from query_engine.vectors import fold_in, item_gramian
    from schemas.manifest import FoldIn

    factors = synth_factors(n_items=20, n_users=6, dim=4, n_clusters=2, seed=1)
    spec = FoldIn(regularization=0.1, alpha=2.0)
    events = {
        "n1": ItemVector(item_id="n1", users=["u0", "u3", "stranger"]),
        "n2": ItemVector(item_id="n2", users=["stranger"]),  # nobody known: skipped
    }
    folded = fold_item_vectors(factors, None, events, spec)
    assert folded.applied == 1 and folded.skipped == 1
    assert folded.factors.item_ids.tolist()[-1] == "n1"
    expected = fold_in(item_gramian(factors.user_factors), factors.user_factors[[0, 3]], 0.1, 2.0)
    np.testing.assert_allclose(folded.factors.item_factors[-1], expected, rtol=1e-6)
