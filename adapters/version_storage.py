"""Where versions live: a shared directory, or object storage mirrored to a local cache.

`open_storage` is the one place a storage setting (`./annrec-data`, `file:///...`,
`s3://bucket/prefix`) becomes one or the other; both answer the same questions (which versions,
which one LATEST names) and both hand a reader a local directory holding a complete version.
A reader only ever maps files that are complete and never rewritten: a downloaded version is
written into a staging directory, verified against its manifest's sha256s, and renamed into the
cache. The builder adds the writes (LATEST, gc, upload) on top (index_builder/targets.py).

Each model (schemas/layout.py) is such a storage of its own, rooted at its model root: the
model `default` at the setting's root, another one at <root>/models/<name>/. `ModelCatalog`
finds the models a setting holds and opens each.
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
from schemas.experiments import Experiment, Pins
from schemas.layout import (
    DEFAULT_MODEL,
    EXPERIMENT,
    MODELS,
    PINNED,
    list_models,
    list_versions,
    model_path,
    model_root,
    parse_experiment,
    parse_pins,
    read_experiment,
    read_latest,
    read_pins,
    version_dir,
)
from schemas.manifest import MANIFEST_NAME, Manifest, is_model_name


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

    def experiment(self) -> Experiment | None:
        """The model's running experiment; None when none runs."""
        ...

    def pins(self) -> Pins:
        """The versions registered as pinned."""
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

    def experiment(self) -> Experiment | None:
        return read_experiment(self.root)

    def pins(self) -> Pins:
        return read_pins(self.root)


class ObjectStorage:
    def __init__(self, store: ObjectStore, cache_dir: Path | None = None) -> None:
        self.store = store
        self.url = store.url
        self.cache_dir = cache_dir

    def latest(self) -> str | None:
        return self.store.read_latest()

    def versions(self) -> list[str]:
        return self.store.list_versions()

    def experiment(self) -> Experiment | None:
        raw = self.store.read_state(EXPERIMENT)
        return None if raw is None else parse_experiment(raw, f"{self.url}/{EXPERIMENT}")

    def pins(self) -> Pins:
        raw = self.store.read_state(PINNED)
        return Pins() if raw is None else parse_pins(raw, f"{self.url}/{PINNED}")

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
    storage: str,
    options: dict[str, Any],
    cache_dir: Path | None = None,
    model: str = DEFAULT_MODEL,
) -> DirectoryStorage | ObjectStorage:
    """A model's storage under the setting (the model `default`: the setting's root itself);
    `cache_dir`: where object-storage versions are downloaded."""
    if is_remote(storage):
        path = model_path(model)
        url = f"{storage.rstrip('/')}/{path}" if path else storage
        cache = None if cache_dir is None else model_root(cache_dir, model)
        return ObjectStorage(ObjectStore(url, options), cache)
    return DirectoryStorage(model_root(local_root(storage), model))


class ModelCatalog:
    """Every model one storage setting holds, each opened once."""

    def __init__(
        self, storage: str, options: dict[str, Any], cache_dir: Path | None = None
    ) -> None:
        self.url = storage
        self._options = options
        self._cache_dir = cache_dir
        self._opened: dict[str, DirectoryStorage | ObjectStorage] = {}

    def models(self) -> list[str]:
        """Models with a version or a LATEST, `default` first."""
        if not is_remote(self.url):
            return list_models(local_root(self.url))
        root = self.model(DEFAULT_MODEL)
        assert isinstance(root, ObjectStorage)
        found = [DEFAULT_MODEL] if root.latest() or root.versions() else []
        return found + [m for m in root.store.list_children(MODELS) if is_model_name(m)]

    def model(self, name: str) -> DirectoryStorage | ObjectStorage:
        if name not in self._opened:
            self._opened[name] = open_storage(self.url, self._options, self._cache_dir, name)
        return self._opened[name]


def local_root(storage: str) -> Path:
    """A directory storage setting as a path (`file://` accepted)."""
    return Path(storage.removeprefix("file://"))
