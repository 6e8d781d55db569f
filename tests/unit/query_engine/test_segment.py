import numpy as np
import pytest

from query_engine.segment import Draft, Segment, merged, merged_within, past_hidden, refusal
from schemas.events import ItemVector
from schemas.filters import AttrEquals
from schemas.manifest import AttributeSpec

SPECS = [
    AttributeSpec(
        name="brand", type="category", values=["a", "b"], rows_file="r", offsets_file="o"
    ),
    AttributeSpec(name="in_stock", type="bool", rows_file="s"),
]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (
            ItemVector(item_id="x", vector=[1.0, 2.0, 3.0]),
            "vector has 3 values, the version has K=2",
        ),
        (
            ItemVector(item_id="x", vector=[1.0, 2.0], attributes={"colour": "red"}),
            "unknown attribute 'colour'",
        ),
        (ItemVector(item_id="x", vector=[1.0, 2.0], attributes={"in_stock": "yes"}), "is boolean"),
        (ItemVector(item_id="x", vector=[1.0, 2.0], attributes={"brand": True}), "is categorical"),
    ],
)
def test_events_a_version_cannot_take_are_refused_with_the_reason(event, reason):
    assert reason in (refusal(event, 2, SPECS) or "")


def test_well_formed_events_and_removals_are_taken():
    assert (
        refusal(ItemVector(item_id="x", vector=[1, 2], attributes={"brand": "new"}), 2, SPECS)
        is None
    )
    assert refusal(ItemVector(item_id="x", removed=True), 7, SPECS) is None


def test_segment_upserts_removals_hidden_rows_and_its_own_filter():
    s = Segment(2, SPECS)
    s.upsert("n1", [1.0, 0.0], {"brand": "c", "in_stock": True}, None)  # a brand the version lacks
    s.upsert("i5", [0.0, 1.0], {"brand": "a"}, 5)  # a version item's new vector
    s.upsert("n2", [2.0, 2.0], {}, None)
    s.remove("n2", None)
    s.remove("i9", 9)
    assert len(s) == 2 and s.hidden == {5, 9} and s.size == 4
    assert s.local("n2") is None and s.removed == {"n2", "i9"}
    ids, scores = s.recommend(np.array([1.0, 0.5], np.float32), 5)
    assert ids == ["n1", "i5"] and scores == [1.0, 0.5]
    keep = s.passing(AttrEquals(attr="brand", eq="c"), None)
    assert s.recommend(np.array([1.0, 0.5], np.float32), 5, keep)[0] == ["n1"]
    assert s.set_flag("in_stock", "n1", False) and not s.set_flag("in_stock", "n1", False)
    assert s.similar(np.array([1.0, 0.0], np.float32), 5, exclude=["n1"])[0] == ["i5"]
    s.upsert("n2", [3.0, 3.0], {}, None)  # removed, then upserted again: served again
    assert s.recommend(np.array([1.0, 0.5], np.float32), 1)[0] == ["n2"] and len(s) == 3
    s.remove("n1", None)
    assert s.recommend(np.array([1.0, 0.0], np.float32), 5)[0] == ["n2", "i5"]


def test_merged_ranks_by_score_and_fills_last():
    version = Draft(["a", "b"], [3.0, 1.0], [("p", 0.1)])
    out = merged(version, ["n", "b"], [2.0, 0.5], 3)
    assert (out.ids, out.scores, out.filled) == (["a", "n", "b"], [3.0, 2.0, 0.5], [])
    short = merged(version, ["n"], [2.0], 4)
    assert short.ids == ["a", "n", "b"] and short.filled == [("p", 0.1)]
    assert version == Draft(["a", "b"], [3.0, 1.0], [("p", 0.1)])  # not changed in place


def test_merged_within_walks_both_sides_by_score_under_max_per():
    """At most one item of a value: the fresh item of value 0 displaces the version's (lower)
    one, and the next of the version's values takes its place; filled items come last,
    counted by the walk (the filled item of value 1 is skipped)."""
    version = Draft(["a", "b", "c"], [3.0, 2.0, 1.0], [("p", None), ("q", None)])
    codes = np.array([0, 1, 1, 1, 2], np.int32)  # a b c, then p q
    out = merged_within(version, codes, ["n"], [3.5], np.array([0], np.int32), 1, 4)
    assert (out.ids, out.scores, out.filled) == (["n", "b"], [3.5, 2.0], [("q", None)])


def test_past_hidden_asks_again_until_enough_results_are_not_hidden():
    ranking = np.arange(100, dtype=np.int64)
    asked = []

    def search(n):
        asked.append(n)
        return ranking[:n], -ranking[:n].astype(np.float32)

    rows, _ = past_hidden(search, 5, hidden={0, 1, 2, 3, 4, 5, 6})
    assert len([r for r in rows.tolist() if r > 6]) >= 5 and asked[0] == 5 and len(asked) > 1
    assert past_hidden(search, 5, set())[0].tolist() == [0, 1, 2, 3, 4]
