"""Consumed messages -> requests, or the reason they cannot be one. No Kafka, no Redis."""

from __future__ import annotations

import json
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
    try:
        doc = json.loads(raw or b"")
        return _REQUEST_ID_ADAPTER.validate_python(doc["request_id"], strict=True)
    except (ValueError, TypeError, KeyError, ValidationError, RecursionError):
        return None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "invalid request: " + describe(exc, REASON_ERRORS, whole="event")
    return f"invalid request: {exc}"
