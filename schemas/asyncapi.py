"""The AsyncAPI 3.0 document of annrec's topics, generated from the pydantic models (never written
by hand, so it cannot drift from what the worker parses). Checked in as schemas/asyncapi.json (a
test fails when it is stale); regenerate with `annrec schemas --out schemas/json`.

It describes the worker as the application: it receives requests and index announcements, and
sends replies and dead letters. A frontend team reads it the other way round.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter

from schemas import keys
from schemas.events import (
    REQUEST_ADAPTER,
    DeadLetter,
    IndexAnnounced,
    Interaction,
    ItemUpdate,
    ItemVector,
    Reply,
)

ASYNCAPI_VERSION = "3.0.0"
REF = "#/components/schemas/{model}"

# channel id -> (topic, message name, schema source, title, description)
CHANNELS: dict[str, tuple[str, str, TypeAdapter[Any] | type[BaseModel], str, str]] = {
    "requests": (
        keys.TOPIC_REQUESTS,
        "Request",
        REQUEST_ADAPTER,
        "A request",
        "similar_items or recommend, discriminated by `kind`; key: the request_id (or the "
        "subject) spreads requests over the partitions",
    ),
    "replies": (
        keys.TOPIC_REPLIES,
        "Reply",
        Reply,
        "The reply to one request",
        "Keyed by request_id. Items sorted by exact score; also written to Redis under "
        "annrec:reply:<request_id>. At least once: a request may be answered twice, identically.",
    ),
    "deadLetters": (
        keys.TOPIC_DEAD_LETTERS,
        "DeadLetter",
        DeadLetter,
        "An event that could not be served",
        "With the reason and the original bytes (base64, at most 64 KiB of them).",
    ),
    "indexVersions": (
        keys.TOPIC_INDEX_VERSIONS,
        "IndexAnnounced",
        IndexAnnounced,
        "A new index version is in storage and LATEST names it",
        "Compacted topic, key `items`: the newest announcement is always there to read.",
    ),
    "itemUpdates": (
        keys.TOPIC_ITEM_UPDATES,
        "ItemUpdate",
        ItemUpdate,
        "An item's availability (or another boolean attribute) changed",
        "Compacted topic, key `<attr>:<item_id>`: replayed from the beginning by every worker "
        "at start, applied between batches, folded into the next version by the builder.",
    ),
    "itemVectors": (
        keys.TOPIC_ITEM_VECTORS,
        "ItemVector",
        ItemVector,
        "An item added, changed (its factor vector) or removed between builds",
        "Compacted topic, key: the item_id. Replayed from the beginning by every worker at "
        "start into its fresh segment (scanned exactly beside the version's indexes), applied "
        "between batches, folded into the next version by the builder, which records the "
        "offsets it read (manifest item_vectors_through). Events a version cannot take (another "
        "dimension, an unknown attribute) go to the dead-letter topic with the reason.",
    ),
    "interactions": (
        keys.TOPIC_INTERACTIONS,
        "Interaction",
        Interaction,
        "What a user just did (a view, a click, a purchase)",
        "Key: the user_id (a user's events in order on one partition). Workers keep each user's "
        "recent ones in Redis (annrec:history:<user_id>, bounded in length and age) and "
        "personalise `recommend` by user_id with them; the same event delivered twice counts "
        "once (event_id, or its content). Unreadable ones go to the dead-letter topic.",
    ),
}
# The worker's side: what it does on each channel.
OPERATIONS = {
    "receiveRequest": ("receive", "requests"),
    "sendReply": ("send", "replies"),
    "sendDeadLetter": ("send", "deadLetters"),
    "receiveIndexAnnouncement": ("receive", "indexVersions"),
    "receiveItemUpdate": ("receive", "itemUpdates"),
    "receiveItemVector": ("receive", "itemVectors"),
    "receiveInteraction": ("receive", "interactions"),
}


def asyncapi_document(version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for channel_id, (topic, name, source, title, description) in CHANNELS.items():
        schemas[name] = _hoist(_schema_of(source), schemas)
        messages[name] = {
            "name": name,
            "title": title,
            "summary": description,
            "contentType": "application/json",
            "payload": {"$ref": REF.format(model=name)},
        }
        channels[channel_id] = {
            "address": topic,
            "title": title,
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
    operations = {
        op_id: {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{CHANNELS[channel_id][1]}"}],
        }
        for op_id, (action, channel_id) in OPERATIONS.items()
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "annrec worker",
            "version": version,
            "description": "Streaming recommendations over Kafka: requests and interactions "
            "in; replies (also in Redis) and dead letters out; index versions announced by the "
            "builder. Topic names are the defaults (ANNREC_TOPIC_* changes them).",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": dict(sorted(schemas.items())), "messages": messages},
    }


def _schema_of(source: TypeAdapter[Any] | type[BaseModel]) -> dict[str, Any]:
    if isinstance(source, TypeAdapter):
        return source.json_schema(ref_template=REF)
    return source.model_json_schema(ref_template=REF)


def _hoist(schema: dict[str, Any], into: dict[str, Any]) -> dict[str, Any]:
    """Move pydantic's $defs into components/schemas (AsyncAPI's place for them) and make the
    discriminator AsyncAPI's kind: a property name, not OpenAPI's object."""
    for name, sub in schema.pop("$defs", {}).items():
        into[name] = _hoist(sub, into)
    hoisted: dict[str, Any] = _asyncapi_keywords(schema)
    return hoisted


def _asyncapi_keywords(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _asyncapi_keywords(v) for k, v in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_keywords(v) for v in node]
    return node
