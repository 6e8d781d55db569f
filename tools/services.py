"""Where Kafka and Redis are: the environment variables win; otherwise the local stack, if up."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient

from adapters.kafka_log import client_config
from adapters.topics import list_topics
from schemas import keys
from schemas.errors import AnnrecError
from schemas.settings import CommonSettings
from tools.stack import LocalStack


def kafka_conf(settings: CommonSettings) -> dict[str, str]:
    bootstrap = settings.kafka_bootstrap
    if not bootstrap:
        local = LocalStack(settings.stack_dir).running()
        if local is None:
            raise AnnrecError(
                f"no Kafka: set {keys.ENV_KAFKA_BOOTSTRAP} or start one with `annrec stack up`"
            )
        bootstrap = local.kafka_bootstrap
    return {"bootstrap.servers": bootstrap, **settings.kafka_config}


def check_kafka(conf: dict[str, str], timeout_s: float = 5.0) -> None:
    """AnnrecError, naming the bootstrap and the setting to check, when Kafka does not answer."""
    list_topics(AdminClient(client_config(conf)), conf, timeout_s)


def redis_url(settings: CommonSettings) -> str:
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    local = LocalStack(settings.stack_dir).running()
    if local is None:
        raise AnnrecError(f"no Redis: set {keys.ENV_REDIS_URL} or start one with `annrec stack up`")
    return local.redis_url


@dataclass
class Endpoints:
    kafka: dict[str, str]
    redis_url: str
    stack: LocalStack | None  # the local stack, when this context started it


@contextmanager
def configured_or_local() -> Iterator[Endpoints]:
    """The configured services (ANNREC_KAFKA_BOOTSTRAP / ANNREC_REDIS_URL), or the local stack:
    started for the duration when it was not running, and stopped after (benchmarks, chaos)."""
    settings = CommonSettings()
    stack = LocalStack(settings.stack_dir)
    started = False
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        started = stack.running() is None
        stack.up()
    try:
        yield Endpoints(kafka_conf(settings), redis_url(settings), stack if started else None)
    finally:
        if started:
            stack.down()
