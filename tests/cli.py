"""Run the `annrec` command as a user does: a child process, its exit code, stdout, stderr."""

from __future__ import annotations

import os
import subprocess
import sys


def annrec(
    *args: str,
    env: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    cwd: object = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """`env` replaces the environment; `extra_env` is added to this process's."""
    environment = env if env is not None else {**os.environ, **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        env=environment,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
