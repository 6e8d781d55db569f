"""Sharded builds: the cut (stable, complete, disjoint), each shard a version a worker loads, the
same result through a Dask LocalCluster as in process, and the CLI's refusals."""

import json
import zlib

import numpy as np
import pytest

from index_builder.publish import BuildOptions
from index_builder.sharded import (
    SHARDS_FILE,
    build_sharded,
    dask_map,
    serial_map,
    shard_dir,
    shard_of,
)
from index_builder.synth import synth_factors
from schemas.errors import AnnrecError
from schemas.layout import read_latest
from worker.index_store import load_version

OPTIONS = BuildOptions(n_trees=4, mips_trees=4, quality=False, n_jobs=1)


def test_the_cut_is_stable_and_spreads_items_evenly():
    ids = np.char.add("i", np.arange(20_000).astype(str))
    shards = shard_of(ids, 4)
    assert set(shards.tolist()) == {0, 1, 2, 3}
    assert np.bincount(shards).min() > 4_500  # 5,000 each on average
    # An item's shard depends on its id only: not on the row order, not on the process.
    order = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(shard_of(ids[order], 4), shards[order])
    # The documented hash (what another tool routing requests to shards computes)
    assert shard_of(np.array(["i7"]), 4)[0] == zlib.crc32(b"i7") % 4
    with pytest.raises(AnnrecError):
        shard_of(ids, 0)


def _check_shards(storage, factors, result, n_shards):
    seen = []
    for entry in result["shards"]:
        directory = shard_dir(storage, entry["shard"])
        version = read_latest(directory)
        assert version == entry["version"]
        loaded = load_version(directory, version)  # as a worker of that shard loads it
        try:
            seen += loaded.item_ids.tolist()
            assert loaded.manifest.n_users == len(factors.user_ids)  # every user on every shard
            expected = shard_of(loaded.item_ids, n_shards)
            assert (expected == entry["shard"]).all()
        finally:
            loaded.close()
    assert sorted(seen) == sorted(factors.item_ids.tolist())  # each item on exactly one shard
    assert json.loads((storage / SHARDS_FILE).read_text()) == result


def test_each_shard_is_a_version_and_together_they_hold_each_item_once(tmp_path):
    factors = synth_factors(3000, 200, 16, seed=1)
    result = build_sharded(factors, tmp_path, 3, OPTIONS, serial_map)
    assert result["n_shards"] == 3 and sum(s["n_items"] for s in result["shards"]) == 3000
    _check_shards(tmp_path, factors, result, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("annrec-shards-")]


def test_a_local_dask_cluster_builds_the_same_shards(tmp_path):
    factors = synth_factors(2000, 100, 16, seed=2)
    result = build_sharded(factors, tmp_path, 2, OPTIONS, dask_map("local", 2))
    _check_shards(tmp_path, factors, result, 2)
    assert all(s["peak_rss_mib"] > 0 for s in result["shards"])
