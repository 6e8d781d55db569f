"""Gateway settings: ANNREC_* environment variables, overridable by `annrec gateway` flags."""

from __future__ import annotations

from pydantic import Field

from schemas import keys
from schemas.settings import CommonSettings


class GatewaySettings(CommonSettings):
    gateway_host: str = Field(
        "127.0.0.1", description="address to listen on (0.0.0.0: every interface)"
    )
    gateway_port: int = Field(8080, ge=0, le=65535, description="HTTP port (0: any free port)")
    # Shorter than the worker's default deadline (10 s): a person behind a page gives up
    # sooner, and the reply stays readable from Redis at GET /v1/replies/<id> after a 504.
    gateway_deadline_ms: int = Field(
        5_000,
        ge=1,
        description="how long a request without deadline_ms is waited for before a 504 (also "
        "sent as its deadline_ms, so a worker does not compute what nobody waits for)",
    )
    gateway_max_deadline_ms: int = Field(
        60_000,
        ge=1,
        description="a larger deadline_ms is refused (422): an HTTP connection is not held longer",
    )
    gateway_max_waiting: int = Field(
        10_000,
        ge=1,
        description="requests waiting for their reply at once; beyond, 503 with Retry-After",
    )
    gateway_stream_max: int = Field(
        1_000, ge=1, description="requests in one POST /v1/stream (Server-Sent Events)"
    )
    gateway_stream_max_bytes: int = Field(
        16 << 20, ge=1024, description="body size limit of POST /v1/stream"
    )
    gateway_read_committed: bool = Field(
        False,
        description="read replies as read_committed (workers running exactly-once: each "
        "reply is seen once, when its transaction commits)",
    )
    # The workers' group: /v1/status reads their heartbeats (serving version, live recall).
    group_id: str = keys.CONSUMER_GROUP
    redis_timeout_s: float = Field(2.0, gt=0)
