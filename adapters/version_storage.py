"""Where versions live: a shared directory, or object storage mirrored to a local cache.

`open_storage` is the one place a storage setting (`./annrec-data`, `file:///...`,
`s3://bucket/prefix`) becomes one or the other; both answer the same questions (which versions,
which one LATEST names) and both hand a reader a local directory holding a complete version.
A reader only ever maps files that are complete and never rewritten: a downloaded version is
written into a staging directory, verified against its manifest's sha256s, and renamed into the
cache. The builder adds the writes (LATEST, gc, upload) on top (index_builder/targets.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from adapters.index_files import check_files
from adapters.object_store import ObjectStore, is_remote
from schemas.errors import AnnrecError, VersionMissing
from schemas.layout import list_versions, read_latest, version_dir
from schemas.manifest import MANIFEST_NAME, Manifest


class VersionStorage(Protocol):
    url: str

    def latest(self) -> str | None:
        """The version LATEST names; None before anything was published."""
        ...

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        ...

    def materialize(self, version: str) -> Path:
        """A local root under which versions/<version>/ is complete; may download."""
        ...


class DirectoryStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def latest(self) -> str | None:
        return read_latest(self.root)

    def versions(self) -> list[str]:
        return list_versions(self.root)

    def materialize(self, version: str) -> Path:
        return self.root


class ObjectStorage:
    def __init__(self, store: ObjectStore, cache_dir: Path | None = None) -> None:
        self.store = store
        self.url = store.url
        self.cache_dir = cache_dir

    def latest(self) -> str | None:
        return self.store.read_latest()

    def versions(self) -> list[str]:
        return self.store.list_versions()

    def materialize(self, version: str) -> Path:
        if self.cache_dir is None:
            raise AnnrecError(f"{self.url}: no local cache directory to download versions into")
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


def open_storage(
    storage: str, options: dict[str, Any], cache_dir: Path | None = None
) -> DirectoryStorage | ObjectStorage:
    """The storage a setting names; `cache_dir`: where object-storage versions are downloaded."""
    if is_remote(storage):
        return ObjectStorage(ObjectStore(storage, options), cache_dir)
    return DirectoryStorage(local_root(storage))


def local_root(storage: str) -> Path:
    """A directory storage setting as a path (`file://` accepted)."""
    return Path(storage.removeprefix("file://"))
