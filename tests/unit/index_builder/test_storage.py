import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from index_builder import storage
from index_builder.publish import BuildOptions, publish_version
from schemas.errors import AnnrecError
from schemas.layout import list_versions, read_latest, version_dir
from worker.index_store import load_version


def _names(n: int) -> list[str]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return [storage.new_version_name(t0 + timedelta(seconds=i)) for i in range(n)]


def _fake_version(root, name, age_s=0.0):
    path = version_dir(root, name)
    path.mkdir(parents=True)
    (path / "x").write_bytes(b"1234")
    past = time.time() - age_s
    os.utime(path, (past, past))


def test_version_names_sort_by_creation_time():
    names = _names(5)
    assert names == sorted(names)
    assert len(set(storage.new_version_name() for _ in range(100))) == 100


def test_latest_only_moves_forward_under_concurrent_writers(tmp_path):
    names = _names(40)
    for n in names:
        _fake_version(tmp_path, n)
    shuffled = names[::2] + names[1::2][::-1]
    threads = [threading.Thread(target=storage.set_latest, args=(tmp_path, n)) for n in shuffled]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert read_latest(tmp_path) == names[-1]
    assert not storage.set_latest(tmp_path, names[0])
    assert storage.set_latest(tmp_path, names[0], allow_older=True)  # an explicit rollback
    assert read_latest(tmp_path) == names[0]


def test_concurrent_publishers_leave_complete_versions_and_the_newest_latest(
    tmp_path, small_factors
):
    root = tmp_path / "s"
    errors = []

    def build():
        try:
            publish_version(small_factors, root, BuildOptions(n_trees=3, quality=False))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = list_versions(root)
    assert len(versions) == 4 and read_latest(root) == versions[-1]
    for v in versions:
        load_version(root, v).close()  # complete and verifiable
    assert not [p for p in (root / "tmp").iterdir() if not p.name.startswith(".")]


def test_gc_keeps_latest_the_newest_and_the_recent(tmp_path):
    names = _names(6)
    for i, n in enumerate(names):
        _fake_version(tmp_path, n, age_s=7200 if i < 5 else 10)
    storage.set_latest(tmp_path, names[1], allow_older=True)  # rolled back to an old one
    removed = storage.gc_versions(tmp_path, keep=2, grace_s=3600)
    assert removed == [names[0], names[2], names[3]]
    assert list_versions(tmp_path) == [names[1], names[4], names[5]]
    # a young version survives even outside `keep`
    assert storage.gc_versions(tmp_path, keep=1, grace_s=3600) == [names[4]]
    assert list_versions(tmp_path) == [names[1], names[5]]
    with pytest.raises(AnnrecError):
        storage.gc_versions(tmp_path, keep=0, grace_s=0)


def test_gc_removes_abandoned_staging_but_not_a_build_in_progress(tmp_path):
    old = storage.start_staging(tmp_path, _names(1)[0])
    past = time.time() - 7200
    os.utime(old, (past, past))
    fresh = storage.start_staging(tmp_path, storage.new_version_name())
    storage.gc_versions(tmp_path, keep=1, grace_s=3600)
    assert not old.exists() and fresh.exists()
