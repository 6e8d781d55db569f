"""Kafka events: requests and interactions in, replies and dead letters out, index announcements.

All are JSON. Requests are a union discriminated by `kind`; unknown fields are refused so that a
typo ("item": "42") becomes a dead letter with a reason instead of a silently wrong answer.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    TypeAdapter,
    field_validator,
    model_validator,
)

from schemas.filters import Filter, check_shape
from schemas.manifest import (
    ATTRIBUTE_NAME_PATTERN,
    DEFAULT_MODEL,
    MODEL_PATTERN,
    VERSION_PATTERN,
    Manifest,
)

MAX_K = 1000
MAX_LIST = 1000  # exclude_items, recent_items
MAX_ALLOW_ITEMS = 10_000
MAX_DIM = 4096
MAX_SEARCH_K = 10_000_000
# An explained item carries this many history items: its largest contributions.
EXPLAIN_TOP = 3
# Larger payloads are dead-lettered before parsing: the largest valid request (1000 ids of 256
# characters, or a 4096-float vector) is well under it, and parsing megabytes of JSON per event
# would let one producer stall a partition. Kafka's own default message limit is also 1 MiB.
MAX_REQUEST_BYTES = 1 << 20
# A dead letter keeps this much of a payload: enough to debug it, and a dead letter must fit in a
# Kafka message itself, or the hostile event it records would block its partition.
DEAD_LETTER_PAYLOAD_BYTES = 64 << 10
# Factor values are small; a value past this would overflow float32 scores to inf (1e39 is
# finite as a Python float but not as float32), and inf is not JSON.
MAX_VECTOR_VALUE = 1e9
VectorValue = Annotated[FiniteFloat, Field(ge=-MAX_VECTOR_VALUE, le=MAX_VECTOR_VALUE)]


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


class MaxPer(_Event):
    """At most `n` results per value of the categorical attribute `attr` (crowding)."""

    attr: str = Field(pattern=ATTRIBUTE_NAME_PATTERN, description="a categorical attribute")
    n: int = Field(ge=1, le=MAX_K, description="results per value, at most")


class _RequestOptions(_Event):
    request_id: RequestId
    model: str = Field(
        DEFAULT_MODEL,
        pattern=MODEL_PATTERN,
        description="the model asked (its own catalogue and versions); an unknown model gets "
        "an error reply and a dead letter",
    )
    version: str | None = Field(
        None,
        pattern=VERSION_PATTERN,
        description="a pin: answered by exactly this version of the model (no experiment "
        "applies), or an error reply with the reason when the worker cannot load it",
    )
    subject: ExternalId | None = Field(
        None,
        description="who is asking when there is no user_id (a session or device id): the key "
        "an experiment assigns the request's arm by; without user_id or subject, the "
        "request is served by the control arm (LATEST) and counted in no arm",
    )
    k: int = Field(10, ge=1, le=MAX_K, description="results wanted")
    exclude_items: list[ExternalId] = Field(
        default_factory=list, max_length=MAX_LIST, description="never return these items"
    )
    search_k: int | None = Field(
        None,
        ge=1,
        le=MAX_SEARCH_K,
        description="override the version's tuned search_k: Annoy nodes to inspect "
        "(recommend: per norm band searched)",
    )
    deadline_ms: int | None = Field(
        None,
        ge=1,
        le=3_600_000,
        description="not computed (status `expired`) once this long past `sent_at`, or past "
        "the Kafka message timestamp when `sent_at` is absent",
    )
    sent_at: datetime | None = Field(None, description="when the caller sent it (UTC)")
    filter: Filter | None = Field(
        None,
        description="only items passing this expression over the version's item attributes: "
        '{"attr": a, "eq": v}, {"attr": a, "in": [v, ...]}, {"all": [..]}, {"any": [..]}, '
        '{"not": f}',
    )
    allow_items: list[ExternalId] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ALLOW_ITEMS,
        description="only these items (ids this version does not know are ignored)",
    )

    max_per: MaxPer | None = Field(
        None,
        description="at most n results per value of a categorical attribute, still k results "
        "when the catalogue has them: the best k under the constraint, in score order "
        "(items without a value are not limited)",
    )

    @field_validator("filter")
    @classmethod
    def _filter_shape(cls, value: Filter | None) -> Filter | None:
        return None if value is None else check_shape(value)


class SimilarItemsRequest(_RequestOptions):
    """Items most similar (cosine) to `item_id`, the item itself excluded."""

    kind: Literal["similar_items"] = "similar_items"
    item_id: ExternalId

    @property
    def subject_id(self) -> str | None:
        return self.item_id


class RecommendRequest(_RequestOptions):
    """Items with the largest inner product with a user vector, given as exactly one of:
    `user_id` (factors published with the version), `user_vector` (K floats), or
    `recent_items` (folded in with the ALS least-squares step: real-time personalization)."""

    kind: Literal["recommend"] = "recommend"
    user_id: ExternalId | None = None
    user_vector: list[VectorValue] | None = Field(None, min_length=1, max_length=MAX_DIM)
    recent_items: list[ExternalId] | None = Field(None, min_length=1, max_length=MAX_LIST)
    exclude_seen: bool = Field(
        False,
        description="exclude the recent items from the results: recent_items, or with user_id "
        "the user's history kept from the interactions topic",
    )
    explain: bool = Field(
        False,
        description=f"with recent_items: each scored item carries its {EXPLAIN_TOP} largest "
        "contributions from those items (`because`); other forms get `explain_refused`",
    )

    @model_validator(mode="after")
    def _one_user_form(self) -> RecommendRequest:
        given = [n for n in ("user_id", "user_vector", "recent_items") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of user_id, user_vector, recent_items"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.exclude_seen and self.user_vector:
            raise ValueError("exclude_seen needs recent_items or user_id (a vector has no items)")
        return self

    @property
    def subject_id(self) -> str | None:
        """The user, when the request names one (only those results are cached per subject)."""
        return self.user_id


Request = Annotated[SimilarItemsRequest | RecommendRequest, Field(discriminator="kind")]
REQUEST_ADAPTER: TypeAdapter[SimilarItemsRequest | RecommendRequest] = TypeAdapter(Request)


class Contribution(_Event):
    """One history item's part of an item's score (the ALS decomposition implicit's
    `explain` gives): the contributions of all of the user's items sum to the score."""

    item_id: str
    score: float = Field(description="this history item's part of the score")
    share: float = Field(
        description="score / the item's score: shares of all history items sum to 1 "
        "(a negative share pulled the score down)"
    )


