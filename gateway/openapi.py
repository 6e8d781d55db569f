"""The gateway's OpenAPI document, its bodies taken from the same pydantic models as the
AsyncAPI document of the events (schemas/events.py), so the two cannot drift.

The request bodies are read by the gateway itself (size limit first, then the events' own
validation with the events' wording), so FastAPI does not see them; they are added here. An HTTP
body differs from the event in two ways, both written into the schema: `kind` comes from the
path, and `request_id` is assigned by the gateway when absent.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from schemas.events import RecommendRequest, Reply, SimilarItemsRequest
from schemas.http import HttpError, StreamBody

_REF = "#/components/schemas/{model}"
_BODIES: dict[str, type[BaseModel]] = {
    "recommend": RecommendRequest,
    "similar_items": SimilarItemsRequest,
}


def reply_responses(not_found: bool = False) -> dict[int | str, dict[str, Any]]:
    """The responses of a route answering with a reply."""
    responses: dict[int | str, dict[str, Any]] = {
        200: {"model": Reply, "description": "the reply: status ok, no_match or partial"},
        413: {"model": HttpError, "description": "body over the size limit"},
        422: {
            "model": HttpError | Reply,
            "description": "an invalid body (HttpError naming the field), or the worker's error "
            "reply (Reply, status error: the reason in `error`)",
        },
        503: {"model": HttpError, "description": "busy or Kafka unavailable"},
        504: {
            "model": HttpError | Reply,
            "description": "no reply within the deadline (HttpError with reply_url), or the "
            "worker's expired reply",
        },
    }
    if not_found:
        return {200: responses[200], 404: {"model": HttpError}, 503: responses[503]}
    return responses


def add_request_bodies(app: FastAPI) -> None:
    """app.openapi() returns the document with the request bodies of the POST routes."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            for operations in doc["paths"].values():
                post = operations.get("post")
                if post is None:
                    continue
                kind = post.pop("x-annrec-kind", None)
                if kind is not None:
                    post["requestBody"] = _body(_BODIES[kind], components, http_body=True)
                if post.pop("x-annrec-stream", None):
                    post["requestBody"] = _body(StreamBody, components, http_body=False)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _body(model: type[BaseModel], components: dict[str, Any], http_body: bool) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF)
    for name, definition in schema.pop("$defs", {}).items():
        components.setdefault(name, definition)
    name = model.__name__ + ("Body" if http_body else "")
    if http_body:
        schema = _as_http_body(schema)
    components[name] = schema
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=name)}}},
    }


def _as_http_body(schema: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(schema)
    body["required"] = [f for f in body.get("required", []) if f != "request_id"]
    props = body["properties"]
    props["request_id"] = {
        **props["request_id"],
        "description": "assigned by the gateway when absent (returned in the reply and the "
        "X-Request-Id header)",
    }
    props["kind"] = {**props["kind"], "description": "optional: the path says it"}
    props["deadline_ms"] = {
        **props["deadline_ms"],
        "description": "how long the gateway waits for the reply (504 after it); also the "
        "event's deadline. Default ANNREC_GATEWAY_DEADLINE_MS, at most "
        "ANNREC_GATEWAY_MAX_DEADLINE_MS",
    }
    return body
