"""The OpenAPI document: its bodies are the events' own models (the AsyncAPI document's)."""

from __future__ import annotations

from gateway.app import create_app
from gateway.settings import GatewaySettings
from schemas.events import RecommendRequest, SimilarItemsRequest


def _openapi(tmp_path) -> dict:
    # Nothing is connected until the app starts (librdkafka and redis-py connect lazily).
    settings = GatewaySettings(kafka_bootstrap="127.0.0.1:1", storage=str(tmp_path))
    app = create_app(settings, {"bootstrap.servers": "127.0.0.1:1"}, "redis://127.0.0.1:1/0")
    return app.openapi()


def test_request_bodies_are_the_request_events_with_the_gateways_defaults(tmp_path):
    doc = _openapi(tmp_path)
    schemas = doc["components"]["schemas"]
    for path, model in (
        ("/v1/recommend", RecommendRequest),
        ("/v1/similar-items", SimilarItemsRequest),
    ):
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        name = body["$ref"].rsplit("/", 1)[1]
        event = model.model_json_schema(ref_template="#/components/schemas/{model}")
        http = schemas[name]
        assert set(http["properties"]) == set(event["properties"])
        for field in ("k", "exclude_items", "filter", "max_per"):
            assert http["properties"][field] == event["properties"][field]
        assert "request_id" in event["required"] and "request_id" not in http.get("required", [])
        for definition in event.get("$defs", {}):
            assert schemas[definition] == event["$defs"][definition]


def test_every_route_says_what_it_answers(tmp_path):
    paths = _openapi(tmp_path)["paths"]
    assert set(paths) >= {
        "/v1/recommend",
        "/v1/similar-items",
        "/v1/stream",
        "/v1/replies/{request_id}",
        "/v1/status",
        "/healthz",
        "/metrics",
    }
    responses = paths["/v1/recommend"]["post"]["responses"]
    assert {"200", "413", "422", "503", "504"} <= set(responses)
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Reply")
    stream = paths["/v1/stream"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert stream["$ref"].endswith("/StreamBody")
