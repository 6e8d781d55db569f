"""GET /v1/models: what the explorer compares, read from storage (gateway/status.py)."""

from __future__ import annotations

from adapters.version_storage import ModelCatalog
from gateway.status import models_status
from index_builder import experiments
from index_builder.publish import BuildOptions, publish_version
from index_builder.targets import publish_target


def test_models_list_latest_versions_the_experiments_arms_and_pins(tmp_path, small_factors):
    options = BuildOptions(n_trees=2, quality=False)
    default = [publish_version(small_factors, tmp_path, options).version for _ in range(2)]
    target = publish_target(str(tmp_path), {}, tmp_path / "build", "ranker")
    ranker = [
        publish_version(small_factors, target.storage.root, options).version for _ in range(3)
    ]
    experiments.start(target, target.storage, "ranker", "try", [f"{ranker[0]}:25"])
    experiments.pin(target, target.storage, "ranker", ranker[1])

    doc = models_status(ModelCatalog(str(tmp_path), {}))

    by_name = {m["model"]: m for m in doc["models"]}
    assert list(by_name) == ["default", "ranker"]
    assert by_name["default"] == {
        "model": "default",
        "latest": default[1],
        "versions": default[::-1],  # newest first
        "pinned": [],
        "experiment": None,
    }
    r = by_name["ranker"]
    assert r["latest"] == ranker[2] and r["versions"] == ranker[::-1]
    assert r["pinned"] == [ranker[1]]
    assert r["experiment"]["name"] == "try"
    arms = {a["name"]: a for a in r["experiment"]["arms"]}
    # the control serves LATEST: the page pins what it serves now
    assert [a for a in arms.values() if a["control"]] == [
        {"name": "control", "version": ranker[2], "control": True, "share": 0.75}
    ]
    [candidate] = [a for a in arms.values() if not a["control"]]
    assert candidate["version"] == ranker[0] and candidate["share"] == 0.25
