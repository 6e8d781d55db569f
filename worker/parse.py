"""Consumed messages -> requests, or the reason they cannot be one. No Kafka, no Redis."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from schemas.errors import describe
from schemas.events import (
    MAX_REQUEST_BYTES,
    RecommendRequest,
    RequestId,
    SimilarItemsRequest,
    parse_request,
)

_REQUEST_ID_ADAPTER: TypeAdapter[str] = TypeAdapter(RequestId)
AnyRequest = SimilarItemsRequest | RecommendRequest
# Reasons name at most this many of an event's validation errors.
REASON_ERRORS = 5


@dataclass(frozen=True)
class RawEvent:
    """One consumed message, decoupled from confluent_kafka.Message so this module stays pure."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None  # the Kafka message timestamp (producer's create time)


@dataclass(frozen=True)
class Parsed:
    event: RawEvent
    request: AnyRequest | None
    reason: str | None  # why it could not be parsed


def parse_batch(events: Sequence[RawEvent]) -> list[Parsed]:
    out = []
    for event in events:
        size = len(event.value or b"")
        if size > MAX_REQUEST_BYTES:
            reason = f"payload of {size} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit"
            out.append(Parsed(event, None, reason))
            continue
        try:
            out.append(Parsed(event, parse_request(event.value or b""), None))
        except (ValidationError, UnicodeDecodeError) as exc:
            out.append(Parsed(event, None, _reason(exc)))
        except (RecursionError, MemoryError, ValueError) as exc:  # hostile JSON the parser rejects
            out.append(Parsed(event, None, f"unparseable payload: {type(exc).__name__}"))
    return out


def readable_request_id(raw: bytes | None) -> str | None:
    """The event's top-level `request_id`, when it has a valid one, else None.

    Read without recursion (`json.loads` hits Python's recursion limit on deeply nested
    values): one pass over the top-level object in `top_level_members`, so an event nested
    10,000 levels deep with a readable id still gets its error reply."""
    value = None
    for name, text in top_level_members(_text(raw or b"")):
        if name == "request_id":
            value = text  # the last one wins, as in json.loads
    if value is None or not value.startswith('"'):
        return None
    try:
        return _REQUEST_ID_ADAPTER.validate_python(json.loads(value), strict=True)
    except (ValueError, ValidationError):
        return None


# One token of JSON text outside strings, or a whole string: a run of openers or closers is one
# match, so a nested value costs one regex step per run, not one Python step per bracket.
_STRING = r'"[^"\\]*(?:\\.[^"\\]*)*"'
_TOKEN = re.compile(_STRING + r'|[\[{]+|[\]}]+|,|"')
_NAME = re.compile(_STRING)
_WS = re.compile(r"[ \t\n\r]*")


def top_level_members(text: str) -> list[tuple[str, str]]:
    """(name, raw value text) of each member of the JSON object `text`, up to the first place
    its structure breaks; nested values are skipped by counting brackets (iteratively: bounded
    work, linear in the size, whatever the nesting). Values are not validated."""
    members: list[tuple[str, str]] = []
    pos = _skip_ws(text, 0)
    if text[pos : pos + 1] != "{":
        return members
    pos += 1
    while True:
        pos = _skip_ws(text, pos)
        if text[pos : pos + 1] != '"':
            return members  # "}" (the end) or a broken object
        m = _NAME.match(text, pos)
        try:
            name = json.loads(m.group()) if m else None  # a string: no nesting
        except ValueError:
            return members
        if not isinstance(name, str) or m is None:
            return members
        pos = _skip_ws(text, m.end())
        if text[pos : pos + 1] != ":":
            return members
        start = _skip_ws(text, pos + 1)
        end = _value_end(text, start)
        if end is None:
            return members
        members.append((name, text[start:end].rstrip(" \t\n\r")))
        if text[end : end + 1] != ",":
            return members
        pos = end + 1


def _value_end(text: str, pos: int) -> int | None:
    """Where the value starting at pos ends: the index of the "," or "}" that follows it at
    the top level, or None when the text ends first or a string is left open."""
    depth = 0
    while (m := _TOKEN.search(text, pos)) is not None:
        token, start = m.group(), m.start()
        pos = m.end()
        if token == '"':
            return None  # a string that never closes
        if token[0] == '"':
            continue
        if token[0] in "[{":
            depth += len(token)
        elif token[0] in "]}":
            if len(token) > depth:
                return start + depth  # the rest closes the top-level object
            depth -= len(token)
        elif depth == 0:  # ","
            return start
    return None


def _skip_ws(text: str, pos: int) -> int:
    m = _WS.match(text, pos)  # always matches (maybe the empty string)
    return m.end() if m else pos


def _text(raw: bytes) -> str:
    try:
        encoding = json.detect_encoding(raw)
    except (TypeError, ValueError):
        return ""
    # Undecodable bytes elsewhere in the event do not hide a readable id; inside the id they
    # become U+FFFD, which the id's pattern refuses.
    return raw.decode(encoding, "replace")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "invalid request: " + describe(exc, REASON_ERRORS, whole="event")
    return f"invalid request: {exc}"
