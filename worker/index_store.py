"""Load and verify index versions off the request path; swap them in between batches.

A watcher thread follows `<storage>/LATEST`. A new version is loaded and verified completely
(manifest, file sizes, sha256, Annoy dims and counts) before it is offered; the serving loop picks
it up with `current()` between two batches, so no batch mixes versions and no request waits for a
load. A version that fails verification is refused, logged once, and the previous one keeps serving.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog

from adapters.index_files import (
    check_files,
    check_indexes,
    load_annoy,
    load_attributes,
    load_bands,
    load_fold_in_weights,
    load_neighbour_table,
    read_manifest,
)
from adapters.version_storage import VersionStorage
from query_engine.attributes import ItemAttributes
from query_engine.confidence import FoldInWeights
from query_engine.plan import ServingPlan, VersionSearch
from query_engine.segment import Segment
from query_engine.vectors import item_gramian
from schemas import manifest as mf
from schemas.errors import AnnrecError, IndexRejected, VersionMissing
from schemas.layout import version_dir
from worker.id_rows import DuplicateIds, IdRows

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class LoadedVersion:
    """Everything one version needs to answer requests; read-only once built."""

    manifest: mf.Manifest
    search: VersionSearch  # the indexes and the serving plan, read once from the manifest
    user_factors: npt.NDArray[np.float32]  # mmapped
    item_ids: npt.NDArray[np.str_]
    item_rows: IdRows
    user_rows: IdRows
    popularity: npt.NDArray[np.int32]  # item rows, most popular first
    gramian: npt.NDArray[np.float64]  # Y^T Y, for folding users in from their items
    # How recent items are weighted for the fold-in (the version's training weighting).
    fold_in: FoldInWeights
    attributes: ItemAttributes | None = None  # None: published without attributes
    # Items upserted or removed since the build (the item-vectors topic, worker/fresh.py):
    # filled by the serving thread between batches; the version's files stay immutable.
    fresh: Segment = field(default_factory=lambda: Segment(0))

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def item_factors(self) -> npt.NDArray[np.float32]:
        return self.search.item_factors

    def log_fields(self) -> dict[str, object]:
        """How each kind is answered, for the log line of a load."""
        return {
            **self.search.plan.log_fields(),
            "attributes": ",".join(self.attributes.names()) if self.attributes else "",
        }

    def close(self) -> None:
        self.search.angular.unload()
        self.search.mips.unload()


def load_version(
    storage: Path, version: str, *, checksums: bool = True, warm: bool = False
) -> LoadedVersion:
    """Load a version and check it against its manifest; IndexRejected says what is wrong.
    `warm`: fault every page in first (a cold mmap costs seconds on the first queries, annoy
    #376, which must not land on requests)."""
    directory = version_dir(storage, version)
    manifest = read_manifest(directory, version)
    check_files(directory, manifest, checksums=checksums)
    item_factors = _load_matrix(directory / mf.ITEM_FACTORS_FILE, manifest.n_items, manifest.dim)
    user_factors = _load_matrix(directory / mf.USER_FACTORS_FILE, manifest.n_users, manifest.dim)
    item_ids = np.load(directory / mf.ITEM_IDS_FILE, allow_pickle=False)
    user_ids = np.load(directory / mf.USER_IDS_FILE, allow_pickle=False)
    popularity = np.load(directory / mf.POPULARITY_FILE, allow_pickle=False)
    if popularity.shape != (manifest.n_items,) or popularity.dtype != np.int32:
        raise IndexRejected(f"{version}: {mf.POPULARITY_FILE} is not one int32 row per item")
    if item_ids.shape != (manifest.n_items,) or user_ids.shape != (manifest.n_users,):
        raise IndexRejected(f"{version}: id arrays do not match the manifest's counts")
    try:
        item_rows, user_rows = IdRows(item_ids), IdRows(user_ids)
    except DuplicateIds as exc:
        raise IndexRejected(f"{version}: {exc}") from exc
    attributes = (
        load_attributes(directory, manifest.attributes, manifest.n_items)
        if manifest.attributes
        else None
    )
    fold_in = load_fold_in_weights(directory, manifest)
    if warm:
        for arr in (item_factors, user_factors):
            _touch_pages(arr)
    return LoadedVersion(
        manifest=manifest,
        search=_load_search(directory, manifest, item_factors, warm),
        user_factors=user_factors,
        popularity=popularity,
        gramian=item_gramian(item_factors),
        item_ids=item_ids,
        item_rows=item_rows,
        user_rows=user_rows,
        attributes=attributes,
        fold_in=fold_in,
        fresh=Segment(manifest.dim, manifest.attributes),
    )


def _load_search(
    directory: Path, manifest: mf.Manifest, item_factors: npt.NDArray[np.float32], warm: bool
) -> VersionSearch:
    """The version's Annoy indexes, checked, with the plan its quality report chose."""
    angular = load_annoy(directory, manifest.angular_index, prefault=warm)
    try:
        check_indexes(manifest, angular, item_factors)
        mips = load_bands(directory, manifest.mips_index, item_factors, prefault=warm)
    except IndexRejected:
        angular.unload()
        raise
    try:
        neighbours = load_neighbour_table(directory, manifest, item_factors)
    except IndexRejected:
        angular.unload()
        mips.unload()
        raise
    if warm and neighbours is not None:
        for arr in (neighbours.rows, neighbours.scores):
            _touch_pages(arr)
    search = VersionSearch(
        angular=angular,
        mips=mips,
        item_factors=item_factors,
        item_norms=np.linalg.norm(item_factors, axis=1).astype(np.float32),
        plan=ServingPlan.from_quality(manifest.quality),
        neighbours=neighbours,
    )
    if warm:
        search.warm()
    return search


def _touch_pages(arr: npt.NDArray[np.generic]) -> None:
    flat = arr.reshape(-1)
    if flat.size:
        flat[:: 4096 // flat.itemsize].sum()  # one read per page


def _load_matrix(path: Path, rows: int, dim: int) -> npt.NDArray[np.float32]:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    if arr.dtype != np.float32 or arr.shape != (rows, dim):
        raise IndexRejected(
            f"{path.name}: {arr.dtype} {arr.shape}, expected float32 ({rows}, {dim})"
        )
    return arr


Wakeup = Callable[[float], bool]  # blocks up to the timeout; True when a version was announced


class IndexStore:
    """Holds the serving version; a background thread prepares the next one.

    LATEST is the single source of truth. Announcements on Kafka only wake the watcher up early
    (`wakeup`), so a rollback (LATEST moved back) and a missed announcement are both handled by
    the same read of LATEST, at the latest one poll interval later.
    """

    def __init__(
        self,
        source: VersionStorage,
        *,
        poll_interval_s: float = 2.0,
        checksums: bool = True,
        wakeup: Wakeup | None = None,
        on_refused: Callable[[str, str], None] | None = None,
    ) -> None:
        self._source = source
        self._poll_interval_s = poll_interval_s
        self._checksums = checksums
        self._wakeup = wakeup
        self._on_refused = on_refused
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._active: LoadedVersion | None = None
        self._pending: LoadedVersion | None = None
        self.refused: dict[str, str] = {}  # version -> reason; never retried
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="index-watcher", daemon=True)

    def start(self) -> None:
        self.check_latest()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        with self._lock:
            for v in (self._active, self._pending):
                if v is not None:
                    v.close()
            self._active = self._pending = None

    def current(self) -> LoadedVersion | None:
        """The version to serve the next batch with; call between batches only (it may swap)."""
        with self._lock:
            if self._pending is None:
                return self._active
            old, self._active, self._pending = self._active, self._pending, None
        log.info(
            "index_swapped", version=self._active.version, previous=old.version if old else None
        )
        if old is not None:
            old.close()  # only the serving thread queries versions, and it is here, not querying
        return self._active

    def check_latest(self) -> None:
        """Load the version LATEST names if it is new; refuse it (once) if it is bad."""
        with self._load_lock:
            try:
                latest = self._source.latest()
            except (AnnrecError, OSError) as exc:
                log.warning("latest_unreadable", reason=str(exc))
                return
            with self._lock:
                known = {v.version for v in (self._active, self._pending) if v is not None}
            if latest is None or latest in known or latest in self.refused:
                return
            try:
                root = self._source.materialize(latest)
                loaded = load_version(root, latest, checksums=self._checksums, warm=True)
            except VersionMissing as exc:
                log.info("index_not_visible_yet", version=latest, reason=str(exc))
                return
            except (AnnrecError, OSError, ValueError) as exc:
                self.refused[latest] = str(exc)
                log.error("index_refused", version=latest, reason=str(exc))
                if self._on_refused is not None:
                    self._on_refused(latest, str(exc))
                return
            log.info(
                "index_loaded",
                version=latest,
                n_items=loaded.manifest.n_items,
                mips_bands=len(loaded.manifest.mips_index.bands),
                **loaded.log_fields(),
            )
            with self._lock:
                stale, self._pending = self._pending, loaded
            if stale is not None:
                stale.close()

    def _watch(self) -> None:
        lower_loader_priority()
        while not self._stop.is_set():
            if self._wakeup is not None:
                self._wakeup(self._poll_interval_s)
            elif self._stop.wait(self._poll_interval_s):
                return
            if not self._stop.is_set():
                self.check_latest()


# Loading a new version (sha256 of every file, mmap + prefault, verification) runs beside serving
# on the same cores. Its work stays in C (hashlib, numpy, Annoy): Python work in the loader holds
# the GIL and makes every hand-off of the serving thread wait (a dict of a million ids, 0.6 s,
# is enough to be seen in `annrec bench load`). The lower priority yields the cores to serving
# and to other processes on the machine.
LOADER_NICE = 10


def lower_loader_priority() -> None:
    """Raise this thread's nice value (Linux: per thread); never fatal."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICE)
    except (OSError, AttributeError) as exc:  # not Linux, or not permitted
        log.info("loader_priority_unchanged", reason=str(exc))
