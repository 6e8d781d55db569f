"""publish_version(): factors -> both Annoy indexes -> verify + measure -> storage -> LATEST ->
announce. Nothing becomes visible to workers unless every step succeeded."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
import structlog

from adapters.index_files import (
    check_files,
    check_indexes,
    file_entry,
    load_annoy,
    load_bands,
    load_neighbour_table,
)
from adapters.item_updates import UpdatesSnapshot
from adapters.item_vectors import VectorsSnapshot
from adapters.object_store import ObjectStore
from index_builder import resume, storage
from index_builder.attributes import AttributeTable, write_attributes
from index_builder.build import build_annoy, build_mips_bands
from index_builder.fold_vectors import fold_item_vectors
from index_builder.inputs import Factors
from index_builder.neighbours import DEFAULT_WIDTH, build_neighbour_table
from index_builder.quality import measure_quality
from index_builder.remote import set_remote_latest, upload_version
from index_builder.resume import resume_key
from schemas import manifest as mf
from schemas.errors import AnnrecError

log = structlog.get_logger(__name__)

Announcer = Callable[[mf.Manifest], None]
T = TypeVar("T")
PopularitySource = Literal["interactions", "provided", "item_norm"]


class QualityTooLow(AnnrecError):
    """The built indexes miss too many true neighbours to be published."""


@dataclass(frozen=True)
class BuildOptions:
    # Trees of the angular index, and of each MIPS norm band: the whole 1M x 64 version must
    # build in about 2 minutes on 2 cores, and the measured recall/speed curves (BENCHMARKS.md)
    # show the bands need few trees.
    n_trees: int = 20
    mips_trees: int = 10
    seed: int = 42
    n_jobs: int = -1
    quality: bool = True  # measure recall vs search_k and pick search_k (the report)
    target_recall: float = 0.95
    min_recall: float = 0.3  # below this held-out recall@10 a build is refused (settings.py)
    quality_queries: int = 200
    # M of the neighbour table (0: none; item -> items then served by the angular index alone).
    neighbours: int = DEFAULT_WIDTH
    # The ALS user step for `recent_items` requests; trained versions use their own values.
    fold_in_regularization: float = 0.01
    fold_in_alpha: float = 1.0
    # Keep the staging directory of a build that stops and continue it in a later resumable
    # build of the same factors and options, skipping the long phases it finished
    # (index_builder/resume.py): for builds of hours.
    resume: bool = False

    def resume_options(self) -> dict[str, object]:
        """The options that change what the checkpointed phases write."""
        return {
            "n_trees": self.n_trees,
            "mips_trees": self.mips_trees,
            "seed": self.seed,
            "neighbours": self.neighbours,
        }


def publish_version(
    factors: Factors,
    storage_root: Path,
    options: BuildOptions | None = None,
    *,
    source: str = "memory",
    training: mf.TrainParams | None = None,
    announce: Announcer | None = None,
    remote: ObjectStore | None = None,
    attributes: AttributeTable | None = None,
    item_updates: UpdatesSnapshot | None = None,
    item_vectors: VectorsSnapshot | None = None,
) -> mf.Manifest:
    """Build, verify and publish one version; returns its manifest.

    With `remote`, storage_root is a local build area and the verified version is uploaded to
    the object store, whose LATEST then moves. `attributes` are published with the version,
    with `item_updates` ((attribute, item id) -> value, from the item-updates topic) folded in.
    `item_vectors` (items added, changed or removed since, from the item-vectors topic) are
    folded into the factors and attributes first (index_builder/fold_vectors.py).
    """
    opts = options or BuildOptions()
    vectors = item_vectors or VectorsSnapshot({}, {})
    spec = fold_in_spec(factors, training, opts) if vectors.events else None
    folded = fold_item_vectors(factors, attributes, vectors.events, spec)
    factors, attributes = folded.factors, folded.attributes
    version = storage.new_version_name()
    checkpoints = None
    if opts.resume:
        key = resume_key(factors.checksum(), opts.resume_options())
        staging, checkpoints = resume.start(storage_root, version, key)
    else:
        staging = storage.start_staging(storage_root, version)
    started = time.perf_counter()
    try:
        manifest = _build_version(
            factors,
            staging,
            version,
            opts,
            source,
            training,
            attributes,
            item_updates or UpdatesSnapshot({}, {}),
            (folded.applied, vectors.through),
            checkpoints,
        )
        storage.commit_staging(storage_root, staging, version)
    except BaseException:
        if checkpoints is None:
            storage.discard_staging(staging)
        else:
            log.warning("build_kept_for_resume", staging=str(staging))
        raise
    if checkpoints is not None:
        resume.finish(checkpoints)
    moved = storage.set_latest(storage_root, version)
    if remote is not None:
        upload_version(remote, storage_root, version)
        moved = set_remote_latest(remote, version)
    if not moved:
        # A concurrent build published a newer version first; ours stays available for rollback.
        log.warning("version_published_not_latest", version=version)
        return manifest
    log.info(
        "version_published",
        version=version,
        n_items=manifest.n_items,
        dim=manifest.dim,
        seconds=round(time.perf_counter() - started, 1),
    )
    if announce is not None:
        announce(manifest)
    return manifest


def _build_version(
    factors: Factors,
    staging: Path,
    version: str,
    opts: BuildOptions,
    source: str,
    training: mf.TrainParams | None,
    attributes: AttributeTable | None,
    item_updates: UpdatesSnapshot,
    item_vectors: tuple[int, dict[int, int]],  # (events folded in, the offsets read to)
    checkpoints: resume.Checkpoints | None = None,
) -> mf.Manifest:
    phase = _PhaseTimer(checkpoints)
    attribute_specs, updates_applied = _write_attributes(
        attributes, item_updates, factors, staging, phase
    )
    popularity_source = _write_arrays(factors, staging, training is not None, phase)
    # The indexes build beside the neighbour table: NN-descent leaves part of the machine idle
    # (its compilation, its tree init, the serial steps between its parallel ones: 1.5 of 2
    # cores over the 1M ALS table's 125 s), which the Annoy builds (41 CPU-s there) fill; the
    # long parts of both release the GIL. Their memory adds up (3.2 instead of 2.3 GB at 1M).
    # A checkpoint lists the files modified since its phase started: one that lists the other
    # phase's unfinished file is found stale on resume, and that phase runs again.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="build-indexes") as beside:
        indexes = beside.submit(_build_indexes, factors, staging, opts, phase)
        table = _write_neighbour_table(factors, staging, opts, phase)
        angular, mips = indexes.result()
    manifest = mf.Manifest(
        version=version,
        created_at=datetime.now(UTC),
        dim=factors.dim,
        n_items=len(factors.item_ids),
        n_users=len(factors.user_ids),
        angular_index=angular,
        mips_index=mips,
        mips_max_norm=mips.bands[0].max_norm,
        neighbour_table=table,
        files=phase.run(
            "checksums", lambda: {p.name: file_entry(p) for p in sorted(staging.iterdir())}
        ),
        build=mf.BuildParams(
            n_trees=opts.n_trees, seed=opts.seed, source=source, source_sha256=factors.checksum()
        ),
        training=training,
        fold_in=fold_in_spec(factors, training, opts),
        popularity=popularity_source,
        attributes=attribute_specs,
        item_updates_applied=updates_applied,
        item_updates_through=item_updates.through if attributes is not None else {},
        item_vectors_applied=item_vectors[0],
        item_vectors_through=item_vectors[1],
    )
    manifest = _verify_and_measure(manifest, staging, factors, opts, phase)
    manifest = manifest.model_copy(
        update={"build": manifest.build.model_copy(update={"timings_s": phase.seconds})}
    )
    (staging / mf.MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    return manifest


def _write_attributes(
    attributes: AttributeTable | None,
    item_updates: UpdatesSnapshot,
    factors: Factors,
    staging: Path,
    phase: _PhaseTimer,
) -> tuple[list[mf.AttributeSpec], int]:
    """The attribute files, with the item updates published so far folded in: (specs, updates
    applied)."""
    if attributes is None:
        return [], 0
    with phase("attributes"):
        applied = attributes.apply_updates(item_updates.state, factors.item_ids.tolist())
        return write_attributes(attributes, staging), applied


def _write_arrays(
    factors: Factors, staging: Path, trained: bool, phase: _PhaseTimer
) -> PopularitySource:
    with phase("arrays"):
        np.save(staging / mf.ITEM_FACTORS_FILE, factors.item_factors)
        np.save(staging / mf.USER_FACTORS_FILE, factors.user_factors)
        np.save(staging / mf.ITEM_IDS_FILE, factors.item_ids)
        np.save(staging / mf.USER_IDS_FILE, factors.user_ids)
        popularity, popularity_source = popularity_ranking(factors, trained)
        np.save(staging / mf.POPULARITY_FILE, popularity)
        if trained and factors.fold_in is not None and factors.fold_in.weighting == "bm25":
            assert factors.fold_in.item_lengths is not None
            lengths = np.asarray(factors.fold_in.item_lengths, dtype=np.float32)
            np.save(staging / mf.FOLD_IN_LENGTHS_FILE, lengths)
    return popularity_source


def fold_in_spec(
    factors: Factors, training: mf.TrainParams | None, opts: BuildOptions
) -> mf.FoldIn:
    """The manifest's fold-in: the training's regularization, alpha and weighting (with what the
    weighting needs of the training matrix), else the build options' raw fold-in."""
    if training is None:
        return mf.FoldIn(regularization=opts.fold_in_regularization, alpha=opts.fold_in_alpha)
    weights = factors.fold_in
    if training.weighting != "raw" and (weights is None or weights.weighting != training.weighting):
        raise AnnrecError(
            f"factors trained with {training.weighting} weighting came without its fold-in "
            "weights (index_builder.train.fold_in_weights)"
        )
    if weights is None or weights.weighting == "raw":
        return mf.FoldIn(regularization=training.regularization, alpha=training.alpha)
    bm25 = None
    if weights.weighting == "bm25":
        bm25 = mf.Bm25FoldIn(
            k1=weights.bm25_k1,
            b=weights.bm25_b,
            average_length=weights.average_length,
            lengths_file=mf.FOLD_IN_LENGTHS_FILE,
        )
    return mf.FoldIn(
        regularization=training.regularization,
        alpha=training.alpha,
        weighting=weights.weighting,
        idf_items=weights.idf_items,
        bm25=bm25,
    )


