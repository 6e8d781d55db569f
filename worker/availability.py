"""Real-time availability: item-updates applied to the serving version between two batches.

The topic is the truth for the attributes it carries: a version swapped in gets every update
its build did not fold in (those at or after the offsets in its manifest), and each update read
later is applied before the next batch. Only the serving thread writes, and
only between batches, so no request sees an update half-applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from adapters.item_updates import ItemUpdateLog
from worker.index_store import LoadedVersion
from worker.metrics import WorkerMetrics

log = structlog.get_logger(__name__)


def apply_updates(version: LoadedVersion, updates: Mapping[tuple[str, str], bool]) -> int:
    """Set each (attribute, item) -> value the version knows; returns how many changed."""
    attrs = version.attributes
    if attrs is None:
        return 0
    changed = 0
    for (name, item), value in updates.items():
        row = version.item_rows.get(item)
        if row is not None and attrs.is_flag(name):
            changed += attrs.set_flag(name, row, value)
        changed += version.fresh.set_flag(name, item, value)  # an item upserted since the build
    return changed


class Availability:
    """Follows the item-updates topic for one worker."""

    def __init__(self, updates: ItemUpdateLog, metrics: WorkerMetrics) -> None:
        self._log = updates
        self._metrics = metrics
        self._invalid_seen = 0

    def replay(self, timeout_s: float) -> None:
        """Read the whole topic before serving: a restarted worker knows what is out of stock."""
        self._log.replay(timeout_s)

    def adopt(self, version: LoadedVersion) -> None:
        """Apply to a version about to serve what it has not folded in: every update at or
        after the offsets its build read to (all of them for a version built without Kafka).
        On the serving thread: walking a million updates would pause serving for a second."""
        fresh = self._log.state.since(version.manifest.item_updates_through)
        changed = apply_updates(version, fresh)
        log.info(
            "item_updates_adopted",
            version=version.version,
            updates=len(self._log.state.values),
            newer_than_version=len(fresh),
            changed=changed,
        )

    def refresh(self, version: LoadedVersion, also: Sequence[LoadedVersion] = ()) -> int:
        """Apply what arrived since the last call to the serving version and to `also` (the
        same model's other versions held: experiment candidates, pins, so an arm never offers
        what another arm knows is gone); the number of updates read."""
        batch = {(u.attr, u.item_id): u.value for u in self._log.poll()}
        if batch:
            for other in also:
                apply_updates(other, batch)
            changed = apply_updates(version, batch)
            self._metrics.item_updates.labels("applied").inc(changed)
            self._metrics.item_updates.labels("unchanged").inc(len(batch) - changed)
            log.info(
                "item_updates_applied", version=version.version, read=len(batch), changed=changed
            )
        if self._log.invalid > self._invalid_seen:
            self._metrics.item_updates.labels("invalid").inc(self._log.invalid - self._invalid_seen)
            self._invalid_seen = self._log.invalid
        return len(batch)

    @property
    def values(self) -> Mapping[tuple[str, str], bool]:
        """The newest value of every (attribute, item) read so far."""
        return self._log.state.values

    @property
    def read(self) -> int:
        """Valid updates read so far (replay included)."""
        return self._log.read

    def close(self) -> None:
        self._log.close()
