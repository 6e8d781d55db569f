"""Versions on S3-compatible object storage: a real S3 API server (moto's, on loopback)."""

import socket

import boto3
import pytest
from moto.server import ThreadedMotoServer

from adapters.object_store import ObjectStore
from adapters.version_storage import ObjectStorage, open_storage
from index_builder import remote
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.errors import AnnrecError
from schemas.layout import version_dir
from tests.cli import annrec
from worker.index_store import IndexStore, load_version

CREDS = {"key": "testing", "secret": "testing", "client_kwargs": {"region_name": "us-east-1"}}


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def store(s3_endpoint, tmp_path):
    bucket = f"b{tmp_path.name.lower().replace('_', '-')[-40:]}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return ObjectStore(f"s3://{bucket}/annrec", {**CREDS, "endpoint_url": s3_endpoint})


def _publish(store, tmp_path, factors, **opts):
    return publish_version(
        factors, tmp_path / "build", BuildOptions(n_trees=4, quality=False, **opts), remote=store
    )


def test_published_version_round_trips_through_object_storage(store, tmp_path, small_factors):
    manifest = _publish(store, tmp_path, small_factors)
    assert store.read_latest() == manifest.version
    assert store.list_versions() == [manifest.version]

    source = ObjectStorage(store, tmp_path / "cache")
    assert source.latest() == manifest.version
    root = source.materialize(manifest.version)
    version = load_version(root, manifest.version)
    try:
        assert version.manifest == manifest and version.item_rows["i9"] == 9
    finally:
        version.close()
    # a second worker on the same machine reuses the verified cache
    assert source.materialize(manifest.version) == root


def test_a_corrupted_remote_version_is_refused_and_never_cached(store, tmp_path, small_factors):
    good = _publish(store, tmp_path, small_factors)
    worker_store = IndexStore(ObjectStorage(store, tmp_path / "cache"), poll_interval_s=3600)
    worker_store.start()
    try:
        assert worker_store.current().version == good.version
        bad = _publish(store, tmp_path, synth_factors(300, 40, 8, seed=4))
        key = store.version_key(bad.version, bad.mips_index.bands[0].file)
        store.fs.pipe_file(key, store.fs.cat_file(key)[:-100])  # a half-uploaded file
        worker_store.check_latest()
        assert worker_store.current().version == good.version
        assert "bytes" in worker_store.refused[bad.version]
        assert not version_dir(tmp_path / "cache", bad.version).exists()
    finally:
        worker_store.stop()


def test_remote_gc_keeps_latest_and_the_newest(store, tmp_path, small_factors):
    versions = [_publish(store, tmp_path, small_factors).version for _ in range(4)]
    remote.set_remote_latest(store, versions[0], allow_older=True)
    assert remote.gc_remote_versions(store, keep=1, grace_s=3600) == []  # all too young
    assert remote.gc_remote_versions(store, keep=1, grace_s=0) == versions[1:3]
    assert store.list_versions() == [versions[0], versions[3]]


def test_names_cannot_escape_the_prefix(store):
    for bad in ("../other", "..", "x/../../y"):
        with pytest.raises(AnnrecError):
            store.version_key(bad)
    with pytest.raises(AnnrecError):
        store.version_key("20261125T205201.985044Z-f5ef7e", "../manifest.json")


def test_storage_setting_chooses_the_source(tmp_path, s3_endpoint):
    assert open_storage(str(tmp_path), {}, tmp_path / "c").latest() is None
    src = open_storage("s3://bucket/p", {**CREDS, "endpoint_url": s3_endpoint}, tmp_path / "c")
    assert isinstance(src, ObjectStorage)


def test_cli_builds_lists_and_rolls_back_on_object_storage(store, tmp_path, s3_endpoint):
    import json

    env = {
        "ANNREC_STORAGE": store.url,
        "ANNREC_BUILD_DIR": str(tmp_path / "b"),
        "ANNREC_STORAGE_OPTIONS": json.dumps({**CREDS, "endpoint_url": s3_endpoint}),
    }

    build = ["build", "--synth", "--items", "300", "--dim", "4", "--trees", "2", "--no-announce"]
    first, second = annrec(*build, extra_env=env), annrec(*build, extra_env=env)
    assert first.returncode == second.returncode == 0, first.stderr
    listed = json.loads(annrec("versions", "list", "--json", extra_env=env).stdout)
    assert [(v["name"], v["latest"]) for v in listed] == [
        (first.stdout.strip(), False),
        (second.stdout.strip(), True),
    ]
    assert annrec("versions", "rollback", first.stdout.strip(), extra_env=env).returncode == 0
    assert store.read_latest() == first.stdout.strip()

    # A damaged version is downloaded, checked and refused; LATEST stays; nothing is left behind.
    store.fs.pipe_file(store.version_key(second.stdout.strip(), "popularity.npy"), b"short")
    refused = annrec("versions", "rollback", second.stdout.strip(), extra_env=env)
    assert refused.returncode == 1 and "popularity.npy has 5 bytes" in refused.stderr
    assert store.read_latest() == first.stdout.strip()
    assert not [p for p in (tmp_path / "b").iterdir() if p.name.startswith(".verify-")]
