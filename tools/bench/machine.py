"""What a figure was measured on: printed and stored beside every benchmark result."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from threadpoolctl import threadpool_info

PACKAGES = ("annrec", "numpy", "annoy", "confluent-kafka", "redis", "implicit")


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "blas": [
            {k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ],
    }


def git_commit() -> str | None:
    """The commit the figures were measured at (None outside a git checkout)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def describe(info: dict[str, Any]) -> str:
    blas = ", ".join(
        f"{b['internal_api']} {b['version']} ({b['architecture']})" for b in info["blas"]
    )
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB; Python {info['python']}; "
        f"numpy {info['packages']['numpy']}, annoy {info['packages']['annoy']}; BLAS {blas}"
    )


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):  # noqa: SIM115 - tiny read
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
