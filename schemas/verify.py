"""Checks that a version on disk is what its manifest says; the builder runs them before it
publishes, the worker before it serves. A failure raises IndexRejected naming the problem."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from schemas.errors import IndexRejected
from schemas.manifest import AnnoySpec, FileEntry, Manifest
from schemas.vectors import augment_with

SAMPLED_ROWS = 16


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


def load_annoy(directory: Path, spec: AnnoySpec, *, prefault: bool = False) -> AnnoyIndex:
    index = AnnoyIndex(spec.dim, spec.metric)
    try:
        index.load(str(directory / spec.file), prefault=prefault)
    except OSError as exc:
        raise IndexRejected(f"{spec.file}: annoy cannot load it ({exc})") from exc
    return index


def check_indexes(
    manifest: Manifest,
    angular: AnnoyIndex,
    mips: AnnoyIndex,
    item_factors: npt.NDArray[np.float32],
) -> None:
    """Item counts, and sampled stored vectors equal to the factors (augmented for MIPS).

    Annoy files record neither metric nor dimension (annoy #368): a file of the wrong dimension
    loads, and only its vectors give it away.
    """
    rows = np.unique(np.linspace(0, manifest.n_items - 1, SAMPLED_ROWS).astype(np.int64))
    expected = np.asarray(item_factors[rows])
    for spec, index, want in (
        (manifest.angular_index, angular, expected),
        (manifest.mips_index, mips, augment_with(expected, manifest.mips_max_norm)),
    ):
        if index.get_n_items() != manifest.n_items:
            raise IndexRejected(
                f"{spec.file}: {index.get_n_items()} items, manifest says {manifest.n_items}"
            )
        got = np.array([index.get_item_vector(int(r)) for r in rows], dtype=np.float32)
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise IndexRejected(
                f"{spec.file}: stored vectors differ from the item factors "
                f"(wrong dimension, metric or file)"
            )