def _build_indexes(
    factors: Factors, staging: Path, opts: BuildOptions, phase: _PhaseTimer
) -> tuple[mf.AnnoySpec, mf.MipsSpec]:
    angular = mf.AnnoySpec(
        file=mf.ANGULAR_FILE, metric="angular", dim=factors.dim, n_trees=opts.n_trees
    )

    def angular_index() -> dict[str, object]:
        build_annoy(
            factors.item_factors,
            staging / angular.file,
            metric=angular.metric,
            n_trees=opts.n_trees,
            seed=opts.seed,
            n_jobs=opts.n_jobs,
            label="angular",
        )
        return {}

    def mips_index() -> dict[str, object]:
        bands = build_mips_bands(
            factors.item_factors,
            staging,
            n_trees=opts.mips_trees,
            seed=opts.seed,
            n_jobs=opts.n_jobs,
        )
        return bands.model_dump(mode="json")

    phase.resumable("angular_index", angular_index)
    mips = mf.MipsSpec.model_validate(phase.resumable("mips_index", mips_index))
    return angular, mips


def _write_neighbour_table(
    factors: Factors, staging: Path, opts: BuildOptions, phase: _PhaseTimer
) -> mf.NeighbourTableSpec | None:
    if opts.neighbours <= 0:
        return None

    def neighbour_table() -> dict[str, object]:
        table, method = build_neighbour_table(
            factors.item_factors, opts.neighbours, seed=opts.seed, n_jobs=opts.n_jobs
        )
        np.save(staging / mf.NEIGHBOURS_FILE, table.rows)
        np.save(staging / mf.NEIGHBOUR_SCORES_FILE, table.scores)
        spec = mf.NeighbourTableSpec(
            rows_file=mf.NEIGHBOURS_FILE,
            scores_file=mf.NEIGHBOUR_SCORES_FILE,
            width=table.width,
            method=method,
        )
        return spec.model_dump(mode="json")

    return mf.NeighbourTableSpec.model_validate(phase.resumable("neighbour_table", neighbour_table))


