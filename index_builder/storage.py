"""Writing versions: staging, fsync, atomic rename, atomic LATEST (layout in schemas/layout.py).

A version appears in versions/ only through a rename of a fully written and fsynced directory,
and LATEST changes only through a rename of a fsynced file, so a reader sees the old state or the
new one, never half of a version.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from schemas.errors import AnnrecError
from schemas.layout import (
    LATEST,
    STAGING,
    list_versions,
    read_experiment,
    read_latest,
    read_pins,
    version_dir,
)
from schemas.manifest import MANIFEST_NAME, Manifest


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


def set_latest(storage: Path, version: str, *, allow_older: bool = False) -> bool:
    """Point LATEST at `version`; True if it moved.

    Builders may run concurrently: under a lock, LATEST only moves forward (version names sort by
    creation time), so a slow build finishing last cannot replace a newer version. A rollback
    passes allow_older. The rename makes the change atomic for readers, who take no lock.
    """
    version_dir(storage, version)  # validates the name
    with _locked(storage):
        current = read_latest(storage)
        if current is not None and version <= current and not allow_older:
            return False
        _replace_file(storage, LATEST, version + "\n")
        return True


def write_state(storage: Path, name: str, text: str | None) -> None:
    """Replace (None: remove) a small state file of the root (EXPERIMENT, PINNED) atomically,
    under the lock gc holds: a gc never reads a half-written experiment or list of pins."""
    with _locked(storage):
        if text is None:
            (storage / name).unlink(missing_ok=True)
            _fsync(storage)
        else:
            _replace_file(storage, name, text)


def protected_versions(storage: Path) -> set[str]:
    """Versions gc never removes whatever their age: those an experiment serves or a pin
    registered (a request may name them at any time)."""
    experiment = read_experiment(storage)
    return set(read_pins(storage).versions) | set(experiment.candidates if experiment else [])


def _replace_file(storage: Path, name: str, text: str) -> None:
    tmp = storage / f".{name}.{secrets.token_hex(4)}"
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, storage / name)
    _fsync(storage)


def gc_versions(storage: Path, keep: int, grace_s: float, now: float | None = None) -> list[str]:
    """Remove all but the `keep` newest versions; returns the removed names.

    Never removed: the version LATEST names, the versions an experiment serves or a pin
    registered (protected_versions), and any version (or staging directory) younger than
    `grace_s`, since a worker may still be loading it or a builder writing it. A removed version
    is first renamed out of versions/, so no reader ever sees one with files missing; workers
    that still have its files mapped keep reading them (unlinked files live until unmapped).
    """
    if keep < 1:
        raise AnnrecError("gc keeps at least one version")
    now = time.time() if now is None else now
    with _locked(storage):
        latest = read_latest(storage)
        kept = protected_versions(storage)
        removed = []
        for name in list_versions(storage)[:-keep]:
            path = version_dir(storage, name)
            if name == latest or name in kept or now - path.stat().st_mtime < grace_s:
                continue
            trash = storage / STAGING / f".trash-{name}"
            trash.parent.mkdir(exist_ok=True)
            os.rename(path, trash)
            shutil.rmtree(trash)
            removed.append(name)
        staging = storage / STAGING
        if staging.is_dir():  # builds that died half-way
            for leftover in staging.iterdir():
                if now - leftover.stat().st_mtime >= grace_s:
                    shutil.rmtree(leftover, ignore_errors=True)
    return removed


@contextmanager
def _locked(storage: Path) -> Iterator[None]:
    storage.mkdir(parents=True, exist_ok=True)
    with (storage / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def adopt_version(storage: Path, source: Path, version: str) -> Manifest:
    """Move a version already built (and verified) under another root `source` on the same
    filesystem into `storage`, and point LATEST at it; its manifest, for the announcement.
    What a publish does after building, for benchmarks and fault injection that prebuild."""
    target = version_dir(storage, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(version_dir(source, version), target)
    set_latest(storage, version)
    return Manifest.model_validate_json((target / MANIFEST_NAME).read_text())
