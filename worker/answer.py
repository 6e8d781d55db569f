"""Requests -> replies and dead letters, against one loaded version. No Kafka, no Redis.

Candidates come from Annoy; their order and scores come from the exact factors (cosine for
similar items, inner product for recommendations), so a reply's scores are exact even when the
ANN search missed an item.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog
from pydantic import TypeAdapter, ValidationError

from schemas import search
from schemas.events import (
    DeadLetter,
    RecommendRequest,
    Reply,
    RequestId,
    ScoredItem,
    SimilarItemsRequest,
    parse_request,
)
from worker.index_store import LoadedVersion

log = structlog.get_logger(__name__)

_REQUEST_ID_ADAPTER: TypeAdapter[str] = TypeAdapter(RequestId)


class BadRequest(ValueError):
    """A well-formed event that cannot be served (unknown id, ...)."""


@dataclass(frozen=True)
class RawEvent:
    """One consumed message, decoupled from confluent_kafka.Message so this module stays pure."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Outcome:
    replies: list[Reply] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def answer_batch(events: Sequence[RawEvent], version: LoadedVersion, worker_id: str) -> Outcome:
    """Answer every event; a bad one becomes a dead letter (plus an error reply when it has a
    readable request_id, so a caller waiting for the reply is not left to time out)."""
    outcome = Outcome()
    for event in events:
        try:
            request = parse_request(event.value or b"")
            outcome.replies.append(answer(request, version, worker_id))
        except (ValidationError, BadRequest, UnicodeDecodeError) as exc:
            _refuse(outcome, event, _reason(exc), worker_id, version)
        except Exception as exc:  # a bug must not poison the partition: dead-letter and go on
            log.exception("answer_failed", offset=event.offset, partition=event.partition)
            _refuse(
                outcome, event, f"internal error: {type(exc).__name__}: {exc}", worker_id, version
            )
    return outcome


def answer(
    request: SimilarItemsRequest | RecommendRequest, version: LoadedVersion, worker_id: str
) -> Reply:
    if isinstance(request, SimilarItemsRequest):
        row = version.item_rows.get(request.item_id)
        if row is None:
            raise BadRequest(f"unknown item_id {request.item_id!r} in index {version.version}")
        rows, scores = search.similar_items(
            version.angular,
            version.item_factors,
            version.item_norms,
            row,
            request.k,
            search.scaled_search_k(version.search_k_similar, request.k),
        )
    else:
        row = version.user_rows.get(request.user_id)
        if row is None:
            raise BadRequest(f"unknown user_id {request.user_id!r} in index {version.version}")
        rows, scores = search.max_inner_product(
            version.mips,
            version.item_factors,
            np.asarray(version.user_factors[row]),
            request.k,
            search.scaled_search_k(version.search_k_recommend, request.k),
        )
    return Reply(
        request_id=request.request_id,
        status="ok",
        kind=request.kind,
        subject_id=request.subject_id,
        items=[
            ScoredItem(item_id=str(version.item_ids[r]), score=float(s))
            for r, s in zip(rows.tolist(), scores.tolist(), strict=True)
        ],
        index_version=version.version,
        worker_id=worker_id,
    )


def _refuse(
    outcome: Outcome, event: RawEvent, reason: str, worker_id: str, version: LoadedVersion
) -> None:
    request_id = _readable_request_id(event.value)
    outcome.dead_letters.append(
        DeadLetter(
            reason=reason,
            request_id=request_id,
            source_topic=event.topic,
            source_partition=event.partition,
            source_offset=event.offset,
            key_b64=DeadLetter.encode(event.key),
            payload_b64=DeadLetter.encode(event.value or b"") or "",
            worker_id=worker_id,
        )
    )
    if request_id is not None:
        outcome.replies.append(
            Reply(
                request_id=request_id,
                status="error",
                error=reason,
                index_version=version.version,
                worker_id=worker_id,
            )
        )


def _readable_request_id(raw: bytes | None) -> str | None:
    try:
        doc = json.loads(raw or b"")
        return _REQUEST_ID_ADAPTER.validate_python(doc["request_id"], strict=True)
    except (ValueError, TypeError, KeyError, ValidationError):
        return None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors(include_url=False)[:5]:
            where = ".".join(str(p) for p in err["loc"]) or "event"
            parts.append(f"{where}: {err['msg']}")
        return "invalid request: " + "; ".join(parts)
    return str(exc)
