"""The storage layout both sides agree on (the builder writes it, workers read it).

<storage>/versions/<version>/   one complete, immutable version (manifest.json + files)
<storage>/tmp/<version>/        a version being written; never read by workers
<storage>/LATEST                the name of the version workers should serve
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import AnnrecError
from schemas.manifest import is_version_name

VERSIONS = "versions"
STAGING = "tmp"
LATEST = "LATEST"


def version_dir(storage: Path, version: str) -> Path:
    """The directory of a version; the name is checked so it cannot escape the storage root."""
    if not is_version_name(version):
        raise AnnrecError(f"{version!r} is not a version name")
    return storage / VERSIONS / version


def read_latest(storage: Path) -> str | None:
    """The version LATEST names, or None when nothing was published yet."""
    try:
        name = (storage / LATEST).read_text().strip()
    except FileNotFoundError:
        return None
    if not is_version_name(name):
        raise AnnrecError(f"{storage / LATEST} holds {name!r}, which is not a version name")
    return name


def list_versions(storage: Path) -> list[str]:
    root = storage / VERSIONS
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_version_name(p.name))
