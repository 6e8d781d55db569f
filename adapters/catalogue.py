"""Which versions a storage holds and which one LATEST names: read-only, on a directory or on
object storage. The builder adds the writes (LATEST, gc); `annrec status` only reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.object_store import ObjectStore, is_remote
from schemas.layout import list_versions, read_latest


@dataclass(frozen=True)
class Catalogue:
    versions: Callable[[], list[str]]  # oldest first
    latest: Callable[[], str | None]


def read_catalogue(storage: str, options: dict[str, Any]) -> Catalogue:
    if is_remote(storage):
        store = ObjectStore(storage, options)
        return Catalogue(store.list_versions, store.read_latest)
    root = local_root(storage)
    return Catalogue(lambda: list_versions(root), lambda: read_latest(root))


def local_root(storage: str) -> Path:
    """A directory storage setting as a path (`file://` accepted)."""
    return Path(storage.removeprefix("file://"))
