"""Sustained overload: shed early, so the backlog a burst leaves is short.

A fixed default deadline bounds every wait, but a worker offered more than it can answer keeps
computing requests that have waited almost the whole deadline: the front of its queue stays one
deadline old, and after the burst the delay takes about one deadline to come back. When even the
freshest request of every batch has waited over `target_s` for `after_s` in a row, the worker is
not draining a one-off backlog (a failover's, a restart's: those clear in a second or two at full
speed) but is overloaded; until that ends, requests without their own deadline_ms that waited
over `target_s` are answered `expired` (not computed), which keeps the queue `target_s` deep.
"""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


class OverloadDetector:
    def __init__(self, target_s: float, after_s: float) -> None:
        self.target_s, self.after_s = target_s, after_s
        self._behind_since: float | None = None
        self.shedding = False

    def observe(self, youngest_wait_s: float | None, now: float) -> bool:
        """Feed the freshest request's wait of a batch (None: an empty poll, nothing waits);
        returns whether to shed now."""
        if self.target_s <= 0:
            return False
        if youngest_wait_s is None or youngest_wait_s <= self.target_s:
            self._behind_since = None
            if self.shedding:
                self.shedding = False
                log.info("overload_shedding_stopped")
            return False
        if self._behind_since is None:
            self._behind_since = now
        if not self.shedding and now - self._behind_since >= self.after_s:
            self.shedding = True
            log.warning(
                "overload_shedding_started",
                behind_s=round(now - self._behind_since, 1),
                youngest_wait_s=round(youngest_wait_s, 2),
                shed_after_wait_s=self.target_s,
            )
        return self.shedding
