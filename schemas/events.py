"""Kafka events: requests in, replies and dead letters out, index announcements.

All are JSON. Requests are a union discriminated by `kind`; unknown fields are refused so that a
typo ("item": "42") becomes a dead letter with a reason instead of a silently wrong answer.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter

from schemas.manifest import Manifest

MAX_K = 1000


def _id_to_str(value: object) -> object:
    # Ids may be sent as JSON numbers; they are looked up as strings. Booleans are not ids.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


ExternalId = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=256)]
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimilarItemsRequest(_Event):
    """Items most similar (cosine) to `item_id`, the item itself excluded."""

    kind: Literal["similar_items"] = "similar_items"
    request_id: RequestId
    item_id: ExternalId
    k: int = Field(10, ge=1, le=MAX_K)

    @property
    def subject_id(self) -> str:
        return self.item_id


class RecommendRequest(_Event):
    """Items with the largest inner product with the factors of `user_id`."""

    kind: Literal["recommend"] = "recommend"
    request_id: RequestId
    user_id: ExternalId
    k: int = Field(10, ge=1, le=MAX_K)

    @property
    def subject_id(self) -> str:
        return self.user_id


Request = Annotated[SimilarItemsRequest | RecommendRequest, Field(discriminator="kind")]
REQUEST_ADAPTER: TypeAdapter[SimilarItemsRequest | RecommendRequest] = TypeAdapter(Request)


class ScoredItem(_Event):
    item_id: str
    score: float


class Reply(_Event):
    """The answer to one request; `status` is `error`, with `error` set, when it was not served."""

    request_id: str
    status: Literal["ok", "error"]
    kind: Literal["similar_items", "recommend"] | None = None
    subject_id: str | None = None
    items: list[ScoredItem] = Field(default_factory=list)
    index_version: str | None = None
    error: str | None = None
    worker_id: str
    served_at: datetime = Field(default_factory=utc_now)


class DeadLetter(_Event):
    """An event the worker could not serve, with the reason and the original bytes (base64)."""

    reason: str
    request_id: str | None = None
    source_topic: str
    source_partition: int
    source_offset: int
    key_b64: str | None = None
    payload_b64: str
    worker_id: str
    failed_at: datetime = Field(default_factory=utc_now)

    @staticmethod
    def encode(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode("ascii")

    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)


class IndexAnnounced(_Event):
    """Published on the index-versions topic after a version is in storage and LATEST names it."""

    version: str
    manifest: Manifest
    announced_at: datetime = Field(default_factory=utc_now)


def parse_request(raw: bytes) -> SimilarItemsRequest | RecommendRequest:
    """Bytes -> request; raises pydantic.ValidationError (or UnicodeDecodeError) with the reason."""
    return REQUEST_ADAPTER.validate_json(raw)
