import pytest

from worker.index_store import load_version


@pytest.fixture
def version(published):
    """The published fixture version, loaded as a worker loads it."""
    storage, manifest = published
    v = load_version(storage, manifest.version)
    yield v
    v.close()
