"""Where a worker finds versions: a shared directory, or object storage mirrored to a local cache.

Either way the worker ends up with `<root>/versions/<version>/` on a local disk, and only ever maps
files there that are complete and never rewritten: a downloaded version is written into a staging
directory, verified against its manifest's sha256s, and renamed into the cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from adapters.catalogue import local_root
from adapters.index_files import check_files
from adapters.object_store import ObjectStore, is_remote
from schemas.errors import VersionMissing
from schemas.layout import read_latest, version_dir
from schemas.manifest import MANIFEST_NAME, Manifest


class VersionSource(Protocol):
    def latest(self) -> str | None: ...

    def materialize(self, version: str) -> Path:
        """A local root under which versions/<version>/ is complete; may download."""
        ...


class DirectorySource:
    def __init__(self, root: Path) -> None:
        self.root = root

    def latest(self) -> str | None:
        return read_latest(self.root)

    def materialize(self, version: str) -> Path:
        return self.root


class ObjectStoreSource:
    def __init__(self, store: ObjectStore, cache_dir: Path) -> None:
        self.store = store
        self.cache_dir = cache_dir

    def latest(self) -> str | None:
        return self.store.read_latest()

    def materialize(self, version: str) -> Path:
        target = version_dir(self.cache_dir, version)
        if target.is_dir():
            return self.cache_dir
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        try:
            manifest_key = self.store.version_key(version, MANIFEST_NAME)
            try:
                raw = self.store.fs.cat_file(manifest_key)
            except FileNotFoundError as exc:
                raise VersionMissing(f"{version}: no manifest in {self.store.url}") from exc
            manifest = Manifest.model_validate_json(raw)
            for name in manifest.files:
                self.store.fs.get_file(self.store.version_key(version, name), str(staging / name))
            (staging / MANIFEST_NAME).write_bytes(raw)
            check_files(staging, manifest)  # before the rename: the cache holds verified files only
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.cache_dir


def version_source(storage: str, cache_dir: Path, options: dict[str, Any]) -> VersionSource:
    if is_remote(storage):
        return ObjectStoreSource(ObjectStore(storage, options), cache_dir)
    return DirectorySource(local_root(storage))
