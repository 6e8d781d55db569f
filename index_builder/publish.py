"""publish_version(): factors -> both Annoy indexes -> manifest -> verify -> storage -> LATEST
-> announce."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import structlog
from annoy import AnnoyIndex

from index_builder import storage
from index_builder.build import build_annoy
from index_builder.inputs import Factors
from schemas import manifest as mf
from schemas.errors import AnnrecError
from schemas.vectors import augment_items

log = structlog.get_logger(__name__)

Announcer = Callable[[mf.Manifest], None]


def publish_version(
    factors: Factors,
    storage_root: Path,
    *,
    n_trees: int = 50,
    seed: int = 42,
    n_jobs: int = -1,
    source: str = "memory",
    announce: Announcer | None = None,
) -> mf.Manifest:
    """Build, verify and publish one version; nothing is visible to workers unless all succeed."""
    version = storage.new_version_name()
    staging = storage.start_staging(storage_root, version)
    try:
        manifest = _write_version(factors, staging, version, n_trees, seed, n_jobs, source)
        verify_staged(staging, manifest)
        storage.commit_staging(storage_root, staging, version)
    except BaseException:
        storage.discard_staging(staging)
        raise
    storage.set_latest(storage_root, version)
    log.info("version_published", version=version, n_items=manifest.n_items, dim=manifest.dim)
    if announce is not None:
        announce(manifest)
    return manifest


def _write_version(
    factors: Factors, staging: Path, version: str, n_trees: int, seed: int, n_jobs: int, source: str
) -> mf.Manifest:
    np.save(staging / mf.ITEM_FACTORS_FILE, factors.item_factors)
    np.save(staging / mf.USER_FACTORS_FILE, factors.user_factors)
    np.save(staging / mf.ITEM_IDS_FILE, factors.item_ids)
    np.save(staging / mf.USER_IDS_FILE, factors.user_ids)

    angular = mf.AnnoySpec(file=mf.ANGULAR_FILE, metric="angular", dim=factors.dim, n_trees=n_trees)
    build_annoy(
        factors.item_factors,
        staging / angular.file,
        metric=angular.metric,
        n_trees=n_trees,
        seed=seed,
        n_jobs=n_jobs,
        label="angular",
    )
    augmented, max_norm = augment_items(factors.item_factors)
    # Angular on augmented vectors: every item has norm M, so the angle to [q, 0] is monotone in
    # q.x; this is the manual augmentation that works, unlike Annoy's broken `dot` (annoy #619).
    mips = mf.AnnoySpec(file=mf.MIPS_FILE, metric="angular", dim=factors.dim + 1, n_trees=n_trees)
    build_annoy(
        augmented,
        staging / mips.file,
        metric=mips.metric,
        n_trees=n_trees,
        seed=seed,
        n_jobs=n_jobs,
        label="mips",
    )

    files = {p.name: mf.file_entry(p) for p in sorted(staging.iterdir())}
    manifest = mf.Manifest(
        version=version,
        created_at=datetime.now(UTC),
        dim=factors.dim,
        n_items=len(factors.item_ids),
        n_users=len(factors.user_ids),
        angular_index=angular,
        mips_index=mips,
        mips_max_norm=max_norm,
        files=files,
        build=mf.BuildParams(
            n_trees=n_trees, seed=seed, source=source, source_sha256=factors.checksum()
        ),
    )
    (staging / mf.MANIFEST_NAME).write_text(manifest.model_dump_json(indent=2))
    return manifest


def verify_staged(directory: Path, manifest: mf.Manifest) -> None:
    """Read the written files back as a worker would; refuse the build if any disagrees."""
    mf.check_files(directory, manifest)
    for spec in (manifest.angular_index, manifest.mips_index):
        index = AnnoyIndex(spec.dim, spec.metric)
        index.load(str(directory / spec.file))
        try:
            if index.get_n_items() != manifest.n_items or index.f != spec.dim:
                raise AnnrecError(
                    f"{spec.file}: {index.get_n_items()} items of dim {index.f}, expected "
                    f"{manifest.n_items} of dim {spec.dim}"
                )
        finally:
            index.unload()
