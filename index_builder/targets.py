"""Where the builder publishes: a shared directory, or object storage (built and verified in a
local build area, then uploaded). Chosen once, from the storage the setting opens; the version
commands and `annrec build` use the same target."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.index_files import read_manifest, verify_version
from adapters.object_store import ObjectStore
from adapters.version_storage import DirectoryStorage, ObjectStorage, open_storage
from index_builder import remote, storage
from schemas.experiments import Experiment, Pins
from schemas.layout import DEFAULT_MODEL, EXPERIMENT, PINNED, model_root, version_dir
from schemas.manifest import Manifest


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

    def verify(self, version: str) -> Manifest:
        """Manifest, sizes and sha256s as a worker checks them; IndexRejected says what is wrong."""
        return verify_version(version_dir(self.storage.root, version), version)

    def gc(self, keep: int, grace_s: float) -> list[str]:
        return storage.gc_versions(self.storage.root, keep, grace_s)

    def write_experiment(self, experiment: Experiment | None) -> None:
        text = None if experiment is None else experiment.model_dump_json(indent=2)
        storage.write_state(self.storage.root, EXPERIMENT, text)

    def write_pins(self, pins: Pins) -> None:
        storage.write_state(self.storage.root, PINNED, pins.model_dump_json(indent=2))


@dataclass(frozen=True)
class ObjectStoreTarget:
    storage: ObjectStorage
    build_root: Path  # built and verified here, then uploaded

    @property
    def remote(self) -> ObjectStore | None:
        return self.storage.store

    def set_latest(self, version: str, *, allow_older: bool = False) -> bool:
        return remote.set_remote_latest(self.storage.store, version, allow_older=allow_older)

    def verify(self, version: str) -> Manifest:
        """Downloaded into a throwaway folder and checked as a worker's cache checks it."""
        self.build_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".verify-", dir=self.build_root) as tmp:
            root = ObjectStorage(self.storage.store, Path(tmp)).materialize(version)
            return read_manifest(version_dir(root, version), version)

    def gc(self, keep: int, grace_s: float) -> list[str]:
        return remote.gc_remote_versions(self.storage.store, keep, grace_s)

    def write_experiment(self, experiment: Experiment | None) -> None:
        text = None if experiment is None else experiment.model_dump_json(indent=2)
        remote.write_remote_state(self.storage.store, EXPERIMENT, text)

    def write_pins(self, pins: Pins) -> None:
        remote.write_remote_state(self.storage.store, PINNED, pins.model_dump_json(indent=2))


def publish_target(
    storage_url: str, options: dict[str, Any], build_dir: Path, model: str = DEFAULT_MODEL
) -> DirectoryTarget | ObjectStoreTarget:
    """Where a model's versions are published (its model root under the setting)."""
    opened = open_storage(storage_url, options, model=model)
    if isinstance(opened, ObjectStorage):
        return ObjectStoreTarget(opened, model_root(build_dir, model))
    return DirectoryTarget(opened)
