"""Resuming a build that stopped (BuildOptions.resume): a 10M-item build runs for hours on a
shared machine, longer than one process may live there, and its phases (angular index, MIPS
bands, neighbour table) take an hour each. A resumable build keeps its staging directory when it
stops, and after each long phase writes a checkpoint beside it: the phase's result (the specs
the manifest needs) and the name and size of every file the phase wrote. A later resumable build
of the same inputs and options takes that staging directory over and skips the phases whose
checkpoint holds and whose files are all there at their recorded sizes; a phase stopped half-way
has no checkpoint and runs again, overwriting what it had written. Nothing is trusted blindly:
the verify phase afterwards reads every index back and checks it against the factors, as for any
build.

The checkpoints live in `<storage>/staging/<version>.resume/`, outside the staging directory
(whose every file goes into the version). A stopped build's leftovers are removed by
`annrec versions gc` after its grace period like any other half-written build.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from index_builder import storage
from schemas.layout import STAGING

log = structlog.get_logger(__name__)

RESUME_SUFFIX = ".resume"
KEY_FILE = "key"
MTIME_MARGIN_NS = 2_000_000_000


def resume_key(source_sha256: str, options: dict[str, Any]) -> str:
    """What a staging directory must have been built from to be resumed: the factors' checksum
    and every option that changes a phase's output."""
    text = json.dumps({"source": source_sha256, **options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Checkpoints:
    """The finished phases of one staging directory."""

    directory: Path
    staging: Path

    def finished(self, phase: str) -> dict[str, Any] | None:
        """The phase's recorded result if it finished and its files are all still there at
        their sizes; else None (the phase runs again)."""
        path = self.directory / f"{phase}.json"
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        for name, size in record["files"].items():
            file = self.staging / name
            if not file.is_file() or file.stat().st_size != size:
                log.warning("build_checkpoint_stale", phase=phase, file=name)
                return None
        result: dict[str, Any] = record["result"]
        return result

    def record(self, phase: str, started_ns: int, result: dict[str, Any]) -> None:
        """The phase finished: its result and the files it wrote (modified since `started_ns`,
        time.time_ns() when it started), written atomically."""
        written = {
            p.name: p.stat().st_size
            for p in self.staging.iterdir()
            # The file system's clock is coarser than time_ns() and may lag it: a margin, at
            # the cost of also listing (complete) files of the phase before.
            if p.is_file() and p.stat().st_mtime_ns >= started_ns - MTIME_MARGIN_NS
        }
        tmp = self.directory / f"{phase}.json.tmp"
        tmp.write_text(json.dumps({"result": result, "files": written}, indent=2))
        os.replace(tmp, self.directory / f"{phase}.json")


def start(storage_root: Path, version: str, key: str) -> tuple[Path, Checkpoints]:
    """The staging directory for `version`: a stopped resumable build's of the same key, moved
    to the new version's name, or a new one."""
    root = storage_root / STAGING
    other = 0
    for key_file in sorted(root.glob(f"*{RESUME_SUFFIX}/{KEY_FILE}")) if root.is_dir() else []:
        old_checkpoints = key_file.parent
        old_staging = root / old_checkpoints.name.removesuffix(RESUME_SUFFIX)
        if key_file.read_text() != key or not old_staging.is_dir():
            other += 1
            continue
        staging = root / version
        os.rename(old_staging, staging)
        checkpoints = root / f"{version}{RESUME_SUFFIX}"
        os.rename(old_checkpoints, checkpoints)
        done = sorted(p.stem for p in checkpoints.glob("*.json"))
        log.info("build_resumed", previous=old_staging.name, phases_finished=done)
        return staging, Checkpoints(checkpoints, staging)
    # Said out loud: a user who asked to resume should know when there was nothing to resume
    # (a first run, or stopped builds of other factors or options, which are left alone).
    log.info("build_resume_none", stopped_builds_of_other_inputs=other, then="building in full")
    staging = storage.start_staging(storage_root, version)
    checkpoints = root / f"{version}{RESUME_SUFFIX}"
    checkpoints.mkdir()
    (checkpoints / KEY_FILE).write_text(key)
    return staging, Checkpoints(checkpoints, staging)


def finish(checkpoints: Checkpoints) -> None:
    """The version was published: its checkpoints are of no more use."""
    for path in checkpoints.directory.iterdir():
        path.unlink()
    checkpoints.directory.rmdir()
