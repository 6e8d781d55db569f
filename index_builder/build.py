"""Arrays -> Annoy index files. No manifest, no Kafka: just the numerical part of a build."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex

from index_builder.progress import progress_bar
from query_engine.banded import BAND_GROWTH, FIRST_BAND, band_bounds, norm_order
from query_engine.vectors import augment_with
from schemas import manifest as mf

Metric = Literal["angular", "euclidean"]

# Above this many bytes of vectors, Annoy builds straight into the file (on_disk_build) instead of
# in RAM and then copying it out on save, so a 10M-item build does not hold the index twice.
ON_DISK_BUILD_BYTES = 512 * 1024**2


def build_annoy(
    vectors: npt.NDArray[np.float32],
    path: Path,
    *,
    metric: Metric,
    n_trees: int,
    seed: int,
    n_jobs: int = -1,
    label: str = "index",
    on_disk_bytes: int = ON_DISK_BUILD_BYTES,
) -> None:
    """Write an Annoy index whose item i is row i of `vectors` (dense ids: Annoy allocates
    max(id)+1 slots, spotify/annoy #438, so external ids never reach it)."""
    index = AnnoyIndex(int(vectors.shape[1]), metric)
    index.set_seed(seed)
    on_disk = vectors.nbytes >= on_disk_bytes
    if on_disk:
        index.on_disk_build(str(path))
    for i, row in enumerate(progress_bar(vectors, desc=f"add {label}", unit="item", leave=False)):
        index.add_item(i, row)
    with progress_bar(total=n_trees, desc=f"build {label}", unit="tree", leave=False) as bar:
        # Annoy builds all trees in one C++ call and reports nothing; the bar marks the phase.
        index.build(n_trees, n_jobs=n_jobs)
        bar.update(n_trees)
    if not on_disk and not index.save(str(path)):
        raise OSError(f"annoy could not save {path}")
    index.unload()


def build_mips_bands(
    item_factors: npt.NDArray[np.float32],
    directory: Path,
    *,
    n_trees: int,
    seed: int,
    n_jobs: int = -1,
    first_band: int = FIRST_BAND,
    band_growth: int = BAND_GROWTH,
) -> mf.MipsSpec:
    """The user -> items indexes (query_engine/banded.py): the norm order, then one augmented Annoy
    index per norm band, each with its own M. Returns their manifest entry."""
    order, norms = norm_order(item_factors)
    np.save(directory / mf.MIPS_ORDER_FILE, order)
    edges = band_bounds(len(order), first_band, band_growth)
    bands: list[mf.MipsBand] = []
    for b, (start, stop) in enumerate(
        progress_bar(list(itertools.pairwise(edges)), desc="mips bands", unit="band")
    ):
        band = mf.MipsBand(
            file=mf.mips_band_file(b), start=start, stop=stop, max_norm=float(norms[start])
        )
        vectors = augment_with(item_factors[order[start:stop]], band.max_norm)
        build_annoy(
            vectors,
            directory / band.file,
            metric="angular",
            n_trees=n_trees,
            seed=seed,
            n_jobs=n_jobs,
            label=f"mips band {b}",
        )
        bands.append(band)
    return mf.MipsSpec(
        order_file=mf.MIPS_ORDER_FILE,
        dim=int(item_factors.shape[1]) + 1,
        n_trees=n_trees,
        bands=bands,
    )
