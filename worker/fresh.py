"""Items added, changed or removed since the serving version was built: the item-vectors topic
kept in the version's fresh segment (query_engine/segment.py).

Every worker replays the compacted topic before serving, so a restarted worker answers as one
that saw the events live. A version swapped in gets every event at or after the offsets its
build read to (manifest item_vectors_through): what the build folded in is not in its segment,
so the segment stays small. Events read later are applied between two batches by the serving
thread, as availability is (worker/availability.py). An event the version cannot take is
skipped here and counted; the group's side consumer dead-letters it once (worker/app.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
import structlog
from pydantic import ValidationError

from adapters.item_vectors import ItemVectorLog
from query_engine.segment import refusal
from query_engine.vectors import fold_in, item_gramian
from schemas.errors import describe
from schemas.events import MAX_REQUEST_BYTES, ItemVector, parse_item_vector
from worker.index_store import LoadedVersion
from worker.metrics import WorkerMetrics
from worker.parse import REASON_ERRORS, RawEvent

log = structlog.get_logger(__name__)

# Finding an upserted item's neighbours (query_engine/segment_neighbours.py) costs 1-4 ms at
# 1M items; done at once, 100 upserts/s would take 20-40% of the serving thread. (The seconds
# requests waited in the first 1M runs of bench freshness were the id lookup, worker/id_rows.py.)
# So it runs between batches on SETTLE_SHARE of the serving thread's time (a credit, at most
# SETTLE_MAX_S ahead); meanwhile requests read the items still waiting as a scan of the items
# that arrived since, so nothing is served later or worse, only that part costs a scan again.
SETTLE_SHARE = 0.1
SETTLE_MAX_S = 0.02

Availability = Mapping[tuple[str, str], bool]  # (attribute, item id) -> value


def vector_refusal(version: LoadedVersion, event: ItemVector) -> str | None:
    """Why `version` cannot take the event (None: it can)."""
    if event.users is not None and not len(version.user_rows.rows(event.users)[0]):
        return "none of its users is known to the version: no vector to fold in"
    return refusal(event, version.manifest.dim, version.manifest.attributes)


def item_vector(version: LoadedVersion, event: ItemVector) -> npt.NDArray[np.float32]:
    """The event's vector, or for an item given by its users, the ALS item step over the users
    the version knows (the item-side twin of `recent_items`: each user one interaction of
    confidence alpha; users' Gramian X^T X computed once per version)."""
    if event.vector is not None:
        return np.asarray(event.vector, dtype=np.float32)
    assert event.users is not None  # an upsert has a vector or users (the model checks)
    rows = version.user_rows.rows(event.users)[0]
    gramian = _USER_GRAMIANS.get(version.version)
    if gramian is None:
        gramian = _USER_GRAMIANS[version.version] = item_gramian(version.user_factors)
    spec = version.manifest.fold_in
    return fold_in(gramian, np.asarray(version.user_factors[rows]), spec.regularization, spec.alpha)


# Per version name (K x K each): X^T X of its users, for items folded in from their users.
_USER_GRAMIANS: dict[str, npt.NDArray[np.float64]] = {}


def refused_events(
    events: Sequence[RawEvent], version: LoadedVersion
) -> list[tuple[RawEvent, str]]:
    """The item-vectors events (consumed by the group's side consumer, each by one worker)
    that cannot be served, with the reason: what the worker dead-letters. A null value is
    compaction's delete marker, not an event."""
    refused = []
    for event in events:
        raw = event.value
        if raw is None:
            continue
        if len(raw) > MAX_REQUEST_BYTES:
            refused.append((event, f"payload of {len(raw)} bytes exceeds the limit"))
            continue
        try:
            parsed = parse_item_vector(raw)
        except ValidationError as exc:
            reason = describe(exc, REASON_ERRORS, whole="event")
            refused.append((event, f"invalid item vector: {reason}"))
            continue
        except (UnicodeDecodeError, RecursionError, MemoryError, ValueError) as exc:
            refused.append((event, f"invalid item vector: unparseable ({type(exc).__name__})"))
            continue
        why = vector_refusal(version, parsed)
        if why is not None:
            refused.append((event, f"item vector refused by index {version.version}: {why}"))
    return refused


def apply_event(
    version: LoadedVersion, event: ItemVector, availability: Availability | None = None
) -> str:
    """Apply one event to the version's segment; 'upsert', 'removal' or 'refused'. An upsert of
    a version item without attributes keeps the version's; the availability topic's values for
    the item (`availability`) then apply, as they do to version items."""
    if vector_refusal(version, event) is not None:
        return "refused"
    row = version.item_rows.get(event.item_id)
    if event.removed:
        version.fresh.remove(event.item_id, row)
        return "removal"
    attributes = dict(event.attributes)
    if not attributes and row is not None and version.attributes is not None:
        attributes = version.attributes.values_of(row)
    version.fresh.upsert(
        event.item_id, item_vector(version, event), attributes, row, version.search
    )
    for spec in version.manifest.attributes:
        value = None if availability is None else availability.get((spec.name, event.item_id))
        if value is not None:
            version.fresh.set_flag(spec.name, event.item_id, value)
    return "upsert"


class FreshItems:
    """Follows the item-vectors topic for one worker."""

    def __init__(self, vectors: ItemVectorLog, metrics: WorkerMetrics, max_items: int) -> None:
        self._log = vectors
        self._metrics = metrics
        self._max_items = max_items
        self._overdue = False
        self._settled_at = time.monotonic()
        self._credit = 0.0  # seconds the next turn may spend finding neighbours

    def replay(self, timeout_s: float) -> None:
        """Read the whole topic before serving: a restarted worker serves what others do."""
        self._log.replay(timeout_s)

    def adopt(self, version: LoadedVersion, availability: Availability) -> None:
        """Fill a version's segment with what its build did not fold in (on the serving
        thread, before it serves)."""
        through = version.manifest.item_vectors_through
        fresh = self._log.state.since(through)
        counts = self._apply(version, fresh.values(), availability)
        log.info(
            "item_vectors_adopted",
            version=version.version,
            events=len(self._log.state.values),
            newer_than_version=len(fresh),
            segment=version.fresh.size,
            **counts,
        )

    def refresh(self, version: LoadedVersion, availability: Availability) -> int:
        """Apply what arrived since the last call, then find the neighbours of upserted items
        for a share of the time since; the number of events read."""
        events = self._log.poll()
        if events:
            counts = self._apply(version, events, availability)
            log.info("item_vectors_applied", version=version.version, **counts)
        # A credit of SETTLE_SHARE of the time passed, spent (and overrun by at most one item)
        # whenever it is positive: on average that share of the thread, however short a turn.
        now = time.monotonic()
        self._credit = min(SETTLE_MAX_S, self._credit + SETTLE_SHARE * (now - self._settled_at))
        if version.fresh.neighbours.waiting and self._credit > 0:
            version.fresh.settle(self._credit)
            self._credit -= time.monotonic() - now
        self._settled_at = time.monotonic()
        return len(events)

    def _apply(
        self, version: LoadedVersion, events: Iterable[ItemVector], availability: Availability
    ) -> dict[str, int]:
        counts = {"upsert": 0, "removal": 0, "refused": 0}
        for event in events:
            counts[apply_event(version, event, availability)] += 1
        for result, n in counts.items():
            self._metrics.fresh_events.labels(result).inc(n)
        self._bound(version)
        return counts

    def _bound(self, version: LoadedVersion) -> None:
        """The size metric; past the bound, said once (and again after it was back under)."""
        size = version.fresh.size
        self._metrics.fresh_items.set(size)
        overdue = size > self._max_items
        self._metrics.build_overdue.set(int(overdue))
        if overdue and not self._overdue:
            log.warning(
                "build_overdue",
                version=version.version,
                segment=size,
                max_items=self._max_items,
                detail="the fresh segment is past ANNREC_FRESH_MAX_ITEMS: run a build to fold "
                "it in (requests are still answered, each scanning the segment)",
            )
        self._overdue = overdue

    @property
    def read(self) -> int:
        """Valid events read so far (replay included)."""
        return self._log.read

    def close(self) -> None:
        self._log.close()
