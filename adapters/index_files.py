"""A version's files on disk: loading the Annoy indexes and arrays, and checking them against the
manifest (the builder before it publishes, the worker before it serves). A failure raises
IndexRejected naming the problem."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex
from pydantic import ValidationError

from query_engine.attributes import ItemAttributes
from query_engine.banded import Band, NormBands
from query_engine.confidence import FoldInWeights
from query_engine.neighbours import NeighbourTable
from query_engine.vectors import augment_with, cosine_scores
from schemas.errors import IndexRejected, VersionMissing, describe
from schemas.manifest import MANIFEST_NAME, AnnoySpec, AttributeSpec, FileEntry, Manifest, MipsSpec

SAMPLED_ROWS = 16


def file_entry(path: Path) -> FileEntry:
    """Size and sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return FileEntry(size=path.stat().st_size, sha256=h.hexdigest())


def read_manifest(directory: Path, version: str) -> Manifest:
    """The manifest of the version in `directory`; VersionMissing when there is none (yet),
    IndexRejected when it is invalid or names another version."""
    try:
        manifest = Manifest.model_validate_json((directory / MANIFEST_NAME).read_bytes())
    except FileNotFoundError as exc:
        raise VersionMissing(f"{version}: no {MANIFEST_NAME} in {directory.parent}") from exc
    except ValidationError as exc:
        raise IndexRejected(
            f"{version}: invalid manifest ({exc.error_count()} errors; {describe(exc)})"
        ) from exc
    if manifest.version != version:
        raise IndexRejected(f"{version}: manifest names version {manifest.version}")
    return manifest


def verify_version(directory: Path, version: str) -> Manifest:
    """Its manifest and every file's size and sha256: what a worker checks before anything else
    (`annrec versions rollback` refuses a version failing it)."""
    manifest = read_manifest(directory, version)
    check_files(directory, manifest)
    return manifest


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
    return _load(directory / spec.file, spec.dim, spec.metric, prefault)


def _load(path: Path, dim: int, metric: str, prefault: bool) -> AnnoyIndex:
    index = AnnoyIndex(dim, metric)  # type: ignore[arg-type]
    try:
        index.load(str(path), prefault=prefault)
    except OSError as exc:
        raise IndexRejected(f"{path.name}: annoy cannot load it ({exc})") from exc
    return index


def load_bands(
    directory: Path,
    spec: MipsSpec,
    item_factors: npt.NDArray[np.float32],
    *,
    prefault: bool = False,
) -> NormBands:
    """Load the norm order and every band's index, checking each band against the factors."""
    n_items = len(item_factors)
    order = np.load(directory / spec.order_file, allow_pickle=False)
    if order.shape != (n_items,) or order.dtype != np.int32:
        raise IndexRejected(f"{spec.order_file}: not one int32 row per item")
    if not np.array_equal(np.bincount(order, minlength=n_items), np.ones(n_items, np.int64)):
        raise IndexRejected(f"{spec.order_file}: not a permutation of the item rows")
    edges = [b.start for b in spec.bands] + [spec.bands[-1].stop]
    if edges[0] != 0 or edges[-1] != n_items or any(a >= b for a, b in itertools.pairwise(edges)):
        raise IndexRejected(f"mips bands do not tile the {n_items} items: edges {edges}")
    bands: list[Band] = []
    try:
        for b in spec.bands:
            index = _load(directory / b.file, spec.dim, spec.metric, prefault)
            bands.append(Band(b.start, b.stop, b.max_norm, index))
            ids = _sample_ids(b.stop - b.start)
            want = augment_with(np.asarray(item_factors[order[ids + b.start]]), b.max_norm)
            _check_vectors(b.file, index, b.stop - b.start, ids, want)
    except IndexRejected:
        for band in bands:
            band.index.unload()
        raise
    return NormBands.create(bands, order, item_factors)


def check_indexes(
    manifest: Manifest, angular: AnnoyIndex, item_factors: npt.NDArray[np.float32]
) -> None:
    """The angular index: item count, and sampled stored vectors equal to the factors (the MIPS
    bands are checked as load_bands loads them).

    Annoy files record neither metric nor dimension (annoy #368): a file of the wrong dimension
    loads, and only its vectors give it away.
    """
    ids = _sample_ids(manifest.n_items)
    want = np.asarray(item_factors[ids])
    _check_vectors(manifest.angular_index.file, angular, manifest.n_items, ids, want)


def _sample_ids(n: int) -> npt.NDArray[np.int64]:
    return np.unique(np.linspace(0, n - 1, SAMPLED_ROWS).astype(np.int64))


def _check_vectors(
    name: str,
    index: AnnoyIndex,
    n_items: int,
    ids: npt.NDArray[np.int64],
    want: npt.NDArray[np.float32],
) -> None:
    if index.get_n_items() != n_items:
        raise IndexRejected(f"{name}: {index.get_n_items()} items, manifest says {n_items}")
    got = np.array([index.get_item_vector(int(i)) for i in ids], dtype=np.float32)
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-4, atol=1e-5):
        raise IndexRejected(
            f"{name}: stored vectors differ from the item factors (wrong dimension, metric or file)"
        )