def _verify_and_measure(
    manifest: mf.Manifest, staging: Path, factors: Factors, opts: BuildOptions, phase: _PhaseTimer
) -> mf.Manifest:
    """Read back what was written, as a worker will, and measure it (the quality report);
    QualityTooLow when the served recall is below the minimum."""
    with phase("verify"):
        check_files(staging, manifest)
        angular_index = load_annoy(staging, manifest.angular_index)
    try:
        check_indexes(manifest, angular_index, factors.item_factors)
        mips_bands = load_bands(staging, manifest.mips_index, factors.item_factors)
        neighbours = load_neighbour_table(staging, manifest, factors.item_factors)
        try:
            if not opts.quality:
                return manifest
            with phase("quality"):
                report = measure_quality(
                    angular_index,
                    mips_bands,
                    factors,
                    neighbours=neighbours,
                    n_trees=opts.n_trees,
                    target_recall=opts.target_recall,
                    n_queries=opts.quality_queries,
                    seed=opts.seed,
                )
            _refuse_if_poor(report, opts.min_recall)
            return manifest.model_copy(update={"quality": report})
        finally:
            mips_bands.unload()
    finally:
        angular_index.unload()


def popularity_ranking(
    factors: Factors, trained: bool
) -> tuple[npt.NDArray[np.int32], PopularitySource]:
    """All item rows, most popular first (ties: lower row first)."""
    source: PopularitySource
    if factors.item_popularity is not None:
        score = factors.item_popularity
        source = "interactions" if trained else "provided"
    else:
        score, source = np.linalg.norm(factors.item_factors, axis=1), "item_norm"
    return np.argsort(-score, kind="stable").astype(np.int32), source


