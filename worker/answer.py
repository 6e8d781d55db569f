"""Requests -> replies and dead letters, against one loaded version. No Kafka, no Redis.

Candidates come from Annoy; their order and scores come from the exact factors (cosine for
similar items, inner product for recommendations), so a reply's scores are exact even when the
ANN search missed an item. Results are always k long when the catalogue allows: what exclusions
remove is filled from the version's popularity list, each filled item marked `filled`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import structlog
from pydantic import TypeAdapter

from query_engine.confidence import fold_in_confidences
from query_engine.diversity import MaxPer, max_per_of
from query_engine.diversity import top_k as constrained_top_k
from query_engine.explanations import top_contributions
from query_engine.personalize import (
    DEFAULT_PERSONALIZATION,
    HistoryEvent,
    Personalization,
    personal_vector,
)
from query_engine.search import scaled_search_k
from query_engine.segment import Draft, merged, merged_within, past_hidden
from query_engine.segment_neighbours import key_of_fresh, similar_to_vector
from query_engine.selection import FilterError, Selection, select
from query_engine.vectors import cosine_scores, explain_scores, fold_in
from schemas.events import (
    DEAD_LETTER_PAYLOAD_BYTES,
    EXPLAIN_TOP,
    MAX_REQUEST_BYTES,
    Contribution,
    DeadLetter,
    RecommendRequest,
    Reply,
    ScoredItem,
    SimilarItemsRequest,
)
from worker.index_store import LoadedVersion, NotServed
from worker.parse import AnyRequest, Parsed, RawEvent, readable_request_id
from worker.routing import Route, Router

log = structlog.get_logger(__name__)

Rows = npt.NDArray[np.int64]
Scorer = Callable[[Rows], npt.NDArray[np.float32]]
_SCORED_ITEMS = TypeAdapter(list[ScoredItem])
Status = Literal["ok", "no_match", "partial"]


class BadRequest(ValueError):
    """A well-formed event that cannot be served (unknown id, wrong dimension, ...)."""


@dataclass(frozen=True)
class Policy:
    """The worker settings that change answers."""

    cold_start: Literal["popular", "error"] = "popular"
    # A request without deadline_ms gets this one (None: waits as long as it takes).
    default_deadline_ms: int | None = None
    # recommend by user_id: how the version's factors and the user's recent interactions
    # combine (query_engine/personalize.py), and whether those items are never returned.
    personalization: Personalization = DEFAULT_PERSONALIZATION
    exclude_history: bool = False


@dataclass(frozen=True)
class Served:
    """Per-request figures for the metrics."""

    kind: str
    outcome: str  # ok | error | expired | dead_letter
    queue_s: float | None
    compute_s: float
    model: str = "default"  # the model asked ("" when the event did not parse)
    variant: str = ""  # the experiment arm, "" when none assigned it
    fallback: str = ""  # the reply's fallback (cold_start), "" when none


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
    target: LoadedVersion | Router,
    worker_id: str,
    policy: Policy = Policy(),
    now: float | None = None,
    histories: Mapping[str, Sequence[HistoryEvent]] | None = None,
) -> Outcome:
    """Answer every event (`histories`: the recent interactions of the users the batch asks
    for, worker/history.py); a bad one becomes a dead letter (plus an error reply when it has a
    readable request_id, so a caller waiting for the reply is not left to time out).

    `target`: the router of the batch's snapshot (worker/routing.py: each request's model, pin
    or experiment arm), or one version served as the model `default`. A request for a model or
    version it cannot serve is refused like a bad one, with the reason.

    Deadlines are checked against the clock when each request's turn comes (`now`, when given,
    fixes it for the whole batch): under overload a request that passes its deadline while the
    batch is being answered is expired, not computed."""
    router = target if isinstance(target, Router) else Router.single(target)
    version = router.primary  # what a refusal's reply names when no route was found
    outcome = Outcome()
    fixed = now
    for p in parsed:
        started = time.perf_counter()
        now = time.time() if fixed is None else fixed
        queue_s = _queue_s(p, now)
        kind = p.request.kind if p.request else "unparsed"
        model = p.request.model if p.request else ""
        variant = fallback = ""
        if p.request is None:
            _refuse(outcome, p.event, p.reason or "invalid request", worker_id, version)
            result = "dead_letter"
        else:
            try:
                route = router.route(p.request)
                history = _history_of(p.request, histories)
                reply = answer(
                    p.request,
                    route.version,
                    worker_id,
                    policy,
                    _sent_at(p),
                    now,
                    history=history,
                    route=route,
                )
                outcome.replies.append(reply)
                result, variant, fallback = reply.status, route.variant or "", reply.fallback or ""
            except (BadRequest, NotServed) as exc:
                _refuse(outcome, p.event, str(exc), worker_id, version, model)
                result = "dead_letter"
            except Exception as exc:  # a bug must not poison the partition: dead-letter, go on
                log.exception("answer_failed", offset=p.event.offset, partition=p.event.partition)
                reason = f"internal error: {type(exc).__name__}: {exc}"
                _refuse(outcome, p.event, reason, worker_id, version, model)
                result = "dead_letter"
        compute_s = time.perf_counter() - started
        outcome.served.append(Served(kind, result, queue_s, compute_s, model, variant, fallback))
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
    history: Sequence[HistoryEvent] = (),
    route: Route | None = None,
) -> Reply:
    """The reply to one request. `exact`: by exact scans whatever the version's strategy (the
    live recall sampler's reference answer). `history`: the user's recent interactions, for
    recommend by user_id. `route`: how the version was chosen (the reply names the arm)."""
    base: dict[str, object] = {
        "request_id": request.request_id,
        "kind": request.kind,
        "subject_id": request.subject_id,
        "model": request.model,
        "index_version": version.version,
        "worker_id": worker_id,
    }
    if route is not None:
        base.update(variant=route.variant, pinned=route.pinned)
    late_ms = _late_ms(request, policy, sent_at, now)
    if late_ms is not None:
        return Reply(status="expired", error=_expired(late_ms), **base)
    keep = _selection(request, version)
    if keep is not None:
        base["filter_passing"] = keep.count
    max_per = _max_per(request, version)
    if request.max_per is not None:
        base["max_per"] = request.max_per
    if isinstance(request, SimilarItemsRequest):
        items, excluded = _similar(request, version, exact, keep, max_per)
        status = _status(version, items, request.k, keep, max_per, excluded)
        return Reply(status=status, items=items, **base)
    return _recommend(request, version, policy, base, exact, keep, max_per, history)


def _history_of(
    request: AnyRequest, histories: Mapping[str, Sequence[HistoryEvent]] | None
) -> Sequence[HistoryEvent]:
    if histories is None or not isinstance(request, RecommendRequest) or not request.user_id:
        return ()
    return histories.get(request.user_id, ())


def _selection(request: AnyRequest, v: LoadedVersion) -> Selection | None:
    """The items the request's filter and allow list let through; BadRequest names what this
    version cannot evaluate (unknown attribute or value)."""
    allow = None
    if request.allow_items is not None:
        allow = np.unique(v.item_rows.rows(request.allow_items)[0])
    try:
        # A value only items added since the build have (a new brand) matches none of the
        # version's items: not an unknown value.
        fresh = v.fresh.new_values() if v.fresh.ids else frozenset()
        return select(v.attributes, request.filter, allow, v.manifest.n_items, fresh)
    except FilterError as exc:
        raise BadRequest(f"filter: {exc} (index {v.version})") from exc


def _max_per(request: AnyRequest, v: LoadedVersion) -> MaxPer | None:
    """The request's max_per over this version's attributes; None when it has none or when it
    cannot limit k results (n >= k). BadRequest names what this version cannot apply."""
    if request.max_per is None:
        return None
    try:
        max_per = max_per_of(v.attributes, request.max_per.attr, request.max_per.n)
    except FilterError as exc:
        raise BadRequest(f"{exc} (index {v.version})") from exc
    return max_per if max_per.limits(request.k) else None


def _status(
    v: LoadedVersion,
    items: list[ScoredItem],
    k: int,
    keep: Selection | None,
    max_per: MaxPer | None,
    excluded: set[int],
) -> Status:
    # An empty answer to a filtered request is a fact about the catalogue, not a failure;
    # fewer than k under max_per while more items pass: the constraint could not be met.
    if keep is not None and not items:
        return "no_match"
    if max_per is not None and len(items) < k:
        left = np.fromiter(excluded, np.int64, len(excluded))
        if keep is None:
            eligible = v.manifest.n_items - len(left)
        else:
            eligible = keep.count - int(keep.passes(left).sum())
        if len(items) < eligible:
            return "partial"
    return "ok"


def _similar(
    request: SimilarItemsRequest,
    v: LoadedVersion,
    exact: bool,
    keep: Selection | None,
    max_per: MaxPer | None,
) -> tuple[list[ScoredItem], set[int]]:
    """(the items, the rows excluded: the item itself and exclude_items)."""
    row = v.item_rows.get(request.item_id)
    local = v.fresh.local(request.item_id)  # upserted since the build: its new vector
    if local is None and (row is None or request.item_id in v.fresh.removed):
        raise BadRequest(f"unknown item_id {request.item_id!r} in index {v.version}")
    excluded = _rows(v, request.exclude_items) | ({row} if row is not None else set())
    # The version's search never returns the item itself: asking it for one more would push a
    # k of the table's width past its lookup. A fresh item's search by its new vector can
    # return its old row, so there it counts.
    fetch = request.k + len(excluded - ({row} if local is None else set()))
    hidden, excluded = v.fresh.hidden, excluded | v.fresh.hidden
    if local is not None:  # by vector: the index and the table know its old vector, or none
        query = v.fresh.vector(local)

        def by_vector(f: int, exhaustive: bool = False) -> tuple[Rows, npt.NDArray[np.float32]]:
            return _similar_to(v, local, f, keep, request, exact or exhaustive)

        if max_per is None:
            rows, scores = past_hidden(by_vector, fetch, hidden)
        else:  # the greedy walk over the search by its vector, as for a version item
            available = v.manifest.n_items if keep is None else keep.count
            rows, scores = constrained_top_k(
                by_vector, request.k, max_per, _array(excluded), available, exact
            )
    else:
        known = int(row)  # type: ignore[arg-type]  # not fresh: the version has it (above)
        query = np.asarray(v.item_factors[known])
        if max_per is None:
            search = v.search.similar_items
            rows, scores = past_hidden(
                lambda f: search(known, f, keep, request.search_k, exact), fetch, hidden
            )
        else:
            rows, scores = v.search.similar_items_max_per(
                known, request.k, max_per, keep, _array(excluded), request.search_k, exact
            )

    def scorer(r: Rows) -> npt.NDArray[np.float32]:
        return cosine_scores(np.asarray(v.item_factors[r]), v.search.item_norms[r], query)

    draft = _complete(v, rows, scores, excluded, request.k, scorer, keep, max_per)
    subject = row if local is None else key_of_fresh(local)  # its candidates' key
    draft = _with_fresh(v, request, draft, query, max_per, True, exact, subject)
    return _items(draft), excluded


def _similar_to(
    v: LoadedVersion,
    local: int,
    fetch: int,
    keep: Selection | None,
    request: SimilarItemsRequest,
    exact: bool,
) -> tuple[Rows, npt.NDArray[np.float32]]:
    """The version's items most similar to fresh item `local`'s vector, as its plan would
    search (the row found at its upsert is cheaper and worse: segment_neighbours.py)."""
    query = v.fresh.vector(local)
    plan = v.search.plan.similar
    budget = scaled_search_k(request.search_k or plan.search_k, fetch)
    exact = exact or (plan.strategy == "exact" and request.search_k is None)
    s = v.search
    return similar_to_vector(
        s.angular, s.item_factors, s.item_norms, query, fetch, keep, budget, exact
    )


def _with_fresh(
    v: LoadedVersion,
    request: AnyRequest,
    draft: Draft,
    query: npt.NDArray[np.float32],
    max_per: MaxPer | None,
    similar: bool,
    exact: bool = False,
    subject: int | None = None,
) -> Draft:
    """The version's items merged with the fresh items that can enter them
    (query_engine/segment.py): exact scores, the request's filter, allow list and exclusions
    applied to them too, only those above the k-th score of the version's answer looked at.
    Under max_per, the greedy walk over both (the fresh items' values counted with the
    version's)."""
    fresh = v.fresh
    if not fresh.ids:
        return draft
    try:
        keep = fresh.passing(request.filter, request.allow_items)
    except FilterError as exc:
        raise BadRequest(f"filter: {exc} (items added since index {v.version})") from exc
    exclude = request.exclude_items
    if similar and subject is not None and subject < 0:  # the asked item is itself fresh
        exclude = [*exclude, request.subject_id or ""]
    floor = draft.kth_score(request.k)
    # Under max_per a fresh item past the k-th fresh one can still be taken (its value's
    # places are not all taken): every one above the floor is a candidate.
    fetch = request.k if max_per is None else len(fresh.ids)
    if similar:
        ids, scores = fresh.similar(query, fetch, keep, exclude, floor, subject, exact)
    else:
        ids, scores = fresh.recommend(query, fetch, keep, exclude, floor, exact)
    if not ids:
        return draft
    if max_per is None or request.max_per is None:
        return merged(draft, ids, scores, request.k)
    attr = request.max_per.attr
    version_ids = [*draft.ids, *(i for i, _ in draft.filled)]
    codes = max_per.codes[v.item_rows.rows(version_ids)[0]]
    return merged_within(
        draft, codes, ids, scores, fresh.value_codes(attr, ids), request.max_per.n, request.k
    )


def _recommend(
    request: RecommendRequest,
    v: LoadedVersion,
    policy: Policy,
    base: dict[str, object],
    exact: bool = False,
    keep: Selection | None = None,
    max_per: MaxPer | None = None,
    history: Sequence[HistoryEvent] = (),
) -> Reply:
    query, seen, unknown = _user_vector(request, v, history, policy.personalization)
    exclude_seen = request.exclude_seen or (policy.exclude_history and bool(history))
    excluded = _rows(v, request.exclude_items) | (set(seen.tolist()) if exclude_seen else set())
    fetch = request.k + len(excluded)
    hidden, excluded = v.fresh.hidden, excluded | v.fresh.hidden  # removed items never return
    if history:
        base["history_events"] = len(history)
    if query is None:  # cold start: nothing known about this user
        if policy.cold_start == "error":
            raise BadRequest(f"unknown user in index {v.version} (cold start disabled)")
        items = _items(
            _complete(
                v,
                np.empty(0, np.int64),
                np.empty(0, np.float32),
                excluded,
                request.k,
                None,
                keep,
                max_per,
            )
        )
        return Reply(
            status=_status(v, items, request.k, keep, max_per, excluded),
            items=items,
            fallback="cold_start",
            unknown_items=unknown,
            explain_refused=_explain_refusal(request, has_history=False),
            **base,
        )
    if max_per is None:
        search = v.search.recommend
        rows, scores = past_hidden(
            lambda f: search(query, f, keep, request.search_k, exact), fetch, hidden
        )
    else:
        rows, scores = v.search.recommend_max_per(
            query, request.k, max_per, keep, _array(excluded), request.search_k, exact
        )

    def scorer(r: Rows) -> npt.NDArray[np.float32]:
        return (np.asarray(v.item_factors[r]) @ query).astype(np.float32)

    draft = _complete(v, rows, scores, excluded, request.k, scorer, keep, max_per)
    # A user_id's history is not what its vector is explained by (the long-term factors are
    # part of it): explained only for recent_items.
    refusal = _explain_refusal(request, has_history=len(seen) > 0 and request.user_id is None)
    items = _items(_with_fresh(v, request, draft, query, max_per, False, exact))
    if request.explain and refusal is None:
        items = _explained(v, items, seen, rows)
    return Reply(
        status=_status(v, items, request.k, keep, max_per, excluded),
        items=items,
        unknown_items=unknown,
        explain_refused=refusal,
        **base,
    )


def _user_vector(
    request: RecommendRequest,
    v: LoadedVersion,
    history: Sequence[HistoryEvent] = (),
    personalization: Personalization = DEFAULT_PERSONALIZATION,
) -> tuple[npt.NDArray[np.float32] | None, Rows, list[str]]:
    """(query vector or None for a cold start, rows of the user's known recent items, in the
    order given, unknown recent items)."""
    none = np.empty(0, np.int64)
    if request.user_id is not None:
        row = v.user_rows.get(request.user_id)
        long_term = None if row is None else np.asarray(v.user_factors[row])
        if not history:
            return long_term, none, []
        rows, weights = _history_rows(v, history)
        regularization = v.manifest.fold_in.regularization
        query = personal_vector(
            long_term,
            rows,
            weights,
            v.item_factors,
            v.gramian,
            regularization,
            v.fold_in,
            personalization,
        )
        return query, rows, []
    if request.user_vector is not None:
        if len(request.user_vector) != v.manifest.dim:
            raise BadRequest(
                f"user_vector has {len(request.user_vector)} values, index {v.version} "
                f"has K={v.manifest.dim}"
            )
        return np.asarray(request.user_vector, dtype=np.float32), none, []
    assert request.recent_items is not None
    known, unknown = v.item_rows.rows(request.recent_items)
    if not len(known):
        return None, none, unknown
    # Weighted as the version was trained (raw, tfidf or bm25): query_engine.confidence.
    rows, confidence = fold_in_confidences(v.fold_in, known)
    query = fold_in(
        v.gramian, np.asarray(v.item_factors[rows]), v.manifest.fold_in.regularization, confidence
    )
    return query, known, unknown


def _history_rows(
    v: LoadedVersion, history: Sequence[HistoryEvent]
) -> tuple[Rows, npt.NDArray[np.float64]]:
    """(rows, weights) of the history's events whose item this version knows, oldest first."""
    known = [(v.item_rows.get(e.item_id), e.weight) for e in history]
    rows = np.asarray([r for r, _ in known if r is not None], dtype=np.int64)
    return rows, np.asarray([w for r, w in known if r is not None], dtype=np.float64)


def _explain_refusal(request: RecommendRequest, has_history: bool) -> str | None:
    """Why this request's items cannot be explained (None: they can, or it did not ask)."""
    if not request.explain or has_history:
        return None
    if request.user_id is not None:
        # A version publishes factors, not the interactions they were trained on; and a
        # trained user's factors are not one fold-in step over the final item factors.
        return (
            "explain: versions do not carry users' histories; send the user's items as "
            "recent_items to have the items explained"
        )
    if request.user_vector is not None:
        return "explain: a user_vector has no history to explain the scores by"
    return "explain: none of recent_items is known to this version (cold start: no scores)"


def _explained(
    v: LoadedVersion, items: list[ScoredItem], seen: Rows, searched: Rows
) -> list[ScoredItem]:
    """Items with their `because`: the exact ALS decomposition of each score over the seen
    items (query_engine.vectors.explain_scores), a repeated item's terms added up. `searched`:
    the rows the search returned, most of the items' (no id lookup for those)."""
    at = [i for i, item in enumerate(items) if item.score is not None]
    if not at:
        return items
    row_of = dict(zip(v.item_ids[searched].tolist(), searched.tolist(), strict=True))
    found = [row_of.get(items[i].item_id, -1) for i in at]
    targets = np.asarray(found, dtype=np.int64)
    if -1 in found:  # filled or fresh items: looked up by id
        targets = np.asarray([v.item_rows.get(items[i].item_id, 0) for i in at], np.int64)
    vectors = np.asarray(v.item_factors[targets])
    for j, i in enumerate(at):  # items added or changed since the build: their new vector
        local = v.fresh.local(items[i].item_id) if v.fresh.ids else None
        if local is not None:
            vectors[j] = v.fresh.vector(local)
    rows, confidence = fold_in_confidences(v.fold_in, seen)  # the fold-in's own system
    terms = explain_scores(
        v.gramian,
        np.asarray(v.item_factors[rows]),
        vectors,
        v.manifest.fold_in.regularization,
        confidence,
    )
    top = top_contributions(terms, rows, EXPLAIN_TOP)
    out = list(items)
    for j, i in enumerate(at):
        names = v.item_ids[top.rows[j]].tolist()  # str: load_version refuses other ids
        because = [
            Contribution(item_id=name, score=part, share=share)
            for name, part, share in zip(names, top.parts[j], top.shares[j], strict=True)
        ]
        item = items[i]  # frozen: a new item (a validated copy costs more than this)
        out[i] = ScoredItem(
            item_id=item.item_id, score=item.score, filled=item.filled, because=because
        )
    return out


def _complete(
    v: LoadedVersion,
    rows: Rows,
    scores: npt.NDArray[np.float32],
    excluded: set[int],
    k: int,
    scorer: Scorer | None,
    allowed: Selection | None = None,
    max_per: MaxPer | None = None,
) -> Draft:
    """The first k non-excluded results, filled up from the popularity list when short (with
    popular items passing the filter, when there is one, and within max_per). Under max_per
    `rows` already are the best the constraint allows: only a cold start is filled."""
    kept = [i for i, r in enumerate(rows.tolist()) if r not in excluded][:k]
    chosen = rows[kept]
    missing = k - len(kept)
    fill = np.empty(0, np.int64)
    if missing > 0 and (max_per is None or scorer is None):
        fill = _popular(v, excluded | set(chosen.tolist()), missing, allowed, max_per, chosen)
    # The ids in one read of the mapped array: row by row, each read costs more than the
    # reply item built from it (~1.5 us of numpy indexing per item).
    ids = np.asarray(v.item_ids[np.concatenate([chosen, fill])]).tolist()
    draft = Draft(ids[: len(kept)], np.asarray(scores)[kept].tolist())
    if len(fill):
        fill_scores = scorer(fill) if scorer is not None else None
        filled = [None] * len(fill) if fill_scores is None else np.asarray(fill_scores).tolist()
        draft.filled = list(zip(ids[len(kept) :], filled, strict=True))
    return draft


def _popular(
    v: LoadedVersion,
    taken: set[int],
    n: int,
    allowed: Selection | None,
    max_per: MaxPer | None = None,
    chosen: Rows | None = None,
) -> Rows:
    """The n most popular rows not in `taken` and passing `allowed`, and beside `chosen` within
    `max_per` (fewer only when the catalogue runs out)."""
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
        fresh = [r for r in chunk.tolist() if r not in taken]
        if max_per is not None:  # the greedy walk over what is taken, then this chunk
            lead = [*(() if chosen is None else chosen.tolist()), *picked]
            pool = np.asarray(lead + fresh, dtype=np.int64)
            fresh = pool[max_per.pick(pool, len(lead) + n - len(picked))][len(lead) :].tolist()
        picked += fresh[: n - len(picked)]
        start += step
        step *= 2  # a selective filter may need most of the list: O(log) chunks, not O(n)
    return np.asarray(picked, dtype=np.int64)


def _items(draft: Draft) -> list[ScoredItem]:
    # One validation of the whole list: a ScoredItem(...) per item cost ~1.5x as much (each
    # __init__ enters pydantic's core on its own), a third of a table lookup's answer().
    return _SCORED_ITEMS.validate_python(
        [
            *({"item_id": i, "score": s} for i, s in zip(draft.ids, draft.scores, strict=True)),
            *({"item_id": i, "score": s, "filled": True} for i, s in draft.filled),
        ]
    )


def _array(rows: set[int]) -> Rows:
    return np.fromiter(rows, np.int64, len(rows))


def _rows(v: LoadedVersion, ids: Sequence[str]) -> set[int]:
    # Ids the version does not know cannot be returned anyway: nothing to exclude.
    return set(v.item_rows.rows(ids)[0].tolist())


def cached_outcome(
    hits: Sequence[tuple[Parsed, Reply]], policy: Policy = Policy(), now: float | None = None
) -> Outcome:
    """The outcome of requests answered from the reply cache: their replies as they were, or
    `expired` past their deadline, as a computed one would be (the caller has stopped waiting)."""
    outcome = Outcome()
    now = time.time() if now is None else now
    for p, cached in hits:
        late_ms = None if p.request is None else _late_ms(p.request, policy, _sent_at(p), now)
        reply = cached
        if late_ms is not None:
            reply = cached.model_copy(
                update={"status": "expired", "items": [], "error": _expired(late_ms)}
            )
        outcome.replies.append(reply)
        # counted under the model and arm the cached reply names (the cache is keyed per route)
        model, variant, fallback = reply.model or "", reply.variant or "", reply.fallback or ""
        queue_s = _queue_s(p, now)
        kind = reply.kind or "unparsed"
        outcome.served.append(Served(kind, reply.status, queue_s, 0.0, model, variant, fallback))
    return outcome


def _late_ms(
    request: AnyRequest, policy: Policy, sent_at: float | None, now: float | None
) -> float | None:
    """How long ago the request's deadline (its own, else the policy's) passed; None when it
    has not, or there is none."""
    deadline_ms = (
        request.deadline_ms if request.deadline_ms is not None else policy.default_deadline_ms
    )
    if deadline_ms is None or sent_at is None:
        return None
    late_ms = ((now or time.time()) - sent_at) * 1000 - deadline_ms
    return late_ms if late_ms > 0 else None


def _expired(late_ms: float) -> str:
    return f"deadline passed {late_ms:.0f} ms ago"


def _queue_s(p: Parsed, now: float) -> float | None:
    return now - p.event.timestamp_ms / 1000 if p.event.timestamp_ms else None


def _sent_at(p: Parsed) -> float | None:
    if p.request is not None and p.request.sent_at is not None:
        return p.request.sent_at.timestamp()
    return p.event.timestamp_ms / 1000 if p.event.timestamp_ms else None


def dead_letter(
    event: RawEvent, reason: str, worker_id: str, request_id: str | None = None
) -> DeadLetter:
    """The dead letter of a consumed event (a request, or an interaction) with the reason."""
    payload = event.value or b""
    return DeadLetter(
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


def _refuse(
    outcome: Outcome,
    event: RawEvent,
    reason: str,
    worker_id: str,
    version: LoadedVersion,
    model: str | None = None,
) -> None:
    payload = event.value or b""
    request_id = readable_request_id(payload) if len(payload) <= MAX_REQUEST_BYTES else None
    outcome.dead_letters.append(dead_letter(event, reason, worker_id, request_id))
    if request_id is not None:
        outcome.replies.append(
            Reply(
                request_id=request_id,
                status="error",
                error=reason,
                model=model or None,
                index_version=version.version,
                worker_id=worker_id,
            )
        )