def load_attributes(
    directory: Path, specs: Sequence[AttributeSpec], n_items: int
) -> ItemAttributes:
    """A version's item attributes, read from its .npy files and checked against the specs."""
    arrays: dict[str, npt.NDArray[Any]] = {}
    for spec in specs:
        if spec.type == "bool":
            arrays[spec.rows_file] = _attribute_array(directory, spec.rows_file, np.int8)
        else:
            arrays[spec.rows_file] = _attribute_array(directory, spec.rows_file, np.int32)
            offsets = spec.offsets_file or ""
            arrays[offsets] = _attribute_array(directory, offsets, np.int64)
    return ItemAttributes.from_arrays(specs, n_items, arrays)


def _attribute_array(directory: Path, name: str, dtype: type) -> npt.NDArray[Any]:
    try:
        arr: npt.NDArray[Any] = np.load(directory / name, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexRejected(f"attribute file {name!r}: {exc}") from exc
    if arr.dtype != dtype or arr.ndim != 1:
        raise IndexRejected(f"attribute file {name}: {arr.dtype} {arr.shape}, expected 1-D {dtype}")
    return arr


def load_fold_in_weights(directory: Path, manifest: Manifest) -> FoldInWeights:
    """How the version weighs a folded-in user's items (its manifest's fold_in, and for bm25 the
    item lengths file, checked: listed in the manifest's files, one finite float32 >= 0 per
    item). A manifest without a weighting folds in raw."""
    f = manifest.fold_in
    if f.weighting == "raw":
        return FoldInWeights("raw", f.alpha)
    assert f.idf_items is not None  # the manifest's validator
    if f.idf_items != manifest.n_items:
        raise IndexRejected(
            f"{manifest.version}: fold_in.idf_items {f.idf_items} is not the {manifest.n_items} "
            "items the factors were trained on"
        )
    if f.bm25 is None:
        return FoldInWeights(f.weighting, f.alpha, idf_items=f.idf_items)
    name = f.bm25.lengths_file
    if name not in manifest.files:
        raise IndexRejected(f"{manifest.version}: fold-in file {name} is not in the manifest")
    try:
        lengths: npt.NDArray[np.float32] = np.load(directory / name, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexRejected(f"fold-in file {name!r}: {exc}") from exc
    if lengths.dtype != np.float32 or lengths.shape != (manifest.n_items,):
        raise IndexRejected(
            f"fold-in file {name}: {lengths.dtype} {lengths.shape}, expected float32 "
            f"({manifest.n_items},)"
        )
    if not np.isfinite(lengths).all() or (lengths < 0).any():
        raise IndexRejected(f"fold-in file {name}: lengths must be finite and >= 0")
    return FoldInWeights(
        "bm25",
        f.alpha,
        f.idf_items,
        f.bm25.k1,
        f.bm25.b,
        lengths,
        f.bm25.average_length,
    )


def load_neighbour_table(
    directory: Path, manifest: Manifest, item_factors: npt.NDArray[np.float32]
) -> NeighbourTable | None:
    """The version's neighbour table, mmapped and checked: both files listed in the manifest,
    int32/float32 of shape (n_items, width), every row in range and never the item itself, and
    sampled rows' scores equal to the cosines of the factors (a table of another version, or
    shifted by a row, gives itself away). None when the version has no table."""
    spec = manifest.neighbour_table
    if spec is None:
        return None
    shape = (manifest.n_items, spec.width)
    rows = _table_array(directory, manifest, spec.rows_file, np.int32, shape)
    scores = _table_array(directory, manifest, spec.scores_file, np.float32, shape)
    if spec.width and (int(rows.min()) < 0 or int(rows.max()) >= manifest.n_items):
        raise IndexRejected(f"{spec.rows_file}: neighbour rows outside 0..{manifest.n_items - 1}")
    ids = _sample_ids(manifest.n_items)
    sampled = np.asarray(rows[ids], dtype=np.int64)
    if (sampled == ids[:, None]).any():
        raise IndexRejected(f"{spec.rows_file}: an item is listed as its own neighbour")
    factors = np.asarray(item_factors, dtype=np.float32)
    for i, neighbours in zip(ids, sampled, strict=True):
        norms = np.linalg.norm(factors[neighbours], axis=1).astype(np.float32)
        want = cosine_scores(factors[neighbours], norms, factors[i])
        if not np.allclose(scores[i], want, rtol=1e-4, atol=1e-5):
            raise IndexRejected(
                f"{spec.scores_file}: scores differ from the item factors' cosines (row {i})"
            )
    # Plain ndarray views of the maps: indexing a np.memmap pays its subclass hooks on every
    # lookup (a third of a table answer's cost), a view of the same pages does not.
    return NeighbourTable(np.asarray(rows), np.asarray(scores))


def _table_array(
    directory: Path,
    manifest: Manifest,
    name: str,
    dtype: type[np.generic],
    shape: tuple[int, int],
) -> npt.NDArray[Any]:
    if name not in manifest.files:
        raise IndexRejected(f"{manifest.version}: neighbour file {name} is not in the manifest")
    try:
        array: npt.NDArray[Any] = np.load(directory / name, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexRejected(f"neighbour file {name!r}: {exc}") from exc
    if array.dtype != dtype or array.shape != shape:
        raise IndexRejected(
            f"neighbour file {name}: {array.dtype} {array.shape}, expected "
            f"{np.dtype(dtype)} {shape}"
        )
    return array
