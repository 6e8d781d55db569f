"""Consumed interaction events -> interactions, or the reason they cannot be one. No Kafka, no
Redis: the loop (worker/app.py) writes the valid ones to the history (worker/history.py) and the
others to the dead-letter topic, then stores the offsets of both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.errors import describe
from schemas.events import MAX_REQUEST_BYTES, Interaction, parse_interaction
from worker.parse import REASON_ERRORS, RawEvent


@dataclass(frozen=True)
class ParsedInteractions:
    valid: list[Interaction]
    refused: list[tuple[RawEvent, str]]  # (the event, why)


def parse_interactions(events: Sequence[RawEvent]) -> ParsedInteractions:
    valid: list[Interaction] = []
    refused: list[tuple[RawEvent, str]] = []
    for event in events:
        raw = event.value or b""
        if len(raw) > MAX_REQUEST_BYTES:
            refused.append((event, f"payload of {len(raw)} bytes exceeds the limit"))
            continue
        try:
            valid.append(parse_interaction(raw))
        except ValidationError as exc:
            reason = describe(exc, REASON_ERRORS, whole="event")
            refused.append((event, f"invalid interaction: {reason}"))
        except (UnicodeDecodeError, RecursionError, MemoryError, ValueError) as exc:
            refused.append((event, f"invalid interaction: unparseable ({type(exc).__name__})"))
    return ParsedInteractions(valid, refused)
