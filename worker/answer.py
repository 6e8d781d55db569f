"""Requests -> replies and dead letters, against one loaded version. No Kafka, no Redis.

Candidates come from Annoy; their order and scores come from the exact factors (cosine for
similar items, inner product for recommendations), so a reply's scores are exact even when the
ANN search missed an item. Results are always k long when the catalogue allows: what exclusions
remove is filled from the version's popularity list, each filled item marked `filled`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import structlog

from query_engine.selection import FilterError, Selection, select
from query_engine.vectors import cosine_scores, fold_in
from schemas.events import (
    DEAD_LETTER_PAYLOAD_BYTES,
    MAX_REQUEST_BYTES,
    DeadLetter,
    RecommendRequest,
    Reply,
    ScoredItem,
    SimilarItemsRequest,
)
from worker.index_store import LoadedVersion
from worker.parse import AnyRequest, Parsed, RawEvent, readable_request_id

log = structlog.get_logger(__name__)

Rows = npt.NDArray[np.int64]
Scorer = Callable[[Rows], npt.NDArray[np.float32]]


class BadRequest(ValueError):
    """A well-formed event that cannot be served (unknown id, wrong dimension, ...)."""


@dataclass(frozen=True)
class Policy:
    """The worker settings that change answers."""

    cold_start: Literal["popular", "error"] = "popular"


@dataclass(frozen=True)
class Served:
    """Per-request figures for the metrics."""

    kind: str
    outcome: str  # ok | error | expired | dead_letter
    queue_s: float | None
    compute_s: float


@dataclass
class Outcome:
    replies: list[Reply] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    served: list[Served] = field(default_factory=list)

    def extend(self, other: Outcome) -> Outcome:
        self.replies += other.replies
        self.dead_letters += other.dead_letters
        self.served += other.served
        return self


def answer_batch(
    parsed: Sequence[Parsed],
    version: LoadedVersion,
    worker_id: str,
    policy: Policy = Policy(),
    now: float | None = None,
) -> Outcome:
    """Answer every event; a bad one becomes a dead letter (plus an error reply when it has a
    readable request_id, so a caller waiting for the reply is not left to time out)."""
    outcome = Outcome()
    now = time.time() if now is None else now
    for p in parsed:
        started = time.perf_counter()
        queue_s = _queue_s(p, now)
        kind = p.request.kind if p.request else "unparsed"
        if p.request is None:
            _refuse(outcome, p.event, p.reason or "invalid request", worker_id, version)
            result = "dead_letter"
        else:
            try:
                reply = answer(p.request, version, worker_id, policy, _sent_at(p), now)
                outcome.replies.append(reply)
                result = reply.status
            except BadRequest as exc:
                _refuse(outcome, p.event, str(exc), worker_id, version)
                result = "dead_letter"
            except Exception as exc:  # a bug must not poison the partition: dead-letter, go on
                log.exception("answer_failed", offset=p.event.offset, partition=p.event.partition)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                _refuse(outcome, p.event, reason, worker_id, version)
                result = "dead_letter"
        outcome.served.append(Served(kind, result, queue_s, time.perf_counter() - started))
    return outcome


def echo_batch(parsed: Sequence[Parsed], version: LoadedVersion, worker_id: str) -> Outcome:
    """Empty ok replies, no computation: the benchmark's floor (`ANNREC_ECHO=true`), so the cost
    of Kafka, Redis and the loop can be told apart from the cost of answering."""
    outcome = Outcome()
    for p in parsed:
        if p.request is None:
            _refuse(outcome, p.event, p.reason or "invalid request", worker_id, version)
            continue
        outcome.replies.append(
            Reply(
                request_id=p.request.request_id,
                status="ok",
                kind=p.request.kind,
                index_version=version.version,
                worker_id=worker_id,
            )
        )
        outcome.served.append(Served(p.request.kind, "ok", None, 0.0))
    return outcome


def answer(
    request: AnyRequest,
    version: LoadedVersion,
    worker_id: str,
    policy: Policy = Policy(),
    sent_at: float | None = None,
    now: float | None = None,
    exact: bool = False,
) -> Reply:
    """The reply to one request. `exact`: by exact scans whatever the version's strategy (the
    live recall sampler's reference answer)."""
    base: dict[str, object] = {
        "request_id": request.request_id,
        "kind": request.kind,
        "subject_id": request.subject_id,
        "index_version": version.version,
        "worker_id": worker_id,
    }
    if request.deadline_ms is not None and sent_at is not None:
        late_ms = ((now or time.time()) - sent_at) * 1000 - request.deadline_ms
        if late_ms > 0:
            return Reply(status="expired", error=f"deadline passed {late_ms:.0f} ms ago", **base)
    keep = _selection(request, version)
    if keep is not None:
        base["filter_passing"] = keep.count
    if isinstance(request, SimilarItemsRequest):
        items = _similar(request, version, exact, keep)
        return Reply(status=_status(items, keep), items=items, **base)
    return _recommend(request, version, policy, base, exact, keep)


