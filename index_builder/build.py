"""Arrays -> Annoy index files. No manifest, no Kafka: just the numerical part of a build."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from annoy import AnnoyIndex
from tqdm import tqdm

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
    for i, row in enumerate(tqdm(vectors, desc=f"add {label}", unit="item", leave=False)):
        index.add_item(i, row)
    with tqdm(total=n_trees, desc=f"build {label}", unit="tree", leave=False) as bar:
        # Annoy builds all trees in one C++ call and reports nothing; the bar marks the phase.
        index.build(n_trees, n_jobs=n_jobs)
        bar.update(n_trees)
    if not on_disk and not index.save(str(path)):
        raise OSError(f"annoy could not save {path}")
    index.unload()
