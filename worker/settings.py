"""Worker settings: ANNREC_* environment variables, overridable by `annrec worker` flags."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from query_engine.personalize import DEFAULT_PERSONALIZATION, Combination, Personalization
from schemas import keys
from schemas.settings import CommonSettings


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


class WorkerSettings(CommonSettings):
    group_id: str = keys.CONSUMER_GROUP
    worker_id: str = Field(default_factory=_default_worker_id)
    batch_size: int = Field(256, ge=1, le=10_000, description="max messages per consume()")
    poll_timeout_s: float = Field(0.5, gt=0, le=1.0, description="<= 1 s keeps shutdown prompt")
    index_poll_interval_s: float = Field(2.0, gt=0)
    verify_checksums: bool = True
    cold_start: Literal["popular", "error"] = Field(
        "popular", description="an unknown user gets popular items, or an error reply"
    )
    # Longer than a failover (a crashed worker's partitions move within ~6 s), so a crash
    # does not turn answers into expiries; short enough that an overload sheds.
    default_deadline_ms: int = Field(
        10_000,
        ge=0,
        description="a request without deadline_ms that waited this long in the topic is "
        "answered status expired at once, not computed (overload sheds); 0: no default",
    )
    # Sustained overload (worker/shedding.py): shed past this wait instead of the deadline.
    # Off by default: shedding expires a request before it is validated, so a burst of
    # well-formed but unanswerable requests (an unknown item) gets `expired`, not a dead letter
    # with the reason (measured: the fuzz scenario's burst); users who prefer a fast recovery
    # from overload over that set it (1000 measured: docs/operations.md, Overload).
    shed_wait_ms: int = Field(
        0,
        ge=0,
        description="under sustained overload, a request without deadline_ms that waited this "
        "long is answered expired, not computed; 0 (default): never before the default deadline",
    )
    shed_after_s: float = Field(
        3.0,
        gt=0,
        description="overload is sustained when the freshest request of every batch has "
        "waited over shed_wait_ms for this long",
    )
    serve_from_cache: bool = Field(
        False, description="answer a repeated request for the same version from Redis"
    )
    reply_ttl_s: int = Field(keys.REPLY_TTL_S, ge=1)
    result_ttl_s: int = Field(keys.RESULT_TTL_S, ge=1)
    redis_timeout_s: float = Field(5.0, gt=0)
    metrics_port: int = Field(9464, ge=-1, le=65535, description="-1: off, 0: any free port")
    health_max_poll_gap_s: float = Field(30.0, gt=0)
    # A crashed worker's partitions wait this long before the group moves them (issue 21):
    # librdkafka heartbeats from a thread of its own, so a busy loop does not miss heartbeats
    # (a stuck one is caught by max.poll.interval.ms); 6 s is the broker's default minimum.
    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once",
        description="exactly-once: each batch's replies, dead letters and input offsets in one "
        "Kafka transaction (readers of the reply topic use isolation.level=read_committed)",
    )
    transaction_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="exactly-once: a crashed worker's open transaction is aborted by the broker "
        "after this (read_committed readers of its reply partitions wait until then)",
    )
    session_timeout_ms: int = Field(
        6_000, ge=1000, description="a silent worker is evicted after this (its partitions move)"
    )
    heartbeat_interval_ms: int = Field(
        1_500, ge=100, description="heartbeats to the group coordinator; < session timeout / 3"
    )
    instance_id: str | None = Field(
        None,
        description="static group membership (group.instance.id): set one per replica, stable "
        "across restarts (a pod name), and a restarted worker takes its partitions back at once",
    )
    consumer_config: dict[str, str | int | bool] = Field(
        default_factory=dict, description="extra librdkafka consumer properties, JSON"
    )
    producer_config: dict[str, str | int | bool] = Field(
        default_factory=dict, description="extra librdkafka producer properties, JSON"
    )
    blas_threads: int = Field(1, ge=1, description="BLAS threads for exact scans and reranks")
    stall_after_s: float = Field(
        60.0,
        gt=0,
        description="a partition with requests waiting and no progress this long "
        "makes /health fail",
    )
    heartbeat_ttl_s: int = Field(
        keys.HEARTBEAT_TTL_S, ge=2, description="a worker silent this long drops out of status"
    )
    shadow_fraction: float = Field(
        0.01, ge=0, le=1, description="share of answers re-checked by exact scans (live recall)"
    )
    shadow_cpu_share: float = Field(
        0.05,
        gt=0,
        le=1,
        description="most of one core the live-recall re-checks may use; samples beyond it "
        "are skipped (1 = no limit)",
    )
    shadow_queue: int = Field(1000, ge=1, description="samples waiting; beyond, they are dropped")
    shadow_window: int = Field(200, ge=1, description="samples the live recall is averaged over")
    item_updates_replay_s: float = Field(
        60.0, gt=0, description="longest wait for the item-updates replay at start (else fail)"
    )
    item_vectors_replay_s: float = Field(
        60.0, gt=0, description="longest wait for the item-vectors replay at start (else fail)"
    )
    fresh_max_items: int = Field(
        100_000,
        ge=1,
        description="items the fresh segment (upserts and removals since the version's build) "
        "may hold before a build is overdue: past it a log line and annrec_build_overdue say "
        "so; requests keep being answered (each scans the segment: its cost grows with it)",
    )
    # Real-time personalization (issue 23): each user's recent interactions, kept in Redis.
    history_length: int = Field(
        50, ge=1, le=10_000, description="recent interactions kept per user (the newest)"
    )
    history_max_age_s: int = Field(
        7 * 24 * 3600,
        ge=1,
        description="interactions older than this are forgotten (and an idle user's history "
        "expires)",
    )
    personalization: Combination = Field(
        DEFAULT_PERSONALIZATION.combination,
        description="how a user's factors and recent interactions combine: static (factors "
        "only), recent (interactions only), blend, prior (query_engine/personalize.py)",
    )
    personalization_weight: float = Field(
        DEFAULT_PERSONALIZATION.weight,
        ge=0,
        description="blend: the recent interactions' share (0..1); prior: its strength, times "
        "the version's regularization",
    )
    exclude_history: bool = Field(
        False, description="never recommend the items of a user's recent interactions"
    )
    echo: bool = Field(False, description="benchmarks only: reply without computing")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "annrec" / "versions",
        description="local copies of versions from object storage",
    )
    retry_backoff_s: float = Field(1.0, gt=0, description="wait after a failed write")
    models: list[str] = Field(
        default_factory=list,
        description="the models this worker serves, JSON list (empty: every model in storage)",
    )
    memory_budget_mb: int = Field(
        0,
        ge=0,
        description="most a worker maps of versions (their files' sizes), 0: no bound; LATESTs "
        "first, then experiment candidates and pins; requests beyond get an error reply",
    )
    max_pinned_versions: int = Field(
        4,
        ge=0,
        description="versions loaded for requests' pins (beyond LATEST, candidates and "
        "registered pins) kept at once; the least recently used is dropped",
    )

    @model_validator(mode="after")
    def _valid_personalization(self) -> WorkerSettings:
        self.personalization_policy  # noqa: B018 (refused at start, with the reason)
        return self

    @property
    def personalization_policy(self) -> Personalization:
        return Personalization(self.personalization, self.personalization_weight)
