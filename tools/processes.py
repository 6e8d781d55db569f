"""Starting and stopping the worker processes the demo, the benchmarks and the fault suite run."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import IO


def start_worker(env: Mapping[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """`annrec worker` in a child process configured by `env`, warnings and errors (and
    anything on stdout or stderr) appended to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "--log-level", "WARNING", "worker"],
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


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
