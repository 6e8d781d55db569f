"""A resumable build (BuildOptions.resume) that stops keeps what its long phases finished, and the
next resumable build of the same inputs continues from there (index_builder/resume.py)."""

import json

import numpy as np
import pytest
from structlog.testing import capture_logs

from adapters.index_files import check_files
from index_builder import publish
from index_builder.publish import BuildOptions, publish_version
from schemas.layout import STAGING, read_latest, version_dir
from schemas.manifest import MANIFEST_NAME, Manifest

RESUMABLE = BuildOptions(n_trees=2, mips_trees=2, resume=True, quality=False)


class Stop(Exception):
    pass


def _stop_in_the_table(monkeypatch):
    def broken(*args, **kwargs):
        raise Stop("killed in the neighbour table")

    monkeypatch.setattr(publish, "build_neighbour_table", broken)


def _stopped_build(tmp_path, factors, monkeypatch):
    storage = tmp_path / "store"
    with monkeypatch.context() as m:
        _stop_in_the_table(m)
        with pytest.raises(Stop):
            publish_version(factors, storage, RESUMABLE)
    return storage


def _staging_dirs(storage):
    return sorted(p.name for p in (storage / STAGING).iterdir())


def test_a_stopped_build_is_continued_after_its_finished_phases(
    tmp_path, small_factors, monkeypatch
):
    storage = _stopped_build(tmp_path, small_factors, monkeypatch)
    assert read_latest(storage) is None  # nothing published
    kept = _staging_dirs(storage)
    assert len(kept) == 2 and kept[1] == kept[0] + ".resume"  # staging and its checkpoints
    finished = sorted(p.stem for p in (storage / STAGING / kept[1]).glob("*.json"))
    assert finished == ["angular_index", "mips_index"]
    angular = storage / STAGING / kept[0] / "items.angular.ann"
    built_at = angular.stat().st_mtime_ns

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished phase ran again")

    with monkeypatch.context() as m, capture_logs() as logs:
        m.setattr(publish, "build_annoy", must_not_run)
        m.setattr(publish, "build_mips_bands", must_not_run)
        manifest = publish_version(small_factors, storage, RESUMABLE)
    resumed = [e["phase"] for e in logs if e["event"] == "build_phase_resumed"]
    ran = [e["phase"] for e in logs if e["event"] == "build_phase_done"]
    assert resumed == ["angular_index", "mips_index"] and "neighbour_table" in ran

    assert read_latest(storage) == manifest.version
    directory = version_dir(storage, manifest.version)
    assert (directory / "items.angular.ann").stat().st_mtime_ns == built_at  # the same file
    check_files(directory, manifest)  # every file listed, at its size and sha256
    timings = manifest.build.timings_s
    assert timings["angular_index"] == 0.0 and timings["mips_index"] == 0.0
    assert "neighbour_table" in timings and "verify" in timings
    assert _staging_dirs(storage) == []  # staging moved into versions/, checkpoints removed

    # the same as a build in one go
    whole = publish_version(
        small_factors, tmp_path / "whole", BuildOptions(n_trees=2, mips_trees=2)
    )
    assert manifest.mips_index == whole.mips_index
    assert manifest.neighbour_table == whole.neighbour_table
    rows = [
        np.load(version_dir(s, m.version) / "neighbours.rows.npy")
        for s, m in ((storage, manifest), (tmp_path / "whole", whole))
    ]
    assert np.array_equal(rows[0], rows[1])


def test_other_options_or_factors_do_not_resume(tmp_path, small_factors, monkeypatch):
    storage = _stopped_build(tmp_path, small_factors, monkeypatch)
    kept = _staging_dirs(storage)
    calls = []
    real = publish.build_annoy

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(publish, "build_annoy", counted)
    other = BuildOptions(n_trees=3, mips_trees=2, resume=True, quality=False)
    publish_version(small_factors, storage, other)
    assert calls  # built from scratch
    assert set(kept) <= set(_staging_dirs(storage))  # the stopped build's staging left alone


def test_a_phase_whose_files_changed_runs_again(tmp_path, small_factors, monkeypatch):
    storage = _stopped_build(tmp_path, small_factors, monkeypatch)
    staging = storage / STAGING / _staging_dirs(storage)[0]
    angular = staging / "items.angular.ann"
    angular.write_bytes(angular.read_bytes()[:-100])  # truncated after its checkpoint
    calls = []
    real = publish.build_annoy

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(publish, "build_annoy", counted)
    manifest = publish_version(small_factors, storage, RESUMABLE)
    assert calls == [1]  # the angular index again, the bands taken over
    directory = version_dir(storage, manifest.version)
    saved = Manifest.model_validate_json((directory / MANIFEST_NAME).read_text())
    assert saved.build.timings_s["mips_index"] == 0.0
    check_files(directory, saved)


def test_a_build_that_is_not_resumable_leaves_no_staging(tmp_path, small_factors, monkeypatch):
    storage = tmp_path / "store"
    _stop_in_the_table(monkeypatch)
    with pytest.raises(Stop):
        publish_version(small_factors, storage, BuildOptions(n_trees=2, quality=False))
    assert _staging_dirs(storage) == []


def test_checkpoints_name_the_files_each_phase_wrote(tmp_path, small_factors, monkeypatch):
    storage = _stopped_build(tmp_path, small_factors, monkeypatch)
    checkpoints = storage / STAGING / _staging_dirs(storage)[1]
    angular = json.loads((checkpoints / "angular_index.json").read_text())
    assert "items.angular.ann" in angular["files"]
    bands = json.loads((checkpoints / "mips_index.json").read_text())
    assert bands["result"]["bands"] and all(
        band["file"] in bands["files"] for band in bands["result"]["bands"]
    )
