"""The index manifest: what a published version contains and how to load it safely.

Annoy files do not record their metric or dimension, and loading with the wrong ones fails
silently (spotify/annoy #368, #394); the manifest carries both and a size + sha256 per file, and the
worker refuses a version whose files do not match.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.errors import IndexRejected

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

# Sortable (UTC time first) and unique (random suffix); a plain file-name component by
# construction, so a version name can never escape the storage root.
VERSION_PATTERN = r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{6}$"
_VERSION_RE = re.compile(VERSION_PATTERN)


def is_version_name(name: str) -> bool:
    return bool(_VERSION_RE.fullmatch(name))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileEntry(_Model):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class AnnoySpec(_Model):
    file: str
    metric: Literal["angular", "euclidean"]
    dim: int = Field(ge=1)
    n_trees: int = Field(ge=1)


class BuildParams(_Model):
    n_trees: int
    seed: int
    source: str
    source_sha256: str


class Manifest(_Model):
    format_version: int = FORMAT_VERSION
    version: str = Field(pattern=VERSION_PATTERN)
    created_at: datetime
    dim: int = Field(ge=1, description="K, the factor count")
    n_items: int = Field(ge=1)
    n_users: int = Field(ge=0)
    angular_index: AnnoySpec = Field(description="item -> items, cosine, over the raw item factors")
    mips_index: AnnoySpec = Field(description="user -> items, over Bachrach-augmented items (K+1)")
    mips_max_norm: float = Field(ge=0, description="M, the largest item norm")
    files: dict[str, FileEntry]
    build: BuildParams

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            if "/" in name or "\\" in name or name in ("", ".", ".."):
                raise ValueError(f"file name {name!r} is not a plain name")
        return files


# The files of every version, by role.
ANGULAR_FILE = "items.angular.ann"
MIPS_FILE = "items.mips.ann"
ITEM_FACTORS_FILE = "item_factors.npy"
USER_FACTORS_FILE = "user_factors.npy"
ITEM_IDS_FILE = "item_ids.npy"
USER_IDS_FILE = "user_ids.npy"


def file_entry(path: Path) -> FileEntry:
    """Size and sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return FileEntry(size=path.stat().st_size, sha256=h.hexdigest())


def check_files(directory: Path, manifest: Manifest, *, checksums: bool = True) -> None:
    """Refuse a version whose files are missing, truncated or altered (IndexRejected says which)."""
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise IndexRejected(f"{manifest.version}: file {name} is missing")
        size = path.stat().st_size
        if size != expected.size:
            raise IndexRejected(
                f"{manifest.version}: file {name} has {size} bytes, manifest says {expected.size}"
            )
        if checksums and file_entry(path).sha256 != expected.sha256:
            raise IndexRejected(f"{manifest.version}: file {name} does not match its sha256")
