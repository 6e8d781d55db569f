"""What a process costs, read from Linux's /proc: resident and mapped memory, CPU time, and the
memory the machine has left. The parsers take the files' text, so they are tested without
depending on what this process happens to hold."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# /proc/<pid>/status fields a benchmark reports (kB in the file, MiB in the results): resident
# (anonymous + file-backed: a worker's mmapped version counts as RssFile), and the peak.
STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def parse_status(text: str) -> dict[str, int]:
    """The STATUS_FIELDS of a /proc/<pid>/status text, in MiB."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in STATUS_FIELDS:
            out[name] = round(int(rest.split()[0]) / 1024)
    return out


def memory_status(pid: int | str = "self") -> dict[str, int]:
    return parse_status(Path(f"/proc/{pid}/status").read_text())


def parse_mapped(maps_text: str, under: Path) -> int:
    """Bytes of address space mapped from files under `under` (a version's folder), from a
    /proc/<pid>/maps text: what the process maps, resident or not."""
    prefix = str(under.resolve()) + os.sep
    total = 0
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(prefix):
            start, _, stop = fields[0].partition("-")
            total += int(stop, 16) - int(start, 16)
    return total


def mapped_bytes(under: Path, pid: int | str = "self") -> int:
    return parse_mapped(Path(f"/proc/{pid}/maps").read_text(), under)


def parse_cpu_seconds(stat_text: str) -> float:
    """User + system CPU seconds of all the process's threads, from /proc/<pid>/stat (fields 14
    and 15, counted after the command name, which may itself hold spaces and parentheses)."""
    after_name = stat_text.rsplit(")", 1)[1].split()
    return (int(after_name[11]) + int(after_name[12])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    return parse_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())


def available_gib() -> float:
    """MemAvailable of /proc/meminfo: what the machine can still give without swapping."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    raise OSError("/proc/meminfo has no MemAvailable")


class PeakWatch:
    """Follows a child's peak resident memory (VmHWM: a high-water mark, so polling misses only
    what it reaches in its last POLL_S), and stops it (SIGTERM, then SIGKILL) when the machine's
    available memory falls below `min_free_gib`: other people share the machine, and the
    kernel's OOM killer may pick any process."""

    POLL_S = 0.25

    def __init__(
        self,
        pid: int,
        min_free_gib: float,
        on_poll: Callable[[PeakWatch], None] | None = None,
        report_every_s: float = 30.0,
    ) -> None:
        self.pid, self.min_free_gib = pid, min_free_gib
        # Called every report_every_s while the child runs, and once more when it has ended.
        self.on_poll, self.report_every_s = on_poll, report_every_s
        self.reason: str | None = None
        self.peak_mib = 0
        self.lowest_gib = float("inf")
        self._done = threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
        if self.on_poll is not None:
            self.on_poll(self)

    def _watch(self) -> None:
        reported = time.perf_counter()
        while not self._done.wait(self.POLL_S):
            if self.on_poll is not None and time.perf_counter() - reported >= self.report_every_s:
                self.on_poll(self)
                reported = time.perf_counter()
            with contextlib.suppress(OSError):  # exited between two looks
                self.peak_mib = max(self.peak_mib, memory_status(self.pid).get("VmHWM", 0))
            free = available_gib()
            self.lowest_gib = min(self.lowest_gib, free)
            if free < self.min_free_gib and self.reason is None:
                own = "?"
                with contextlib.suppress(OSError):
                    own = str(memory_status(self.pid).get("VmRSS", "?"))
                self.reason = (
                    f"stopped: the machine's available memory fell to {free:.1f} GiB "
                    f"(limit {self.min_free_gib} GiB) with this process at {own} MiB resident, "
                    f"after {time.perf_counter() - self._started:.0f} s"
                )
                terminate(self.pid)


def terminate(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
        time.sleep(5)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