class _PhaseTimer:
    """Wall time per build phase, recorded in the manifest (build.timings_s; the indexes' phases
    overlap the neighbour table's). Each phase is also logged when it ends, with the process's
    CPU time (all its threads: a phase beside another counts both) and peak resident memory
    so far: a build that is stopped or killed half-way (a 10M build runs for hours) leaves in
    its log what it finished and what that cost, which the manifest never gets to say."""

    def __init__(self, checkpoints: resume.Checkpoints | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self.checkpoints = checkpoints

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.process_time()
        log.info("build_phase_started", phase=name)
        yield
        self.seconds[name] = round(time.perf_counter() - start, 2)
        log.info(
            "build_phase_done",
            phase=name,
            seconds=self.seconds[name],
            cpu_s=round(time.process_time() - cpu, 1),
            peak_rss_mib=_peak_rss_mib(),
        )

    def run(self, name: str, fn: Callable[[], T]) -> T:
        with self(name):
            return fn()

    def resumable(self, name: str, fn: Callable[[], dict[str, object]]) -> dict[str, object]:
        """A long phase whose result (JSON) a resumable build checkpoints: taken from the
        checkpoint when an earlier build finished it (timed as 0 s: this build did no work)."""
        if self.checkpoints is None:
            return self.run(name, fn)
        done = self.checkpoints.finished(name)
        if done is not None:
            log.info("build_phase_resumed", phase=name)
            self.seconds[name] = 0.0
            return done
        started_ns = time.time_ns()
        result = self.run(name, fn)
        self.checkpoints.record(name, started_ns, result)
        return result


def _peak_rss_mib() -> int:
    """This process's peak resident memory: VmHWM (its own address space's mark; getrusage's
    ru_maxrss starts from the parent's size at the fork, the mark surviving exec), or
    ru_maxrss where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _refuse_if_poor(report: mf.QualityReport, min_recall: float) -> None:
    for kind, q in (("similar_items", report.similar_items), ("recommend", report.recommend)):
        log.info("quality_measured", kind=kind, **_served_fields(q))
        if q.recall_at_k < min_recall:
            raise QualityTooLow(
                f"{kind}: held-out recall@{report.k} {q.recall_at_k:.3f} at search_k "
                f"{q.search_k} is below the minimum {min_recall} (target {report.target_recall})"
            )


def _served_fields(q: mf.IndexQuality) -> dict[str, object]:
    """What workers will serve, one figure per measurement: the index's plan when it won,
    else the exact scan (with the index's best tuning point, which it did not serve, named so)."""
    served: dict[str, object] = {
        "strategy": q.strategy,
        "served_recall": round(q.recall_at_k, 4),
        "served_queries_per_s": round(q.queries_per_s),
        "scan_queries_per_s": round(q.brute_force_queries_per_s),
    }
    best = max(q.curve, key=lambda p: p.recall_at_k, default=None)
    if q.strategy == "ann":
        served.update(search_k=q.search_k, exact_items=q.exact_items, bound_factor=q.bound_factor)
    elif best is not None:
        served.update(
            index_best_recall=round(best.recall_at_k, 4),
            index_best_queries_per_s=round(best.queries_per_s),
        )
    return served
