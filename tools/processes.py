"""Stopping the worker processes the demo, the benchmarks and the fault suite start."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterable


def stop(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float = 60.0) -> None:
    """SIGTERM every process still running (a worker finishes its batch, commits and closes),
    then wait for each; one still running after timeout_s is killed. When this returns, none is
    running: the folder they served from can go."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