def _selection(request: AnyRequest, v: LoadedVersion) -> Selection | None:
    """The items the request's filter and allow list let through; BadRequest names what this
    version cannot evaluate (unknown attribute or value)."""
    allow = None
    if request.allow_items is not None:
        allow = np.unique(v.item_rows.rows(request.allow_items)[0])
    try:
        return select(v.attributes, request.filter, allow, v.manifest.n_items)
    except FilterError as exc:
        raise BadRequest(f"filter: {exc} (index {v.version})") from exc


def _status(items: list[ScoredItem], keep: Selection | None) -> Literal["ok", "no_match"]:
    # An empty answer to a filtered request is a fact about the catalogue, not a failure.
    return "no_match" if keep is not None and not items else "ok"


def _similar(
    request: SimilarItemsRequest, v: LoadedVersion, exact: bool, keep: Selection | None
) -> list[ScoredItem]:
    row = v.item_rows.get(request.item_id)
    if row is None:
        raise BadRequest(f"unknown item_id {request.item_id!r} in index {v.version}")
    excluded = _rows(v, request.exclude_items) | {row}
    fetch = request.k + len(excluded)
    rows, scores = v.search.similar_items(row, fetch, keep, request.search_k, exact)
    query = np.asarray(v.item_factors[row])

    def scorer(r: Rows) -> npt.NDArray[np.float32]:
        return cosine_scores(np.asarray(v.item_factors[r]), v.search.item_norms[r], query)

    return _complete(v, rows, scores, excluded, request.k, scorer, keep)


def _recommend(
    request: RecommendRequest,
    v: LoadedVersion,
    policy: Policy,
    base: dict[str, object],
    exact: bool = False,
    keep: Selection | None = None,
) -> Reply:
    query, seen, unknown = _user_vector(request, v)
    excluded = _rows(v, request.exclude_items) | (seen if request.exclude_seen else set())
    if query is None:  # cold start: nothing known about this user
        if policy.cold_start == "error":
            raise BadRequest(f"unknown user in index {v.version} (cold start disabled)")
        items = _complete(
            v, np.empty(0, np.int64), np.empty(0, np.float32), excluded, request.k, None, keep
        )
        return Reply(
            status=_status(items, keep),
            items=items,
            fallback="cold_start",
            unknown_items=unknown,
            **base,
        )
    fetch = request.k + len(excluded)
    rows, scores = v.search.recommend(query, fetch, keep, request.search_k, exact)

    def scorer(r: Rows) -> npt.NDArray[np.float32]:
        return (np.asarray(v.item_factors[r]) @ query).astype(np.float32)

    items = _complete(v, rows, scores, excluded, request.k, scorer, keep)
    return Reply(status=_status(items, keep), items=items, unknown_items=unknown, **base)


def _user_vector(
    request: RecommendRequest, v: LoadedVersion
) -> tuple[npt.NDArray[np.float32] | None, set[int], list[str]]:
    """(query vector or None for a cold start, rows the user has seen, unknown recent items)."""
    if request.user_id is not None:
        row = v.user_rows.get(request.user_id)
        return (None if row is None else np.asarray(v.user_factors[row])), set(), []
    if request.user_vector is not None:
        if len(request.user_vector) != v.manifest.dim:
            raise BadRequest(
                f"user_vector has {len(request.user_vector)} values, index {v.version} "
                f"has K={v.manifest.dim}"
            )
        return np.asarray(request.user_vector, dtype=np.float32), set(), []
    assert request.recent_items is not None
    known, unknown = v.item_rows.rows(request.recent_items)
    if not len(known):
        return None, set(), unknown
    f = v.manifest.fold_in
    query = fold_in(v.gramian, np.asarray(v.item_factors[known]), f.regularization, f.alpha)
    return query, set(known.tolist()), unknown


