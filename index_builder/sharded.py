"""A catalogue too large for one build, built as shards in parallel on a Dask cluster.

Items are cut into `n_shards` by a hash of their id (crc32 mod n: an item stays on its shard
from one version to the next, whatever the row order of the input), and each shard is built as
a complete version of its own by publish_version, the same code as an unsharded build: its
indexes, its neighbour table (within the shard), its quality report, its own storage root
(`<storage>/shard-<i>/`, LATEST and all). Every shard carries every user's factors: a recommend
request for a user is answered by every shard. `<storage>/SHARDS.json` names the shards and
their versions once all of them are published.

The tasks run on a Dask cluster: `local` starts a LocalCluster of worker processes on this
machine (one task per process at a time: each build already uses its process's cores), an
address (`tcp://scheduler:8786`) uses a running cluster whose workers see the same storage path
(a shared filesystem; object storage would take the same publish_version(remote=...)). The item
factors are written once as a plain .npy that every task maps and slices, so a task holds its own
rows, not the catalogue.

Serving them (not built here): a worker group per shard (ANNREC_STORAGE=<storage>/shard-<i>,
its own consumer group on the one requests topic), and a merger that answers once all shards
replied (SCALING.md; what that costs is simulated by tools/bench/fanout.py).
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from index_builder.inputs import Factors
from index_builder.publish import BuildOptions, publish_version
from schemas.errors import AnnrecError

log = structlog.get_logger(__name__)

SHARDS_FILE = "SHARDS.json"


def shard_of(item_ids: npt.NDArray[np.str_], n_shards: int) -> npt.NDArray[np.int32]:
    """Each item's shard: crc32 of its id (UTF-8) mod n_shards. Stable across versions and
    machines (Python's own hash() is salted per process)."""
    if n_shards < 1:
        raise AnnrecError(f"--shards must be >= 1, got {n_shards}")
    codes = np.fromiter(
        (zlib.crc32(str(i).encode()) for i in item_ids), dtype=np.uint32, count=len(item_ids)
    )
    return (codes % n_shards).astype(np.int32)


def shard_dir(storage: Path, shard: int) -> Path:
    return storage / f"shard-{shard:02d}"


@dataclass(frozen=True)
class ShardBuilt:
    shard: int
    version: str
    n_items: int
    seconds: float
    peak_rss_mib: int  # of the cluster worker process that built it (its high-water mark so far)


def build_shard(
    shard: int,
    rows: npt.NDArray[np.int64],
    arrays: dict[str, str],
    storage: str,
    options: BuildOptions,
    source: str,
) -> ShardBuilt:
    """One shard's version, in a cluster worker: its rows of the mapped item factors, every user."""
    started = time.perf_counter()
    items = np.load(arrays["item_factors"], mmap_mode="r")
    factors = Factors(
        item_factors=np.ascontiguousarray(items[rows]),
        user_factors=np.load(arrays["user_factors"], mmap_mode="r"),
        item_ids=np.load(arrays["item_ids"], mmap_mode="r")[rows],
        user_ids=np.load(arrays["user_ids"]),
    )
    manifest = publish_version(
        factors, shard_dir(Path(storage), shard), options, source=f"{source} shard {shard}"
    )
    return ShardBuilt(
        shard=shard,
        version=manifest.version,
        n_items=len(rows),
        seconds=round(time.perf_counter() - started, 1),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    )


# (function, per-task argument lists) -> results in order: what a cluster does with the tasks.
MapTasks = Callable[..., list[ShardBuilt]]


def build_sharded(
    factors: Factors,
    storage: Path,
    n_shards: int,
    options: BuildOptions,
    map_tasks: MapTasks,
    source: str = "memory",
) -> dict[str, Any]:
    """Build the n_shards versions through `map_tasks` (dask_map for a cluster), then write
    SHARDS.json; returns what it holds."""
    if factors.item_popularity is not None or factors.fold_in is not None:
        raise AnnrecError("sharded builds take plain factors (no popularity or training weights)")
    shards = shard_of(factors.item_ids, n_shards)
    storage.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="annrec-shards-", dir=storage) as tmp:
        arrays = {}
        for name in ("item_factors", "user_factors", "item_ids", "user_ids"):
            arrays[name] = str(Path(tmp) / f"{name}.npy")
            np.save(arrays[name], getattr(factors, name))
        rows = [np.flatnonzero(shards == s) for s in range(n_shards)]
        built = map_tasks(
            build_shard,
            list(range(n_shards)),
            rows,
            [arrays] * n_shards,
            [str(storage)] * n_shards,
            [options] * n_shards,
            [source] * n_shards,
        )
    result = {
        "n_shards": n_shards,
        "hash": "crc32(item_id utf-8) mod n_shards",
        "n_items": len(factors.item_ids),
        "seconds": round(time.perf_counter() - started, 1),
        "shards": [
            {**asdict(b), "storage": str(shard_dir(storage, b.shard))}
            for b in sorted(built, key=lambda b: b.shard)
        ],
    }
    (storage / SHARDS_FILE).write_text(json.dumps(result, indent=2))
    log.info("shards_published", n_shards=n_shards, seconds=result["seconds"])
    return result


def dask_map(cluster: str, workers: int) -> MapTasks:
    """map_tasks on a Dask cluster: `local` (a LocalCluster of `workers` processes, one task
    at a time each, every core to its build) or a scheduler address."""

    def run(fn: Callable[..., ShardBuilt], *args: list[Any]) -> list[ShardBuilt]:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise AnnrecError("sharded builds need: pip install 'annrec[shard]'") from exc
        if cluster == "local":
            with (
                LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, memory_limit=0
                ) as local,
                Client(local) as client,
            ):
                return list(client.gather(client.map(fn, *args, pure=False)))
        with Client(cluster) as client:
            return list(client.gather(client.map(fn, *args, pure=False)))

    return run


def serial_map(fn: Callable[..., ShardBuilt], *args: list[Any]) -> list[ShardBuilt]:
    """map_tasks in this process, one shard after the other (no cluster)."""
    return [fn(*task) for task in zip(*args, strict=True)]


def shard_options(options: BuildOptions, workers: int, cores: int) -> BuildOptions:
    """Each shard build's threads: the machine's cores shared by the tasks running at once."""
    return replace(options, n_jobs=max(1, cores // max(1, workers)))
