"""`annrec request`, `annrec item-update` and `annrec interact`: events a person sends through
Kafka."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from adapters.interactions import publish_interactions
from adapters.item_updates import publish_item_updates
from adapters.topics import ensure_topics, topic_specs
from schemas.errors import AnnrecError, describe
from schemas.events import (
    Interaction,
    ItemUpdate,
    MaxPer,
    RecommendRequest,
    SimilarItemsRequest,
    utc_now,
)
from schemas.filters import FILTER_ADAPTER, Filter, check_shape
from schemas.settings import CommonSettings
from tools import services
from tools.client import format_reply, new_request_id, request_once


def register_request(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["similar-items", "recommend"])
    parser.add_argument("--item-id")
    parser.add_argument("--user-id")
    parser.add_argument(
        "--recent-items", nargs="+", metavar="ITEM_ID", help="recommend from these items"
    )
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print the reply event as JSON")
    parser.add_argument("--filter", help='JSON filter, e.g. \'{"attr": "in_stock", "eq": true}\'')
    parser.add_argument(
        "--max-per",
        metavar="ATTR:N",
        help="at most N results per value of a categorical attribute, e.g. brand:2",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="recommend with --recent-items: which of them each item's score comes from",
    )
    parser.add_argument(
        "--exclude-seen",
        action="store_true",
        help="recommend: leave out the recent items (--recent-items, or the user's interactions)",
    )
    parser.set_defaults(handler=run_request)


def register_item_update(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("item_ids", nargs="+", metavar="ITEM_ID")
    parser.add_argument("--value", choices=["true", "false"], required=True)
    parser.add_argument("--attr", default="in_stock", help="a boolean attribute (in_stock)")
    parser.set_defaults(handler=run_item_update)


def register_interact(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--item-id", required=True, nargs="+", metavar="ITEM_ID")
    parser.add_argument("--type", default="interaction", help="view, click, purchase, ...")
    parser.add_argument("--weight", type=float, default=1.0, help="the ALS weight (default 1)")
    parser.add_argument("--event-id", help="the event's id (one item only); default: none")
    parser.set_defaults(handler=run_interact)


def run_interact(args: argparse.Namespace) -> int:
    """One event per item, now: the user's next recommend by user_id reflects them."""
    settings = CommonSettings()
    conf = services.kafka_conf(settings)
    ensure_topics(conf, topic_specs(settings))
    if args.event_id and len(args.item_id) > 1:
        raise AnnrecError("--event-id names one event: give one --item-id with it")
    try:
        events = [
            Interaction(
                event_id=args.event_id,
                user_id=args.user_id,
                item_id=item,
                type=args.type,
                weight=args.weight,
                timestamp=utc_now(),
            )
            for item in args.item_id
        ]
    except ValidationError as exc:
        raise AnnrecError(f"interaction: {describe(exc)}") from exc
    publish_interactions(conf, settings.topic_interactions, events)
    print(
        f"{len(events)} interactions of {args.user_id} published to {settings.topic_interactions}"
    )
    return 0


def run_request(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    request: SimilarItemsRequest | RecommendRequest
    common: dict[str, Any] = {"request_id": new_request_id(), "k": args.k}
    if args.filter:
        common["filter"] = _parse_filter(args.filter)
    if args.max_per:
        common["max_per"] = _parse_max_per(args.max_per)
    if args.kind == "similar-items":
        if not args.item_id:
            raise AnnrecError("similar-items needs --item-id")
        if args.explain:
            raise AnnrecError("--explain is for recommend (with --recent-items)")
        request = SimilarItemsRequest(item_id=args.item_id, **common)
    else:
        if bool(args.user_id) == bool(args.recent_items):
            raise AnnrecError("recommend needs one of --user-id, --recent-items")
        user = {"user_id": args.user_id} if args.user_id else {"recent_items": args.recent_items}
        request = RecommendRequest(
            **user, explain=args.explain, exclude_seen=args.exclude_seen, **common
        )
    reply = request_once(
        services.kafka_conf(settings),
        settings.topic_requests,
        settings.topic_replies,
        request,
        args.timeout,
    )
    print(reply.model_dump_json(indent=2) if args.json else format_reply(reply))
    return 0 if reply.status in ("ok", "no_match", "partial") else 1


def run_item_update(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    conf = services.kafka_conf(settings)
    ensure_topics(conf, topic_specs(settings))
    try:
        updates = [
            ItemUpdate(item_id=i, attr=args.attr, value=args.value == "true") for i in args.item_ids
        ]
    except ValidationError as exc:
        raise AnnrecError(f"item update: {describe(exc)}") from exc
    publish_item_updates(conf, settings.topic_item_updates, updates)
    print(f"{len(updates)} updates published to {settings.topic_item_updates}")
    return 0


def _parse_max_per(text: str) -> MaxPer:
    attr, _, n = text.rpartition(":")
    try:
        return MaxPer(attr=attr, n=int(n))
    except (ValidationError, ValueError) as exc:
        raise AnnrecError(f"--max-per: give ATTR:N, e.g. brand:2 (got {text!r})") from exc


def _parse_filter(text: str) -> Filter:
    try:
        return check_shape(FILTER_ADAPTER.validate_json(text))
    except (ValidationError, ValueError) as exc:
        raise AnnrecError(f"--filter: {str(exc).splitlines()[0]}") from exc
