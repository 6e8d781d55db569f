"""Where the builder publishes: a shared directory, or object storage (built and verified in a
local build area, then uploaded). Chosen once, from the storage the setting opens; the version
commands and `annrec build` use the same target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.object_store import ObjectStore
from adapters.version_storage import DirectoryStorage, ObjectStorage, open_storage
from index_builder import remote, storage


@dataclass(frozen=True)
class DirectoryTarget:
    storage: DirectoryStorage

    @property
    def build_root(self) -> Path:
        """Versions are built in the storage itself (staged, then renamed into place)."""
        return self.storage.root

    @property
    def remote(self) -> ObjectStore | None:
        return None

    def set_latest(self, version: str, *, allow_older: bool = False) -> bool:
        return storage.set_latest(self.storage.root, version, allow_older=allow_older)

    def gc(self, keep: int, grace_s: float) -> list[str]:
        return storage.gc_versions(self.storage.root, keep, grace_s)


@dataclass(frozen=True)
class ObjectStoreTarget:
    storage: ObjectStorage
    build_root: Path  # built and verified here, then uploaded

    @property
    def remote(self) -> ObjectStore | None:
        return self.storage.store

    def set_latest(self, version: str, *, allow_older: bool = False) -> bool:
        return remote.set_remote_latest(self.storage.store, version, allow_older=allow_older)

    def gc(self, keep: int, grace_s: float) -> list[str]:
        return remote.gc_remote_versions(self.storage.store, keep, grace_s)


def publish_target(
    storage_url: str, options: dict[str, Any], build_dir: Path
) -> DirectoryTarget | ObjectStoreTarget:
    opened = open_storage(storage_url, options)
    if isinstance(opened, ObjectStorage):
        return ObjectStoreTarget(opened, build_dir)
    return DirectoryTarget(opened)
