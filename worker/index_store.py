"""Load and verify index versions off the request path; swap them in between batches.

A watcher thread follows every model's LATEST (and its experiment and pins). A new version is
loaded and verified completely (manifest, file sizes, sha256, Annoy dims and counts) before it is
offered; the serving loop picks the new snapshot up with `current()` between two batches, so no
batch mixes snapshots and no request waits for a load (a request pinning a version nothing holds
is the exception: `pinned()`). A version that fails verification is refused, logged once, and the
previous one keeps serving.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

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
from schemas.experiments import Arm, Experiment
from schemas.layout import DEFAULT_MODEL, version_dir
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
    if item_ids.dtype.kind != "U" or user_ids.dtype.kind != "U":  # replies hand them on as str
        raise IndexRejected(f"{version}: id arrays are not strings (the builder writes unicode)")
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
    # A plain ndarray view of the map (as the neighbour table's, adapters/index_files.py):
    # indexing a np.memmap pays its subclass hooks, ~5 us a lookup, three a similar-items
    # answer (its query row, the candidates' rows); a view of the same pages does not.
    return np.asarray(arr)


Wakeup = Callable[[float], bool]  # blocks up to the timeout; True when a version was announced


class NotServed(AnnrecError):
    """A request names a model or version this worker does not serve (unknown, refused, or
    beyond its memory budget); the reason goes into the error reply and the dead letter."""


def mapped_bytes(manifest: mf.Manifest) -> int:
    """What a version maps: the sum of its files (factors, indexes, table, attributes)."""
    return sum(f.size for f in manifest.files.values())


@dataclass(frozen=True)
class ModelServing:
    """One model as a worker serves it for a batch: its LATEST, the experiment that splits its
    traffic (only once every arm's version is held, so an arm is never served by another
    version), and every version held (LATEST, candidates, registered pins) by name."""

    model: str
    latest: LoadedVersion
    held: Mapping[str, LoadedVersion]
    experiment: Experiment | None = None

    def arm_version(self, arm: Arm) -> LoadedVersion:
        return self.latest if arm.version is None else self.held[arm.version]


@dataclass(frozen=True)
class Serving:
    """Everything a batch is answered with; swapped whole between batches."""

    models: Mapping[str, ModelServing]
    # model -> why it is not served (its LATEST refused, or beyond the memory budget)
    unavailable: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def single(version: LoadedVersion) -> Serving:
        """One version as the model `default` (tests, benchmarks, the sampler)."""
        return Serving(
            {DEFAULT_MODEL: ModelServing(DEFAULT_MODEL, version, {version.version: version})}
        )

    @property
    def primary(self) -> LoadedVersion | None:
        """The version the item-updates and item-vectors topics apply to: the model `default`'s
        LATEST (docs/operations.md#several-models); the first model's without a default."""
        if DEFAULT_MODEL in self.models:
            return self.models[DEFAULT_MODEL].latest
        return next((m.latest for m in self.models.values()), None)

    def versions(self) -> list[LoadedVersion]:
        """Every version held, once each."""
        seen: dict[int, LoadedVersion] = {}
        for m in self.models.values():
            for v in (m.latest, *m.held.values()):
                seen.setdefault(id(v), v)
        return list(seen.values())

    def mapped_bytes(self) -> int:
        return sum(mapped_bytes(v.manifest) for v in self.versions())

    def state(self) -> tuple[object, ...]:
        """What distinguishes two snapshots (a new one is offered only when this changed)."""
        models = [
            (name, m.latest.version, tuple(sorted(m.held)), m.experiment)
            for name, m in sorted(self.models.items())
        ]
        return (*models, tuple(sorted(self.unavailable.items())))


class _SingleModel:
    """One VersionStorage as a catalogue of the model `default` alone."""

    def __init__(self, source: VersionStorage) -> None:
        self._source = source
        self.url = source.url

    def models(self) -> list[str]:
        return [DEFAULT_MODEL]

    def model(self, name: str) -> VersionStorage:
        return self._source


@runtime_checkable
class Catalogue(Protocol):
    url: str

    def models(self) -> list[str]: ...
    def model(self, name: str) -> VersionStorage: ...


@dataclass(frozen=True)
class _Want:
    model: str
    version: str
    role: str  # latest | candidate | pinned


class IndexStore:
    """Holds what a worker serves: for every model of the storage, its LATEST, its experiment's
    candidates and its registered pins; a background thread prepares the next snapshot.

    LATEST (and EXPERIMENT, PINNED beside it) are the single source of truth. Announcements on
    Kafka only wake the watcher up early (`wakeup`), so a rollback (LATEST moved back) and a
    missed announcement are both handled by the same read of the storage, at the latest one poll
    interval later. `memory_budget_bytes` (0: none) bounds what the snapshot maps: LATESTs come
    first (`default` first), then candidates, then pins; what does not fit is not loaded and
    requests for it get an error reply saying so (`over_budget`).
    """

    def __init__(
        self,
        source: VersionStorage | Catalogue,
        *,
        poll_interval_s: float = 2.0,
        checksums: bool = True,
        wakeup: Wakeup | None = None,
        on_refused: Callable[[str, str], None] | None = None,
        memory_budget_bytes: int = 0,
        models: Sequence[str] = (),
        max_adhoc_pins: int = 4,
    ) -> None:
        self._catalogue = source if isinstance(source, Catalogue) else _SingleModel(source)
        self._only = tuple(models)
        self._poll_interval_s = poll_interval_s
        self._checksums = checksums
        self._wakeup = wakeup
        self._on_refused = on_refused
        self.memory_budget_bytes = memory_budget_bytes
        self._max_adhoc = max_adhoc_pins
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._active: Serving | None = None
        self._pending: Serving | None = None
        # Versions loaded for a request's pin (not in the snapshot), most recently used last;
        # only the serving thread touches them.
        self._adhoc: OrderedDict[tuple[str, str], LoadedVersion] = OrderedDict()
        self.refused: dict[str, str] = {}  # version -> reason; never retried
        self.over_budget: dict[str, str] = {}  # "model/version" -> reason (retried each poll)
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
            held = [s.versions() for s in (self._active, self._pending) if s is not None]
            self._active = self._pending = None
        for v in {id(v): v for vs in held for v in vs}.values():
            v.close()
        for v in self._adhoc.values():
            v.close()
        self._adhoc.clear()

    def current(self) -> LoadedVersion | None:
        """The primary version (Serving.primary) of the snapshot to serve the next batch with;
        call between batches only (it may swap). `serving()` then has every model."""
        with self._lock:
            if self._pending is None:
                return self._active.primary if self._active else None
            old, self._active, self._pending = self._active, self._pending, None
            new = self._active
        _log_swap(old, new)
        if old is not None:  # only the serving thread queries versions, and it is here
            keep = {id(v) for v in new.versions()}
            for v in old.versions():
                if id(v) not in keep:
                    v.close()
        return new.primary

    def serving(self) -> Serving:
        """The snapshot `current()` last returned the primary version of."""
        assert self._active is not None, "current() before serving()"
        return self._active

    def pinned(self, model: str, version: str) -> LoadedVersion:
        """A version a request pinned that the snapshot does not hold: loaded now (on the
        serving thread: the batch waits for it, once), kept among the last few pinned; NotServed
        with the reason when it cannot be."""
        key = (model, version)
        if key in self._adhoc:
            self._adhoc.move_to_end(key)
            return self._adhoc[key]
        if version in self.refused:
            raise NotServed(
                f"version {version} of model {model} was refused: {self.refused[version]}"
            )
        active = self._active
        if active is None or model not in active.models:
            raise NotServed(unknown_model(model, active))
        source = self._catalogue.model(model)
        try:
            if version not in source.versions():
                raise NotServed(f"model {model} has no version {version} in {source.url}")
            root = source.materialize(version)
            cost = mapped_bytes(read_manifest(version_dir(root, version), version))
            used = active.mapped_bytes() + sum(
                mapped_bytes(v.manifest) for v in self._adhoc.values()
            )
            self._check_budget(model, version, cost, used)
            loaded = load_version(root, version, checksums=self._checksums, warm=True)
        except (AnnrecError, OSError, ValueError) as exc:
            if isinstance(exc, NotServed):
                raise
            if not isinstance(exc, VersionMissing):
                self.refused[version] = str(exc)
            raise NotServed(f"version {version} of model {model} cannot be loaded: {exc}") from exc
        log.info("pinned_version_loaded", model=model, version=version, size=_mib(cost))
        self._adhoc[key] = loaded
        while len(self._adhoc) > self._max_adhoc:
            _, evicted = self._adhoc.popitem(last=False)
            evicted.close()
        return loaded

    def _check_budget(self, model: str, version: str, cost: int, used: int) -> None:
        budget = self.memory_budget_bytes
        if budget and used + cost > budget:
            raise NotServed(
                f"version {version} of model {model} maps {_mib(cost)}; this worker holds "
                f"{_mib(used)} of its memory budget of {_mib(budget)} (ANNREC_MEMORY_BUDGET_MB)"
            )

    def check_latest(self) -> None:
        """Read every model's LATEST, experiment and pins; load what is new (refusing, once,
        what is bad) and offer the snapshot when it changed."""
        with self._load_lock:
            with self._lock:
                base = self._pending or self._active
            held = {
                (m, v.version): v
                for m, ms in (base.models if base else {}).items()
                for v in (ms.latest, *ms.held.values())
            }
            wants, experiments = self._wanted()
            loaded: dict[tuple[str, str], LoadedVersion] = {}
            over: dict[str, str] = {}
            used = 0
            for want in wants:
                key = (want.model, want.version)
                version = held.get(key)
                try:
                    cost = mapped_bytes(version.manifest) if version else self._cost(want)
                    self._check_budget(want.model, want.version, cost, used)
                except NotServed as exc:
                    over[f"{want.model}/{want.version}"] = str(exc)
                    continue
                except (AnnrecError, OSError):
                    pass  # not visible yet, or bad: _load says which (and refuses it once)
                version = version or self._load(want)
                if version is None:
                    continue
                used += mapped_bytes(version.manifest)
                loaded[key] = version
            new = self._snapshot(wants, loaded, experiments, base, over)
            if self.over_budget != over:
                for what, reason in over.items():
                    log.error("index_over_budget", version=what, reason=reason)
            self.over_budget = over
            if base is not None and new.state() == base.state():
                return
            with self._lock:
                stale, self._pending = self._pending, new
                active = self._active
            if stale is not None:
                keep = {id(v) for s in (new, active) if s is not None for v in s.versions()}
                for v in stale.versions():
                    if id(v) not in keep:
                        v.close()

    def _wanted(self) -> tuple[list[_Want], dict[str, Experiment]]:
        """What the storage asks workers to hold, in the order the budget admits it."""
        latest: list[_Want] = []
        later: list[_Want] = []
        experiments: dict[str, Experiment] = {}
        try:
            models = self._catalogue.models()
        except (AnnrecError, OSError) as exc:
            log.warning("models_unreadable", reason=str(exc))
            return [], {}
        for model in models:
            if self._only and model not in self._only:
                continue
            source = self._catalogue.model(model)
            try:
                name = source.latest()
                experiment = source.experiment()
                pins = source.pins()
            except (AnnrecError, OSError) as exc:
                log.warning("latest_unreadable", model=model, reason=str(exc))
                continue
            if name is None:
                continue
            latest.append(_Want(model, name, "latest"))
            if experiment is not None:
                experiments[model] = experiment
                later += [_Want(model, v, "candidate") for v in experiment.candidates if v != name]
            later += [_Want(model, v, "pinned") for v in pins.versions if v != name]
        return latest + later, experiments

    def _cost(self, want: _Want) -> int:
        """What a version would map, from its manifest (before anything is loaded)."""
        root = self._catalogue.model(want.model).materialize(want.version)
        return mapped_bytes(read_manifest(version_dir(root, want.version), want.version))

    def _load(self, want: _Want) -> LoadedVersion | None:
        if want.version in self.refused:
            return None
        source = self._catalogue.model(want.model)
        try:
            root = source.materialize(want.version)
            loaded = load_version(root, want.version, checksums=self._checksums, warm=True)
        except VersionMissing as exc:
            log.info(
                "index_not_visible_yet", model=want.model, version=want.version, reason=str(exc)
            )
            return None
        except (AnnrecError, OSError, ValueError) as exc:
            self.refused[want.version] = str(exc)
            log.error("index_refused", model=want.model, version=want.version, reason=str(exc))
            if self._on_refused is not None:
                self._on_refused(want.version, str(exc))
            return None
        log.info(
            "index_loaded",
            model=want.model,
            version=want.version,
            role=want.role,
            n_items=loaded.manifest.n_items,
            mips_bands=len(loaded.manifest.mips_index.bands),
            **loaded.log_fields(),
        )
        return loaded

    def _snapshot(
        self,
        wants: list[_Want],
        loaded: dict[tuple[str, str], LoadedVersion],
        experiments: dict[str, Experiment],
        base: Serving | None,
        over: dict[str, str],
    ) -> Serving:
        models: dict[str, ModelServing] = {}
        unavailable: dict[str, str] = {}
        for want in wants:
            if want.role != "latest":
                continue
            latest = loaded.get((want.model, want.version))
            if latest is None and base is not None and want.model in base.models:
                # LATEST refused, not visible yet or over budget: the previous one keeps serving
                latest = base.models[want.model].latest
                loaded[(want.model, latest.version)] = latest
            if latest is None:
                unavailable[want.model] = over.get(
                    f"{want.model}/{want.version}",
                    self.refused.get(
                        want.version, f"model {want.model}: {want.version} not loaded yet"
                    ),
                )
                continue
            held = {v: lv for (m, v), lv in loaded.items() if m == want.model}
            experiment = experiments.get(want.model)
            if experiment is not None and any(
                v not in held and v != latest.version for v in experiment.candidates
            ):
                log.warning(
                    "experiment_not_applied",
                    model=want.model,
                    experiment=experiment.name,
                    reason="a candidate version is not held (refused, not visible yet, or "
                    "over the memory budget)",
                )
                experiment = None
            models[want.model] = ModelServing(want.model, latest, held, experiment)
        return Serving(models, unavailable)

    def _watch(self) -> None:
        lower_loader_priority()
        while not self._stop.is_set():
            if self._wakeup is not None:
                self._wakeup(self._poll_interval_s)
            elif self._stop.wait(self._poll_interval_s):
                return
            if not self._stop.is_set():
                self.check_latest()


def _mib(size: int) -> str:
    return f"{size / 2**20:.{0 if size >= 10 * 2**20 else 2}f} MiB"


def unknown_model(model: str, serving: Serving | None) -> str:
    if serving is not None and model in serving.unavailable:
        return f"model {model} is not served by this worker: {serving.unavailable[model]}"
    served = ", ".join(sorted(serving.models)) if serving else ""
    return f"unknown model {model!r} (this worker serves: {served or 'nothing yet'})"


def _log_swap(old: Serving | None, new: Serving) -> None:
    before = {m: s.latest.version for m, s in (old.models if old else {}).items()}
    for model, s in new.models.items():
        if before.get(model) != s.latest.version:
            log.info(
                "index_swapped", model=model, version=s.latest.version, previous=before.get(model)
            )
        was = old.models[model].experiment if old and model in old.models else None
        if was != s.experiment:
            changed = s.experiment or was
            log.info(
                "experiment_applied" if s.experiment else "experiment_ended",
                model=model,
                experiment=changed.name if changed else None,
            )


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
