"""Experiments and pins in storage: what `annrec experiment` and `versions pin` write, and what
gc then keeps."""

import pytest

from index_builder import experiments
from index_builder.publish import BuildOptions, publish_version
from index_builder.targets import publish_target
from schemas.errors import AnnrecError
from schemas.layout import list_versions, read_experiment, read_latest, read_pins


@pytest.fixture
def four_versions(tmp_path, small_factors):
    """A model `ranker` with four versions (the last is LATEST) and its publish target."""
    target = publish_target(str(tmp_path), {}, tmp_path / "build", "ranker")
    root = target.storage.root
    assert root == tmp_path / "models" / "ranker"
    names = [
        publish_version(small_factors, root, BuildOptions(n_trees=2, quality=False)).version
        for _ in range(4)
    ]
    return target, names


def test_gc_keeps_the_pinned_and_the_experimental_versions(four_versions):
    target, (v1, v2, v3, v4) = four_versions
    experiments.pin(target, target.storage, "ranker", v1)
    experiments.start(target, target.storage, "ranker", "try-v2", [f"{v2}:10"])
    removed = target.gc(keep=1, grace_s=0)
    assert removed == [v3]  # v1 pinned, v2 in the experiment, v4 LATEST
    assert list_versions(target.storage.root) == [v1, v2, v4]
    experiments.stop(target, target.storage, "ranker")
    experiments.unpin(target, target.storage, "ranker", v1)
    assert target.gc(keep=1, grace_s=0) == [v1, v2]


def test_start_status_promote(four_versions):
    target, (_, v2, v3, v4) = four_versions
    root = target.storage.root
    started = experiments.start(target, target.storage, "ranker", "t", [f"new={v3}:5", f"{v2}:15"])
    assert [(a.name, a.version, round(a.share, 6)) for a in started.arms] == [
        ("control", None, 0.8),
        ("new", v3, 0.05),
        ("candidate-2", v2, 0.15),
    ]
    assert read_experiment(root) == started
    with pytest.raises(AnnrecError, match="already runs experiment t"):
        experiments.start(target, target.storage, "ranker", "u", [f"{v2}:1"])
    with pytest.raises(AnnrecError, match="no arm 'nope'"):
        experiments.promote(target, target.storage, "ranker", "nope")
    assert experiments.promote(target, target.storage, "ranker", "new") == v3  # older: allowed
    assert read_latest(root) == v3 and read_experiment(root) is None
    assert v4 in list_versions(root)


@pytest.mark.parametrize(
    ("candidate", "reason"),
    [
        ("20261201T000000.000000Z-aaaaaa:10", "has no version"),
        ("LATEST:10", "LATEST already"),
        ("V2:100", "nothing to the control"),
        ("V2", "expected"),
        ("V2:ten", "not a percentage"),
    ],
)
def test_start_refuses_what_cannot_run_with_the_reason(four_versions, candidate, reason):
    target, (_, v2, _, v4) = four_versions
    candidate = candidate.replace("LATEST", v4).replace("V2", v2)
    with pytest.raises(AnnrecError, match=reason):
        experiments.start(target, target.storage, "ranker", "t", [candidate])
    assert read_experiment(target.storage.root) is None


def test_a_damaged_candidate_is_refused_before_any_worker_sees_it(four_versions):
    target, (_, v2, _, _) = four_versions
    factors = target.storage.root / "versions" / v2 / "item_factors.npy"
    factors.write_bytes(factors.read_bytes()[:-8])
    with pytest.raises(AnnrecError, match=r"item_factors\.npy"):
        experiments.start(target, target.storage, "ranker", "t", [f"{v2}:10"])
    with pytest.raises(AnnrecError, match=r"item_factors\.npy"):
        experiments.pin(target, target.storage, "ranker", v2)
    assert read_pins(target.storage.root).versions == []
