"""`annrec request`: the max_per and explain flags, and how their replies print."""

import pytest

from schemas.errors import AnnrecError
from schemas.events import Contribution, MaxPer, Reply, ScoredItem
from tools.client import format_reply
from tools.commands.request import _parse_max_per


def test_max_per_flag_is_attr_colon_n():
    assert _parse_max_per("brand:2") == MaxPer(attr="brand", n=2)
    for bad in ("brand", "brand:x", ":2", "brand:0"):
        with pytest.raises(AnnrecError, match="--max-per: give ATTR:N"):
            _parse_max_per(bad)


def test_a_partial_explained_reply_prints_its_items_outcome_and_reasons():
    because = [
        Contribution(item_id="i7", score=0.6, share=0.75),
        Contribution(item_id="i9", score=0.2, share=0.25),
    ]
    reply = Reply(
        request_id="r",
        status="partial",
        kind="recommend",
        items=[ScoredItem(item_id="i3", score=0.8, because=because)],
        max_per=MaxPer(attr="maker", n=1),
        worker_id="w",
    )
    text = format_reply(reply)
    assert "i3" in text and "0.8000" in text and "partial" not in text.splitlines()[0]
    assert "max_per: at most 1 per maker: could not be met" in text
    assert "i7: 75%, i9: 25%" in text


def test_a_refused_explanation_is_printed():
    reply = Reply(
        request_id="r",
        status="ok",
        kind="recommend",
        items=[ScoredItem(item_id="i3", score=0.8)],
        explain_refused="explain: a user_vector has no history to explain the scores by",
        worker_id="w",
    )
    lines = format_reply(reply).splitlines()
    assert "explain: a user_vector has no history to explain the scores by" in lines