class ScoredItem(_Event):
    item_id: str
    score: float | None = Field(
        description="exact cosine or inner product; null for cold-start popular items"
    )
    filled: bool = Field(False, description="from the popularity list, not the ANN search")
    because: list[Contribution] | None = Field(
        None,
        description=f"with explain: the {EXPLAIN_TOP} history items contributing most to the "
        "score, largest first",
    )


class Reply(_Event):
    """The answer to one request; `status` is `error`, with `error` set, when it was not served."""

    request_id: str
    status: Literal["ok", "error", "expired", "no_match", "partial"] = Field(
        description="no_match: the filter (and exclusions) leave no item in this version; "
        "items is empty, nothing failed. partial: max_per leaves fewer than k items (all "
        "that meet it), nothing failed"
    )
    kind: Literal["similar_items", "recommend"] | None = None
    subject_id: str | None = None
    items: list[ScoredItem] = Field(default_factory=list)
    model: str | None = Field(None, description="the model that answered")
    index_version: str | None = Field(None, description="the version that computed the reply")
    variant: str | None = Field(
        None, description="the experiment arm the request was assigned to, when one runs"
    )
    pinned: bool = Field(False, description="answered by the version the request pinned")
    error: str | None = None
    fallback: Literal["cold_start"] | None = Field(
        None, description="cold_start: the user is unknown to this version; popular items"
    )
    unknown_items: list[str] = Field(
        default_factory=list, description="recent_items this version does not know (ignored)"
    )
    filter_passing: int | None = Field(
        None, description="items of this version passing the request's filter and allow list"
    )
    max_per: MaxPer | None = Field(None, description="the request's max_per, when it had one")
    explain_refused: str | None = Field(
        None, description="why the items carry no explanations, when explain was asked"
    )
    history_events: int | None = Field(
        None,
        description="recommend by user_id: how many of the user's recent interactions (from "
        "the interactions topic) personalised this reply",
    )
    worker_id: str
    served_at: datetime = Field(default_factory=utc_now)
    from_cache: bool = Field(False, description="answered from Redis, computed earlier")

    @property
    def filtered(self) -> bool:
        return self.filter_passing is not None

    @property
    def unconstrained(self) -> bool:
        """Neither filtered nor under max_per: what the per-subject result key holds."""
        return not self.filtered and self.max_per is None


class DeadLetter(_Event):
    """An event the worker could not serve, with the reason and the original bytes (base64)."""

    reason: str
    request_id: str | None = None
    source_topic: str
    source_partition: int
    source_offset: int
    key_b64: str | None = None
    payload_b64: str = Field(
        description=f"the original bytes, base64; only the first {DEAD_LETTER_PAYLOAD_BYTES} "
        "when payload_bytes is larger"
    )
    payload_bytes: int = Field(0, ge=0, description="size of the original payload")
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
    model: str = Field(DEFAULT_MODEL, pattern=MODEL_PATTERN)
    announced_at: datetime = Field(default_factory=utc_now)


