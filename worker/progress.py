"""Consumer lag per partition, and stall detection: an assigned partition with requests waiting
whose position has not moved for a window is stuck (a silently stalled partition is a known
failure of Kafka consumers), and the health endpoint says so, so an orchestrator restarts us."""

from __future__ import annotations


class PartitionProgress:
    def __init__(self, stall_after_s: float) -> None:
        self.stall_after_s = stall_after_s
        self._moved: dict[int, tuple[int, float]] = {}  # partition -> (position, when it moved)
        self.lag: dict[int, int] = {}

    def update(self, partition: int, position: int, end: int, now: float) -> int:
        """Record where the worker is on a partition; returns its lag (requests waiting)."""
        last = self._moved.get(partition)
        if last is None or last[0] != position:
            self._moved[partition] = (position, now)
        lag = max(end - position, 0)
        self.lag[partition] = lag
        return lag

    def forget(self, partition: int) -> None:
        """The partition was revoked: its progress is another worker's business now."""
        self._moved.pop(partition, None)
        self.lag.pop(partition, None)

    def stalled(self, now: float) -> list[int]:
        """Partitions with requests waiting whose position has not moved for stall_after_s."""
        return sorted(
            p
            for p, (_, since) in self._moved.items()
            if self.lag.get(p, 0) > 0 and now - since > self.stall_after_s
        )
