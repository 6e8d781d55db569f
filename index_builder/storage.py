"""Writing versions: staging, fsync, atomic rename, atomic LATEST (layout in schemas/layout.py).

A version appears in versions/ only through a rename of a fully written and fsynced directory,
and LATEST changes only through a rename of a fsynced file, so a reader sees the old state or the
new one, never half of a version.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from schemas.layout import LATEST, STAGING, version_dir


def new_version_name(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def start_staging(storage: Path, version: str) -> Path:
    staging = storage / STAGING / version
    staging.mkdir(parents=True, exist_ok=False)
    return staging


def discard_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def commit_staging(storage: Path, staging: Path, version: str) -> Path:
    """fsync every file, then rename the directory into versions/ (atomic on one filesystem)."""
    for path in staging.iterdir():
        _fsync(path)
    _fsync(staging)
    target = version_dir(storage, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    _fsync(target.parent)
    return target


def set_latest(storage: Path, version: str) -> None:
    version_dir(storage, version)  # validates the name
    tmp = storage / f".{LATEST}.{secrets.token_hex(4)}"
    tmp.write_text(version + "\n")
    _fsync(tmp)
    os.replace(tmp, storage / LATEST)
    _fsync(storage)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
