from schemas.events import Reply, ScoredItem
from tools.client import format_reply


def _reply(**fields):
    base = {
        "request_id": "r1",
        "status": "ok",
        "kind": "recommend",
        "subject_id": "u1",
        "index_version": "v1",
        "worker_id": "w1",
    }
    return Reply(**{**base, **fields})


def test_a_cold_start_says_why_its_items_have_no_score():
    items = [ScoredItem(item_id="i7", score=None, filled=True)]
    text = format_reply(_reply(fallback="cold_start", items=items))
    assert "fallback: cold_start: the version knows nothing of this user" in text
    row = text.splitlines()[-1]
    assert row.split() == ["1", "i7", "-", "filled"]


def test_filled_items_are_named_and_explained():
    items = [ScoredItem(item_id="i1", score=0.5), ScoredItem(item_id="i9", score=0.1, filled=True)]
    text = format_reply(_reply(items=items, unknown_items=["x1"]))
    assert "filled: fewer than k results were left" in text
    assert "ignored: items this version does not know: x1" in text
    first, second = text.splitlines()[-2:]
    assert not first.endswith("filled") and second.endswith("filled")


def test_a_plain_answer_has_no_notes():
    text = format_reply(_reply(items=[ScoredItem(item_id="i1", score=0.5)]))
    assert len(text.splitlines()) == 3  # head, column names, one row