class ItemUpdate(_Event):
    """A real-time change of one item's boolean attribute (availability: `in_stock`), on the
    compacted item-updates topic, keyed `<attr>:<item_id>`. Every worker applies it between two
    batches; the next version the builder publishes folds it in."""

    item_id: ExternalId
    attr: str = Field("in_stock", pattern=ATTRIBUTE_NAME_PATTERN)
    value: bool
    updated_at: datetime = Field(default_factory=utc_now)

    @property
    def key(self) -> str:
        return f"{self.attr}:{self.item_id}"


# Attribute values an item-vector event may carry: a category's value (text; integers become
# their decimal text, as in an attribute table) or a boolean attribute's.
AttributeValue = Annotated[str, BeforeValidator(_id_to_str), Field(min_length=1, max_length=256)]


class ItemVector(_Event):
    """An item added, changed or removed between builds, on the compacted item-vectors topic,
    keyed by `item_id` (the newest event per item is what compaction keeps). An upsert carries
    the item's factor vector (K floats, as a `user_vector`) and optionally its attributes; a
    removal is `removed: true` (an event, not a null tombstone: Kafka deletes tombstones after
    delete.retention.ms, and a worker started after that would serve the item again). Every
    worker serves upserts from a small exact segment beside its version within a batch; the
    next build folds them into the version."""

    item_id: ExternalId
    vector: list[VectorValue] | None = Field(
        None, min_length=1, max_length=MAX_DIM, description="the item's factors (K floats)"
    )
    attributes: dict[
        Annotated[str, Field(pattern=ATTRIBUTE_NAME_PATTERN)], bool | AttributeValue
    ] = Field(
        default_factory=dict,
        max_length=64,
        description="category values (text) and boolean attributes the version has; an "
        "attribute not given has no value (it passes no filter on it)",
    )
    users: list[ExternalId] | None = Field(
        None,
        min_length=1,
        max_length=MAX_LIST,
        description="instead of a vector: users who interacted with the item (a new item's "
        "first ones); its vector is folded in by the ALS item step over their factors",
    )
    removed: bool = Field(False, description="true: the item is gone (never returned again)")
    updated_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _upsert_or_removal(self) -> ItemVector:
        if self.removed and (self.vector is not None or self.users or self.attributes):
            raise ValueError("a removal carries no vector, users or attributes")
        if not self.removed and (self.vector is None) == (self.users is None):
            raise ValueError("give a vector or users (an upsert), or removed: true")
        return self

    @property
    def key(self) -> str:
        return self.item_id


def parse_item_vector(raw: bytes) -> ItemVector:
    """Bytes -> item-vector event; raises pydantic.ValidationError (or ValueError)."""
    return ItemVector.model_validate_json(raw)


MAX_INTERACTION_WEIGHT = 1e6


class Interaction(_Event):
    """What a user just did (a view, a click, a purchase), on the interactions topic, keyed by
    `user_id` (one user's events stay in order on one partition). Workers keep each user's
    recent ones in Redis and fold them into `recommend` by `user_id`.

    The same event delivered twice (a producer retry, a replay after a crash) counts once: its
    identity is `event_id`, or, without one, its content (user, item, type, weight, timestamp)."""

    event_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        None, description="the producer's id of the event; absent: the content identifies it"
    )
    user_id: ExternalId
    item_id: ExternalId
    type: str = Field(
        "interaction",
        min_length=1,
        max_length=64,
        pattern=ATTRIBUTE_NAME_PATTERN,
        description="what the user did (view, click, purchase, ...); recorded, not interpreted",
    )
    weight: float = Field(
        1.0,
        gt=0,
        le=MAX_INTERACTION_WEIGHT,
        allow_inf_nan=False,
        description="how much it counts: the ALS weight of the interaction (a count for a "
        "log of plays or clicks)",
    )
    timestamp: datetime = Field(
        description="when the user did it (ISO 8601 with a time zone); orders the history and "
        "ages it out"
    )

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp needs a time zone (e.g. 2026-11-25T20:55:43Z)")
        return value.astimezone(UTC)

    @property
    def identity(self) -> str:
        """What makes two deliveries the same event (see the class docstring)."""
        if self.event_id is not None:
            return f"id:{self.event_id}"
        content = "\x1f".join(
            (self.user_id, self.item_id, self.type, repr(self.weight), self.timestamp.isoformat())
        )
        return "sha:" + hashlib.sha256(content.encode()).hexdigest()[:32]


def parse_interaction(raw: bytes) -> Interaction:
    """Bytes -> interaction; raises pydantic.ValidationError (or ValueError) with the reason."""
    return Interaction.model_validate_json(raw)


def parse_request(raw: bytes) -> SimilarItemsRequest | RecommendRequest:
    """Bytes -> request; raises pydantic.ValidationError (or UnicodeDecodeError) with the reason."""
    return REQUEST_ADAPTER.validate_json(raw)
