"""Security properties that must not regress: no pickle, credentials reach the clients, and a
password-protected Redis is used with its password (and refused without it)."""

import re
import subprocess
import time
from pathlib import Path

import pytest
import redis

from schemas.settings import CommonSettings
from tools import services
from tools.stack import _free_ports, redis_server_binary

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "query_engine", "adapters", "index_builder", "worker", "tools")


def _sources():
    for package in PACKAGES:
        yield from (ROOT / package).rglob("*.py")


def test_no_pickle_anywhere():
    """Versions and events come from shared storage and Kafka: unpickling them would run code."""
    banned = re.compile(r"\bimport pickle\b|\bfrom pickle\b|allow_pickle\s*=\s*True|\bdill\b")
    offenders = [str(p.relative_to(ROOT)) for p in _sources() if banned.search(p.read_text())]
    assert offenders == []


def test_every_np_load_refuses_pickles():
    loads = [
        (p.relative_to(ROOT), line)
        for p in _sources()
        for line in p.read_text().splitlines()
        if "np.load(" in line
    ]
    assert loads, "the check must see the loaders"
    for path, line in loads:
        # np.load defaults to allow_pickle=False; any override must keep it off
        assert "allow_pickle=True" not in line, (path, line)


def test_kafka_security_settings_pass_through_verbatim(monkeypatch):
    monkeypatch.setenv("ANNREC_KAFKA_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv(
        "ANNREC_KAFKA_CONFIG",
        '{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", '
        '"sasl.username": "annrec", "sasl.password": "s3cret", "ssl.ca.location": "/ca.pem"}',
    )
    conf = services.kafka_conf(CommonSettings())
    assert conf["bootstrap.servers"] == "broker:9093"
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.password"] == "s3cret"


def test_the_redis_password_is_not_printed_with_the_settings(monkeypatch):
    monkeypatch.setenv("ANNREC_REDIS_URL", "redis://:hunter2@localhost:6379/0")
    settings = CommonSettings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert services.redis_url(settings) == "redis://:hunter2@localhost:6379/0"


@pytest.fixture
def redis_with_password(tmp_path):
    (port,) = _free_ports(1)
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
            "--requirepass",
            "s3cret",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                redis.Redis(port=port, password="s3cret").ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_auth_from_the_url(redis_with_password, monkeypatch):
    port = redis_with_password
    monkeypatch.setenv("ANNREC_REDIS_URL", f"redis://:s3cret@127.0.0.1:{port}/0")
    client = redis.Redis.from_url(services.redis_url(CommonSettings()))
    assert client.ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(f"redis://127.0.0.1:{port}/0").set("k", "v")


def test_a_wrong_redis_password_is_one_line_naming_the_setting(redis_with_password, tmp_path):
    from tests.cli import annrec

    port = redis_with_password
    env = {
        "ANNREC_REDIS_URL": f"redis://:not-it@127.0.0.1:{port}/0",
        "ANNREC_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # never reached: Redis is asked first
        "ANNREC_STORAGE": str(tmp_path / "s"),
    }
    result = annrec("status", extra_env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"annrec: error: Redis at 127.0.0.1:{port} refused the password: check "
        "ANNREC_REDIS_URL or `annrec stack up`"
    ]
    assert "not-it" not in result.stdout + result.stderr


def test_a_worker_refused_by_redis_stops_with_one_line(redis_with_password, tmp_path):
    from tests.cli import annrec

    port = redis_with_password
    env = {
        "ANNREC_REDIS_URL": f"redis://:not-it@127.0.0.1:{port}/0",
        "ANNREC_KAFKA_BOOTSTRAP": "127.0.0.1:1",  # never reached: Redis is checked first
        "ANNREC_STORAGE": str(tmp_path / "s"),
        "ANNREC_METRICS_PORT": "-1",
    }
    result = annrec("worker", extra_env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"annrec: error: Redis at 127.0.0.1:{port} refused the password: check "
        "ANNREC_REDIS_URL or `annrec stack up`"
    )
    assert "not-it" not in result.stdout + result.stderr
