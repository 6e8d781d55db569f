"""The gateway's HTTP application (FastAPI): routes, limits, errors; the bridge does the Kafka.

    POST /v1/recommend, POST /v1/similar-items   a request event as JSON -> its reply
    POST /v1/stream                              many requests -> Server-Sent Events, one per reply
    GET  /v1/replies/{request_id}                a reply already written to Redis
    GET  /v1/status                              serving versions, live recall, freshness
    GET  /v1/models                              models, versions, experiment arms, pins
    GET  /healthz, GET /metrics                  like the worker's /health and /metrics
    GET  /explorer/                              the explorer page (static files, no build step)

A reply is answered with the exact bytes the worker put on the reply topic; the HTTP status
follows its `status`: ok, no_match and partial 200, error 422 (the worker refused the request
for this version: the reason is in `error`), expired 504. Anything the gateway answers itself is
an HttpError body (schemas/http.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter, ValidationError
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from adapters.redis_client import redis_refusal
from adapters.version_storage import ModelCatalog, VersionStorage, open_storage
from gateway.bridge import AnyRequest, KafkaBridge, NotSent
from gateway.metrics import GatewayMetrics
from gateway.openapi import add_request_bodies, reply_responses
from gateway.pending import AlreadyWaiting, UnreadableReply
from gateway.requests import Deadlines, Invalid, Kind, parse_body, parse_doc, parse_stream, wait_s
from gateway.settings import GatewaySettings
from gateway.status import models_status, serving_status
from schemas import keys
from schemas.errors import AnnrecError
from schemas.events import MAX_REQUEST_BYTES, RequestId
from schemas.http import HttpError, HttpStatus

STATIC = Path(__file__).parent / "static"
REPLY_CODES = {"ok": 200, "no_match": 200, "partial": 200, "error": 422, "expired": 504}
ERROR_CODES: dict[HttpStatus, int] = {
    "invalid": 422,
    "too_large": 413,
    "timeout": 504,
    "busy": 503,
    "unavailable": 503,
    "not_found": 404,
    "conflict": 409,
}
# /healthz fails when the reply thread has not polled for this long (it polls every 0.1 s).
MAX_POLL_GAP_S = 5.0
_REQUEST_ID: TypeAdapter[str] = TypeAdapter(RequestId)


class Refused(Exception):
    """An answer the gateway gives itself (no reply): an HttpError and its HTTP code."""

    def __init__(self, body: HttpError, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.error)
        self.body, self.headers = body, headers

    def response(self) -> JSONResponse:
        return JSONResponse(
            self.body.model_dump(exclude_none=True),
            ERROR_CODES[self.body.status],
            headers=self.headers,
        )


class Gateway:
    """One replica's state (bridge, metrics, Redis, storage) and its route handlers."""

    def __init__(
        self,
        settings: GatewaySettings,
        kafka_conf: dict[str, str],
        redis_url: str,
        storage: VersionStorage | None = None,
    ) -> None:
        self.settings = s = settings
        self.bridge = KafkaBridge(
            kafka_conf,
            s.topic_requests,
            s.topic_replies,
            read_committed=s.gateway_read_committed,
        )
        self.metrics = GatewayMetrics(self.bridge)
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=s.redis_timeout_s)
        self.catalogue = storage or open_storage(s.storage, s.storage_options)
        self.models = ModelCatalog(s.storage, s.storage_options)
        self.deadlines = Deadlines(s.gateway_deadline_ms, s.gateway_max_deadline_ms)

    async def ask(self, request: AnyRequest) -> Response:
        """Send one request and answer with its reply, or refuse (busy, timeout, ...)."""
        rid = request.request_id
        started = time.perf_counter()
        self._check_room(1, rid)
        wait = wait_s(request, self.settings.gateway_deadline_ms)
        try:
            delivered = await self.bridge.ask(request, wait)
        except TimeoutError as exc:
            self.metrics.timeouts.inc()
            raise Refused(
                HttpError(
                    status="timeout",
                    error=f"no reply within {round(wait * 1000)} ms (deadline_ms): are workers "
                    "running and keeping up? A reply written later can be read at reply_url",
                    request_id=rid,
                    reply_url=f"/v1/replies/{rid}",
                )
            ) from exc
        except AlreadyWaiting as exc:
            raise Refused(
                HttpError(
                    status="conflict",
                    error=f"a request with request_id {rid} is already waiting for its reply",
                    field="request_id",
                    request_id=rid,
                )
            ) from exc
        except (NotSent, UnreadableReply) as exc:
            raise Refused(HttpError(status="unavailable", error=str(exc), request_id=rid)) from exc
        now = time.perf_counter()
        took_ms, handover_ms = (now - started) * 1000, (now - delivered.read_at) * 1000
        self.metrics.handover.observe(handover_ms / 1000)
        # gateway: from the parsed body to the reply (produce, Kafka, worker, reply topic);
        # handover: its last part, from the reply thread reading it to this request resumed.
        timing = f"gateway;dur={took_ms:.1f}, handover;dur={handover_ms:.2f}"
        return Response(
            delivered.raw,
            REPLY_CODES[delivered.reply.status],
            media_type="application/json",
            headers={"X-Request-Id": rid, "Server-Timing": timing},
        )

    def _check_room(self, n: int, request_id: str | None = None) -> None:
        waiting = len(self.bridge.pending)
        if waiting + n > self.settings.gateway_max_waiting:
            raise Refused(
                HttpError(
                    status="busy",
                    error=f"{waiting} requests are waiting already (at most "
                    f"{self.settings.gateway_max_waiting}): retry shortly",
                    request_id=request_id,
                ),
                {"Retry-After": "1"},
            )

    def one(self, kind: Kind) -> Callable[[Request], Awaitable[Response]]:
        """The handler of POST /v1/<kind>: one request event, answered with its reply."""

        async def handler(request: Request) -> Response:
            raw = await read_body(request, MAX_REQUEST_BYTES)
            try:
                parsed = parse_body(raw, kind, self.deadlines)
            except Invalid as exc:
                raise Refused(_invalid(exc)) from exc
            return await self.ask(parsed)

        return handler

    async def stream(self, request: Request) -> Response:
        raw = await read_body(request, self.settings.gateway_stream_max_bytes)
        try:
            items = parse_stream(raw, self.settings.gateway_stream_max)
        except Invalid as exc:
            raise Refused(_invalid(exc)) from exc
        self._check_room(len(items))
        return EventSourceResponse(_stream_events(items, self.deadlines, self.ask))

    def reply(self, request_id: str) -> Response:
        """A reply written to Redis (annrec:reply:<request_id>, kept for the reply TTL)."""
        try:
            _REQUEST_ID.validate_python(request_id)
        except ValidationError as exc:
            raise Refused(
                HttpError(
                    status="invalid",
                    error="request_id must be 1-128 printable ASCII characters without spaces",
                    field="request_id",
                )
            ) from exc
        try:
            raw = self.redis.get(keys.reply_key(request_id))
        except redis.RedisError as exc:
            raise Refused(
                HttpError(status="unavailable", error=redis_refusal(self.redis_url, exc))
            ) from exc
        if raw is None:
            raise Refused(
                HttpError(
                    status="not_found",
                    error=f"no reply to {request_id} in Redis: not answered yet, or older than "
                    "the reply TTL",
                    request_id=request_id,
                )
            )
        assert isinstance(raw, bytes)
        return Response(raw, 200, media_type="application/json")

    def status(self) -> Response:
        """Serving versions (workers, age, live recall), LATEST, whether every worker serves it."""
        try:
            doc = serving_status(self.redis, self.settings.group_id, self.catalogue)
        except redis.RedisError as exc:
            raise Refused(
                HttpError(status="unavailable", error=redis_refusal(self.redis_url, exc))
            ) from exc
        except (OSError, AnnrecError) as exc:
            raise Refused(
                HttpError(status="unavailable", error=f"storage {self.settings.storage}: {exc}")
            ) from exc
        return JSONResponse(doc)

    def model_list(self) -> Response:
        """Models, their versions, experiment arms and pins (the explorer compares two)."""
        try:
            doc = models_status(self.models)
        except (OSError, AnnrecError) as exc:
            raise Refused(
                HttpError(status="unavailable", error=f"storage {self.settings.storage}: {exc}")
            ) from exc
        return JSONResponse(doc)

    def healthz(self) -> JSONResponse:
        """200 while the reply consumer polls; 503 (with why) otherwise."""
        gap = time.monotonic() - self.bridge.counters.last_poll
        ok = self.bridge.alive and gap <= MAX_POLL_GAP_S
        doc = {
            "ok": ok,
            "reply_consumer_alive": self.bridge.alive,
            "seconds_since_poll": round(gap, 1),
            "waiting": len(self.bridge.pending),
        }
        return JSONResponse(doc, 200 if ok else 503)

    def prometheus(self) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def counted(
        self, name: str, handler: Callable[..., Awaitable[Response] | Response]
    ) -> Callable[..., Awaitable[Response]]:
        """The handler with its refusals turned into responses, counted and timed (a sync
        handler runs on the thread pool: Redis and storage calls block)."""

        @functools.wraps(handler)
        async def wrapped(*args: Any, **kwargs: Any) -> Response:
            started = time.perf_counter()
            try:
                if asyncio.iscoroutinefunction(handler):
                    response = await handler(*args, **kwargs)
                else:
                    response = await run_in_threadpool(handler, *args, **kwargs)
            except Refused as refused:
                response = refused.response()
            self.metrics.requests.labels(name, str(response.status_code)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - started)
            return response

        return wrapped


