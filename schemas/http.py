"""The gateway's HTTP contract beyond the events: its error bodies and the stream's body.

A request body is a request event (schemas.events) whose `kind` comes from the path and whose
`request_id` the gateway assigns when it is absent; a reply body is the reply event, as the
worker wrote it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.events import Request

HttpStatus = Literal[
    "invalid", "too_large", "timeout", "busy", "unavailable", "not_found", "conflict"
]


class HttpError(BaseModel):
    """Why the gateway answered without a reply: one sentence, and what to do next."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: HttpStatus = Field(
        description="invalid (422), too_large (413), timeout (504), busy (503: too many "
        "waiting), unavailable (503: Kafka did not take it), not_found (404), conflict (409: "
        "this request_id is already being waited for)"
    )
    error: str = Field(description="the reason, e.g. `k must be at most 1000 (got 5000)`")
    field: str | None = Field(None, description="the body field at fault (invalid)")
    request_id: str | None = None
    reply_url: str | None = Field(
        None, description="timeout: where the reply can be read once a worker wrote it"
    )


class StreamBody(BaseModel):
    """POST /v1/stream: many requests at once, each answered by an event as its reply comes."""

    model_config = ConfigDict(extra="forbid")

    requests: list[Request] = Field(
        min_length=1,
        description="request events (with `kind`); a request_id is assigned when absent",
    )
