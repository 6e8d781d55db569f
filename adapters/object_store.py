"""The storage layout (schemas/layout.py) on S3-compatible object storage, through fsspec.

Objects cannot be renamed atomically, so completeness is signalled by order instead: a version's
files are uploaded first and its manifest.json last, and LATEST (one small object, replaced
atomically by a PUT) is written only after that. A reader that finds a manifest finds every file
it names; the sha256s in it are checked after download anyway. Needs `annrec[s3]` (s3fs).
"""

from __future__ import annotations

from typing import Any

from schemas.errors import AnnrecError
from schemas.layout import LATEST, VERSIONS
from schemas.manifest import MANIFEST_NAME, is_version_name


def is_remote(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


class ObjectStore:
    """A storage root such as s3://bucket/prefix; options go to the fsspec filesystem
    (e.g. {"endpoint_url": "http://127.0.0.1:9000", "key": ..., "secret": ...})."""

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        try:
            from fsspec.core import url_to_fs
        except ImportError as exc:  # pragma: no cover - the extra is part of dev installs
            raise AnnrecError("object storage needs: pip install 'annrec[s3]'") from exc
        opts = dict(options or {})
        if url.startswith("s3://") and "endpoint_url" in opts:
            opts.setdefault("client_kwargs", {})["endpoint_url"] = opts.pop("endpoint_url")
        try:
            self.fs, root = url_to_fs(url, **opts)
        except (ImportError, ValueError) as exc:
            raise AnnrecError(f"cannot open storage {url}: {exc}") from exc
        self.url = url
        self.root = root.rstrip("/")

    def key(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def version_key(self, version: str, name: str = "") -> str:
        if not is_version_name(version):
            raise AnnrecError(f"{version!r} is not a version name")
        if "/" in name or name in (".", ".."):
            raise AnnrecError(f"{name!r} is not a plain file name")
        return self.key(VERSIONS, version, name) if name else self.key(VERSIONS, version)

    def read_latest(self) -> str | None:
        try:
            name: str = self.fs.cat_file(self.key(LATEST)).decode().strip()
        except FileNotFoundError:
            return None
        if not is_version_name(name):
            raise AnnrecError(f"{self.url}/{LATEST} holds {name!r}, which is not a version name")
        return name

    def read_state(self, name: str) -> bytes | None:
        """A small state object at the root (EXPERIMENT, PINNED); None when absent."""
        try:
            raw: bytes = self.fs.cat_file(self.key(name))
        except FileNotFoundError:
            return None
        return raw

    def list_children(self, folder: str) -> list[str]:
        """Names directly under a folder of the root (the models under models/)."""
        try:
            entries = self.fs.ls(self.key(folder), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def list_versions(self) -> list[str]:
        """Complete versions only: those whose manifest was uploaded."""
        try:
            entries = self.fs.ls(self.key(VERSIONS), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        names = [e.rstrip("/").rsplit("/", 1)[-1] for e in entries]
        return sorted(
            n
            for n in names
            if is_version_name(n) and self.fs.exists(self.version_key(n, MANIFEST_NAME))
        )