def create_app(
    settings: GatewaySettings,
    kafka_conf: dict[str, str],
    redis_url: str,
    storage: VersionStorage | None = None,
) -> FastAPI:
    gw = Gateway(settings, kafka_conf, redis_url, storage)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        gw.bridge.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            gw.bridge.stop()
            gw.redis.close()

    # /docs (Swagger UI) and /redoc with their JavaScript and CSS served by the gateway itself
    # (fastapi-offline bundles them): FastAPI's own pages load them from a CDN, blank for users
    # behind a firewall without internet.
    app = FastAPIOffline(
        title="annrec gateway",
        summary="Recommendations over HTTP: request events in, their replies out",
        version="1",
        lifespan=lifespan,
    )
    app.state.gateway = gw
    kinds: tuple[tuple[str, Kind, str], ...] = (
        ("/v1/recommend", "recommend", "Items for a user (user_id, user_vector or recent_items)"),
        ("/v1/similar-items", "similar_items", "Items most similar to an item"),
    )
    for path, kind, summary in kinds:
        handler = gw.counted(path, gw.one(kind))
        # Served by a plain Starlette route placed ahead of the FastAPI route that documents it
        # (the first route matching a request answers it): FastAPI's per-request route
        # machinery (solving dependencies, wrapping the response) made the same trivial handler
        # cost 207 us a request against 92 us as a Starlette route in one FastAPI app (side by
        # side, in process, 2 shared cores): about a fifth of the gateway's CPU per request.
        app.router.routes.append(Route(path, handler, methods=["POST"]))
        app.add_api_route(
            path,
            handler,
            methods=["POST"],
            summary=summary,
            openapi_extra={"x-annrec-kind": kind},
            responses=reply_responses(),
        )
    app.add_api_route(
        "/v1/stream",
        gw.counted("/v1/stream", gw.stream),
        methods=["POST"],
        summary="Many requests; each reply is a Server-Sent Event as it comes",
        description="Events: `reply` (data: the reply, id: its request_id), `timeout`, "
        "`invalid`, `unavailable` and `conflict` (data: an HttpError; `field` names the item "
        "as requests.<i>.<field>), then `done` (data: the count of each event).",
        openapi_extra={"x-annrec-stream": True},
        responses={200: {"content": {"text/event-stream": {}}}, 413: {"model": HttpError}},
    )
    app.add_api_route(
        "/v1/replies/{request_id}",
        gw.counted("/v1/replies", gw.reply),
        methods=["GET"],
        summary="A reply already written to Redis",
        responses=reply_responses(not_found=True),
    )
    app.add_api_route("/v1/status", gw.counted("/v1/status", gw.status), methods=["GET"])
    app.add_api_route(
        "/v1/models",
        gw.counted("/v1/models", gw.model_list),
        methods=["GET"],
        summary="Models, their LATEST and newest versions, experiment arms and pins",
    )
    app.add_api_route("/healthz", gw.healthz, methods=["GET"])
    app.add_api_route("/metrics", gw.prometheus, methods=["GET"])
    app.add_api_route("/", lambda: RedirectResponse("/explorer/"), include_in_schema=False)
    app.mount("/explorer", StaticFiles(directory=STATIC, html=True), name="explorer")
    add_request_bodies(app)
    return app


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes: by its Content-Length before reading, or as
    soon as the bytes read pass it (a chunked body has none)."""
    declared = request.headers.get("content-length", "")
    too_large = Refused(HttpError(status="too_large", error=f"body exceeds the {limit}-byte limit"))
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(exc: Invalid, where: str = "") -> HttpError:
    field = f"{where}{exc.field}" if exc.field else (where.rstrip(".") or None)
    return HttpError(status="invalid", error=exc.reason, field=field, request_id=exc.request_id)


async def _stream_events(
    items: list[Any], deadlines: Deadlines, ask: Callable[[AnyRequest], Awaitable[Response]]
) -> AsyncIterator[dict[str, str]]:
    """An `invalid` event per item that is not a request, then one event per reply (or
    timeout) in the order they come, then `done`. A client that disconnects cancels the
    requests still waiting (their waiters are removed)."""
    counts: dict[str, int] = {}
    requests = []
    for i, item in enumerate(items):
        try:
            requests.append(parse_doc(item, None, deadlines))
        except Invalid as exc:
            counts["invalid"] = counts.get("invalid", 0) + 1
            yield {"event": "invalid", "data": _invalid(exc, f"requests.{i}.").model_dump_json()}

    async def answered(request: AnyRequest) -> dict[str, str]:
        try:
            response = await ask(request)
        except Refused as refused:
            return {"event": refused.body.status, "data": refused.body.model_dump_json()}
        return {"event": "reply", "id": request.request_id, "data": bytes(response.body).decode()}

    tasks = [asyncio.ensure_future(answered(r)) for r in requests]
    try:
        for next_done in asyncio.as_completed(tasks):
            event = await next_done
            counts[event["event"]] = counts.get(event["event"], 0) + 1
            yield event
    finally:
        for task in tasks:
            task.cancel()
    yield {"event": "done", "data": json.dumps(counts)}
