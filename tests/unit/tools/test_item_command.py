import pytest

from schemas.errors import AnnrecError
from tools.cli import build_parser
from tools.commands.item import parse_attributes, parse_vector


def test_vectors_are_json_lists_or_comma_separated():
    assert parse_vector("[1, 2.5]") == [1.0, 2.5]
    assert parse_vector("1,-2") == [1.0, -2.0]
    with pytest.raises(AnnrecError, match="--vector"):
        parse_vector("1,x")


def test_attributes_are_name_value_pairs_with_booleans():
    assert parse_attributes(["brand=b3", "in_stock=TRUE", "on_sale=false"]) == {
        "brand": "b3",
        "in_stock": True,
        "on_sale": False,
    }
    with pytest.raises(AnnrecError, match="NAME=VALUE"):
        parse_attributes(["brand"])


def test_item_put_and_remove_parse():
    args = build_parser(["item", "put", "--item-id", "n1", "--vector", "1,2"]).parse_args(
        ["item", "put", "--item-id", "n1", "--vector", "1,2"]
    )
    assert args.item_id == "n1" and args.handler.__name__ == "run_put"
    words = ["item", "put", "--item-id", "n2", "--users", "u1", "u2"]
    assert build_parser(words).parse_args(words).users == ["u1", "u2"]
    words = ["item", "remove", "a", "b"]
    args = build_parser(words).parse_args(words)
    assert args.item_ids == ["a", "b"] and args.handler.__name__ == "run_remove"
