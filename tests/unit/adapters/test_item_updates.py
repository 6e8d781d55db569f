from adapters.item_updates import UpdateState
from schemas.events import ItemUpdate


def _update(item: str, value: bool, attr: str = "in_stock") -> ItemUpdate:
    return ItemUpdate(item_id=item, attr=attr, value=value)


def test_since_returns_the_newest_value_of_keys_updated_from_an_offset_on():
    state = UpdateState()
    state.record(0, 0, _update("i1", False))
    state.record(0, 1, _update("i2", False))
    state.record(0, 2, _update("i3", False))
    state.record(0, 3, _update("i1", True))  # i1 again: now among the recent ones
    state.advance(0, 4)  # a tombstone or an unreadable update
    assert state.values[("in_stock", "i1")] is True
    assert state.next_offsets == {0: 5}
    assert state.since({0: 3}) == {("in_stock", "i1"): True}
    assert state.since({0: 2}) == {("in_stock", "i1"): True, ("in_stock", "i3"): False}
    assert state.since({0: 5}) == {}
    assert state.since({}) == state.values  # a version built without Kafka gets everything


def test_since_reads_each_partition_from_its_own_offset():
    state = UpdateState()
    state.record(0, 0, _update("a", False))
    state.record(1, 0, _update("b", False))
    state.record(1, 1, _update("c", False, attr="on_sale"))
    state.record(0, 1, _update("d", True))
    assert state.since({0: 1, 1: 1}) == {("in_stock", "d"): True, ("on_sale", "c"): False}
    assert state.since({0: 2}) == {
        ("in_stock", "b"): False,
        ("on_sale", "c"): False,
    }
