"""HTTP bodies -> request events, or the reason they cannot be one (a 422 naming the field).
No I/O: the limits are the events' own (schemas.events), plus the gateway's deadline rules."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from schemas.errors import describe
from schemas.events import RecommendRequest, SimilarItemsRequest

AnyRequest = SimilarItemsRequest | RecommendRequest
# The model of each kind: validating with it (not the union) keeps a field's name plain, `k`
# rather than `recommend.k`.
MODELS: dict[str, type[AnyRequest]] = {
    "recommend": RecommendRequest,
    "similar_items": SimilarItemsRequest,
}
# Fields the gateway fills when absent or null.
_DEFAULTED = ("request_id", "deadline_ms", "sent_at")
Kind = Literal["similar_items", "recommend"]
_OBJECT: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])
_LIST: TypeAdapter[list[Any]] = TypeAdapter(list[Any])
# A 422 names at most this many of a body's errors (as a dead letter's reason does).
REASON_ERRORS = 5


class Invalid(Exception):
    """A body refused: `reason` in the events' wording, `field` the first field at fault."""

    def __init__(
        self, reason: str, field: str | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason, self.field, self.request_id = reason, field, request_id


@dataclass(frozen=True)
class Deadlines:
    default_ms: int  # for a request without deadline_ms
    max_ms: int  # a larger deadline_ms is refused


def parse_body(raw: bytes, kind: Kind | None, deadlines: Deadlines) -> AnyRequest:
    """One request from an HTTP body: JSON object, `kind` from the path (the body may repeat
    it), a request_id when absent, and the gateway's deadline."""
    try:
        doc = _OBJECT.validate_json(raw)
    except ValidationError as exc:
        raise Invalid(describe(exc, whole="body"), _field(exc)) from exc
    return parse_doc(doc, kind, deadlines)


def parse_stream(raw: bytes, max_requests: int) -> list[Any]:
    """The `requests` list of a stream body, its items not yet parsed (each gets its own error
    event, so one bad item does not refuse the rest)."""
    try:
        doc = _OBJECT.validate_json(raw)
        items = _LIST.validate_python(doc.get("requests"))
    except ValidationError as exc:
        raise Invalid(describe(exc, whole="body"), "requests") from exc
    unknown = sorted(set(doc) - {"requests"})
    if unknown:
        raise Invalid(f"{unknown[0]} is not a known field", unknown[0])
    if not 1 <= len(items) <= max_requests:
        raise Invalid(
            f"requests must have 1 to {max_requests} items (got {len(items)})", "requests"
        )
    return items


def parse_doc(doc: Any, kind: Kind | None, deadlines: Deadlines) -> AnyRequest:
    """One request from a parsed JSON value (kind None: the value must say which)."""
    if not isinstance(doc, dict):
        raise Invalid("a request must be a JSON object")
    request_id = doc.get("request_id")
    request_id = request_id if isinstance(request_id, str) else None
    if kind is not None:
        if doc.get("kind", kind) != kind:
            raise Invalid(f"kind must be {kind!r} at this path", "kind", request_id)
        doc = {**doc, "kind": kind}
    model = MODELS.get(str(doc.get("kind")))
    if model is None:
        raise Invalid(f"kind must be one of {', '.join(map(repr, MODELS))}", "kind", request_id)
    deadline = doc.get("deadline_ms")
    if isinstance(deadline, int) and not isinstance(deadline, bool) and deadline > deadlines.max_ms:
        raise Invalid(
            f"deadline_ms must be at most {deadlines.max_ms} through the gateway (got {deadline})",
            "deadline_ms",
            request_id,
        )
    filled = {k: v for k, v in doc.items() if v is not None or k not in _DEFAULTED}
    # Computed only when missing (a uuid and a clock read per request otherwise, on the hot path).
    if filled.get("request_id") is None:
        filled["request_id"] = uuid.uuid4().hex
    if filled.get("deadline_ms") is None:
        filled["deadline_ms"] = deadlines.default_ms
    if filled.get("sent_at") is None:
        # The worker measures the deadline from here: the request expires for both at once.
        filled["sent_at"] = datetime.now(UTC).isoformat()
    try:
        return model.model_validate(filled)
    except ValidationError as exc:
        raise Invalid(describe(exc, REASON_ERRORS, whole="body"), _field(exc), request_id) from exc


def wait_s(request: AnyRequest, default_ms: int) -> float:
    """How long the gateway waits for this request's reply."""
    return (request.deadline_ms or default_ms) / 1000


def _field(exc: ValidationError) -> str | None:
    errors = exc.errors(include_url=False)
    loc = errors[0]["loc"] if errors else ()
    return ".".join(str(p) for p in loc) or None
