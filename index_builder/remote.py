"""Publishing to object storage: upload a locally built, verified version, then move LATEST.

Order is the atomicity here (see adapters/object_store.py): files, then manifest.json, then LATEST.
Retention mirrors storage.gc_versions: the manifest goes first, so a version being deleted stops
being a version before any of its files disappear.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import structlog

from adapters.object_store import ObjectStore
from schemas.errors import AnnrecError
from schemas.layout import EXPERIMENT, LATEST, PINNED, parse_experiment, parse_pins, version_dir
from schemas.manifest import MANIFEST_NAME, Manifest

log = structlog.get_logger(__name__)


def upload_version(store: ObjectStore, local_root: Path, version: str) -> None:
    directory = version_dir(local_root, version)
    names = sorted(p.name for p in directory.iterdir() if p.name != MANIFEST_NAME)
    for name in names:
        store.fs.put_file(str(directory / name), store.version_key(version, name))
    store.fs.put_file(str(directory / MANIFEST_NAME), store.version_key(version, MANIFEST_NAME))
    log.info("version_uploaded", version=version, url=store.url, files=len(names) + 1)


def set_remote_latest(store: ObjectStore, version: str, *, allow_older: bool = False) -> bool:
    """Forward-only like storage.set_latest, but object stores have no lock: two builders
    finishing at the same instant can still race (last writer wins); run one builder per store."""
    store.version_key(version)  # validates the name
    current = store.read_latest()
    if current is not None and version <= current and not allow_older:
        return False
    store.fs.pipe_file(store.key(LATEST), (version + "\n").encode())
    return True


def gc_remote_versions(store: ObjectStore, keep: int, grace_s: float) -> list[str]:
    if keep < 1:
        raise AnnrecError("gc keeps at least one version")
    latest = store.read_latest()
    kept = remote_protected_versions(store)
    removed = []
    for name in store.list_versions()[:-keep]:
        manifest = Manifest.model_validate_json(
            store.fs.cat_file(store.version_key(name, MANIFEST_NAME))
        )
        if name == latest or name in kept or _age_s(manifest.created_at) < grace_s:
            continue
        store.fs.rm_file(store.version_key(name, MANIFEST_NAME))
        store.fs.rm(store.version_key(name), recursive=True)
        removed.append(name)
    return removed


def remote_protected_versions(store: ObjectStore) -> set[str]:
    """As storage.protected_versions: what an experiment serves or a pin registered."""
    raw_pins, raw_experiment = store.read_state(PINNED), store.read_state(EXPERIMENT)
    kept = set(parse_pins(raw_pins, PINNED).versions) if raw_pins else set()
    if raw_experiment:
        kept |= set(parse_experiment(raw_experiment, EXPERIMENT).candidates)
    return kept


def write_remote_state(store: ObjectStore, name: str, text: str | None) -> None:
    """A state object (EXPERIMENT, PINNED) replaced by one PUT (atomic), or removed."""
    if text is None:
        if store.fs.exists(store.key(name)):
            store.fs.rm_file(store.key(name))
    else:
        store.fs.pipe_file(store.key(name), text.encode())


def _age_s(created: datetime) -> float:
    return time.time() - created.timestamp()
