"""Where Kafka and Redis are: the environment variables win; otherwise the local stack, if up."""

from __future__ import annotations

from schemas import keys
from schemas.errors import AnnrecError
from schemas.settings import CommonSettings
from worker.stack import LocalStack


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


def redis_url(settings: CommonSettings) -> str:
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    local = LocalStack(settings.stack_dir).running()
    if local is None:
        raise AnnrecError(f"no Redis: set {keys.ENV_REDIS_URL} or start one with `annrec stack up`")
    return local.redis_url
