from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import Services, real_services


@pytest.fixture(scope="session", autouse=True)
def _temporary_folders_in_basetemp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """What the code under test, or a process it starts, makes with `tempfile` lands in pytest's
    base temporary folder (pytest keeps the last three runs' and removes older ones), never
    directly in /tmp, where nothing would remove it."""
    folder = tmp_path_factory.mktemp("tmp")  # pytest's base folder is fixed before TMPDIR moves
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with real_services(tmp_path_factory.mktemp("stack")) as found:
        print(f"\nintegration services: {found}", file=sys.stderr)
        yield found


@pytest.fixture
def small_factors():
    """A small clustered catalogue with skewed norms: 300 items, 40 users, K=8."""
    from index_builder.synth import synth_factors

    return synth_factors(n_items=300, n_users=40, dim=8, n_clusters=6, seed=3)


@pytest.fixture
def published(tmp_path, small_factors):
    """(storage root, manifest) of one version of small_factors, published without Kafka.

    Without a quality report the worker uses Annoy's default search_k (n * n_trees), which on
    300 items visits every leaf: answers are then exact and tests compare them to brute force.
    """
    from index_builder.publish import BuildOptions, publish_version

    storage = tmp_path / "storage"
    manifest = publish_version(
        small_factors, storage, BuildOptions(n_trees=10, seed=1, quality=False)
    )
    return storage, manifest
