"""Settings both sides read: where Kafka, Redis and the index storage are, and the topic names.

Every field is an environment variable `ANNREC_<FIELD>` (e.g. ANNREC_KAFKA_BOOTSTRAP); CLI flags
override them. `kafka_config` passes librdkafka properties through verbatim (SASL/SSL etc.) as JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict, cast

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas import keys


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=keys.ENV_PREFIX, extra="ignore")

    kafka_bootstrap: str | None = Field(
        None, description="host:port list; unset = the local stack from `annrec stack up`"
    )
    kafka_config: dict[str, str] = Field(
        default_factory=dict, description="extra librdkafka properties, JSON"
    )
    redis_url: SecretStr | None = Field(None, description="redis://...; unset = the local stack")
    storage: str = Field(
        "annrec-data", description="index storage: a directory, or s3://bucket/prefix"
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec options for object storage, JSON"
    )
    stack_dir: Path = Field(
        Path.home() / ".cache" / "annrec" / "stack", description="state of `annrec stack`"
    )
    topic_requests: str = keys.TOPIC_REQUESTS
    topic_replies: str = keys.TOPIC_REPLIES
    topic_dead_letters: str = keys.TOPIC_DEAD_LETTERS
    topic_index_versions: str = keys.TOPIC_INDEX_VERSIONS
    topic_item_updates: str = keys.TOPIC_ITEM_UPDATES
    topic_item_vectors: str = keys.TOPIC_ITEM_VECTORS
    topic_interactions: str = keys.TOPIC_INTERACTIONS


class TopicNames(TypedDict):
    """Every topic field, as keyword arguments of the settings: `CommonSettings(**names)`."""

    topic_requests: str
    topic_replies: str
    topic_dead_letters: str
    topic_index_versions: str
    topic_item_updates: str
    topic_item_vectors: str
    topic_interactions: str


TOPIC_FIELDS = tuple(TopicNames.__annotations__)


def prefixed_topics(prefix: str) -> TopicNames:
    """Topic names of their own (`<prefix>.requests`, ...), for tests, benchmarks and chaos runs
    that must not see each other's events."""
    names = {f: f"{prefix}.{f.removeprefix('topic_').replace('_', '-')}" for f in TOPIC_FIELDS}
    return cast(TopicNames, names)


def topic_env(settings: CommonSettings) -> dict[str, str]:
    """The environment variables that give a child process the same topic names."""
    return {f"{keys.ENV_PREFIX}{f.upper()}": getattr(settings, f) for f in TOPIC_FIELDS}