def _complete(
    v: LoadedVersion,
    rows: Rows,
    scores: npt.NDArray[np.float32],
    excluded: set[int],
    k: int,
    scorer: Scorer | None,
    allowed: Selection | None = None,
) -> list[ScoredItem]:
    """The first k non-excluded results, filled up from the popularity list when short (with
    popular items passing the filter, when there is one)."""
    kept = [i for i, r in enumerate(rows.tolist()) if r not in excluded][:k]
    items = [_item(v, int(rows[i]), float(scores[i])) for i in kept]
    missing = k - len(items)
    if missing > 0:
        taken = excluded | {int(rows[i]) for i in kept}
        fill = _popular(v, taken, missing, allowed)
        fill_scores = scorer(fill) if scorer is not None and len(fill) else None
        items += [
            _item(v, int(r), None if fill_scores is None else float(fill_scores[j]), filled=True)
            for j, r in enumerate(fill.tolist())
        ]
    return items


def _popular(v: LoadedVersion, taken: set[int], n: int, allowed: Selection | None) -> Rows:
    """The n most popular rows not in `taken` and passing `allowed` (fewer only when the
    catalogue runs out)."""
    if allowed is not None:
        taken_passing = allowed.passes(np.fromiter(taken, np.int64)).sum() if taken else 0
        if allowed.count - taken_passing <= 0:
            return np.empty(0, np.int64)  # nothing left to fill with: skip the walk
    picked: list[int] = []
    start, step = 0, n + len(taken)
    while len(picked) < n and start < len(v.popularity):
        chunk = np.asarray(v.popularity[start : start + step], dtype=np.int64)
        if allowed is not None:
            chunk = chunk[allowed.passes(chunk)]
        picked += [r for r in chunk.tolist() if r not in taken][: n - len(picked)]
        start += step
        step *= 2  # a selective filter may need most of the list: O(log) chunks, not O(n)
    return np.asarray(picked, dtype=np.int64)


def _item(v: LoadedVersion, row: int, score: float | None, filled: bool = False) -> ScoredItem:
    return ScoredItem(item_id=str(v.item_ids[row]), score=score, filled=filled)


def _rows(v: LoadedVersion, ids: Sequence[str]) -> set[int]:
    # Ids the version does not know cannot be returned anyway: nothing to exclude.
    return set(v.item_rows.rows(ids)[0].tolist())


def cached_outcome(hits: Sequence[tuple[Parsed, Reply]], now: float | None = None) -> Outcome:
    """The outcome of requests answered from the reply cache: their replies as they were."""
    outcome = Outcome()
    now = time.time() if now is None else now
    for p, reply in hits:
        outcome.replies.append(reply)
        outcome.served.append(Served(reply.kind or "unparsed", reply.status, _queue_s(p, now), 0.0))
    return outcome


def _queue_s(p: Parsed, now: float) -> float | None:
    return now - p.event.timestamp_ms / 1000 if p.event.timestamp_ms else None


def _sent_at(p: Parsed) -> float | None:
    if p.request is not None and p.request.sent_at is not None:
        return p.request.sent_at.timestamp()
    return p.event.timestamp_ms / 1000 if p.event.timestamp_ms else None


def _refuse(
    outcome: Outcome, event: RawEvent, reason: str, worker_id: str, version: LoadedVersion
) -> None:
    payload = event.value or b""
    request_id = readable_request_id(payload) if len(payload) <= MAX_REQUEST_BYTES else None
    outcome.dead_letters.append(
        DeadLetter(
            reason=reason,
            request_id=request_id,
            source_topic=event.topic,
            source_partition=event.partition,
            source_offset=event.offset,
            key_b64=DeadLetter.encode(event.key),
            payload_b64=DeadLetter.encode(payload[:DEAD_LETTER_PAYLOAD_BYTES]) or "",
            payload_bytes=len(payload),
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
