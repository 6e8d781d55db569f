"""`annrec item put|remove`: items added, changed or removed between builds (the item-vectors
topic). Every worker serves them within a batch from its fresh segment; the next build folds
them into the version."""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from adapters.item_vectors import publish_item_vectors
from adapters.topics import ensure_topics, topic_specs
from schemas.errors import AnnrecError, describe
from schemas.events import ItemVector
from schemas.settings import CommonSettings
from tools import services


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="item_action", required=True)
    put = sub.add_parser("put", help="add an item, or replace an item's vector and attributes")
    put.add_argument("--item-id", required=True)
    given = put.add_mutually_exclusive_group(required=True)
    given.add_argument(
        "--vector", help="the item's K factors: a JSON list or comma-separated numbers"
    )
    given.add_argument(
        "--users",
        nargs="+",
        metavar="USER_ID",
        help="instead of a vector: users who interacted with it (the ALS item step)",
    )
    put.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an attribute the version has (repeatable); true/false for a boolean one",
    )
    put.set_defaults(handler=run_put)
    remove = sub.add_parser("remove", help="remove items: never returned again")
    remove.add_argument("item_ids", nargs="+", metavar="ITEM_ID")
    remove.set_defaults(handler=run_remove)


def parse_vector(text: str) -> list[float]:
    """A JSON list or comma-separated numbers -> floats; AnnrecError names what is wrong."""
    try:
        value = json.loads(text) if text.lstrip().startswith("[") else text.split(",")
        return [float(x) for x in value]
    except (ValueError, TypeError) as exc:
        raise AnnrecError(f"--vector: not a list of numbers ({exc})") from exc


def parse_attributes(pairs: list[str]) -> dict[str, str | bool]:
    """NAME=VALUE pairs -> attributes; `true`/`false` (any case) are booleans."""
    out: dict[str, str | bool] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise AnnrecError(f"--attr: give NAME=VALUE (got {pair!r})")
        lowered = value.lower()
        out[name] = lowered == "true" if lowered in ("true", "false") else value
    return out


def _publish(events: list[ItemVector]) -> None:
    settings = CommonSettings()
    conf = services.kafka_conf(settings)
    ensure_topics(conf, topic_specs(settings))
    publish_item_vectors(conf, settings.topic_item_vectors, events)
    print(f"{len(events)} item-vector events published to {settings.topic_item_vectors}")


def run_put(args: argparse.Namespace) -> int:
    try:
        event = ItemVector(
            item_id=args.item_id,
            vector=None if args.vector is None else parse_vector(args.vector),
            users=args.users,
            attributes=parse_attributes(args.attr),
        )
    except ValidationError as exc:
        raise AnnrecError(f"item put: {describe(exc)}") from exc
    _publish([event])
    return 0


def run_remove(args: argparse.Namespace) -> int:
    try:
        events = [ItemVector(item_id=i, removed=True) for i in args.item_ids]
    except ValidationError as exc:
        raise AnnrecError(f"item remove: {describe(exc)}") from exc
    _publish(events)
    return 0
