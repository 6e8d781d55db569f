"""Integration fixtures: every test gets its own topics, consumer group and storage, and starts
without the users' histories earlier tests left in the shared Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from adapters.topics import ensure_topics, topic_specs
from schemas import keys
from schemas.settings import prefixed_topics
from worker.settings import WorkerSettings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def kafka_conf(services) -> dict[str, str]:
    return {"bootstrap.servers": services.kafka_bootstrap}


@pytest.fixture
def settings(tmp_path, services, kafka_conf) -> WorkerSettings:
    run = uuid.uuid4().hex[:8]
    s = WorkerSettings(
        kafka_bootstrap=services.kafka_bootstrap,
        redis_url=services.redis_url,
        storage=str(tmp_path / "storage"),
        **prefixed_topics(f"t{run}"),
        group_id=f"g{run}",
        worker_id=f"w{run}",
        index_poll_interval_s=0.5,
        retry_backoff_s=0.3,
        metrics_port=0,  # any free port: several workers share this process
        cache_dir=tmp_path / "cache",
    )
    ensure_topics(kafka_conf, topic_specs(s))
    return s


@pytest.fixture(autouse=True)
def no_user_histories(request: pytest.FixtureRequest) -> Iterator[None]:
    """Users' recent histories live under one Redis key per user id, shared by every test on this
    Redis: a test that sent interactions for u3 would turn another test's "recommend for u3" into a
    personalised answer and its exact top-k check into an order-dependent failure. Cleared before
    each test that uses the services (the others never start them)."""
    if "services" in request.fixturenames:
        client = redis.Redis.from_url(request.getfixturevalue("services").redis_url)
        stale = list(client.scan_iter(match=keys.history_key("*"), count=1000))
        if stale:
            client.delete(*stale)
        client.close()
    yield
