"""JSON Schemas of the events and the AsyncAPI 3.0 document of the topics, generated from the
pydantic models and checked into schemas/json/ (a test fails when they drift), for teams that code
against the topics in another language. Regenerate with `annrec schemas --out schemas/json`."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from schemas.asyncapi import asyncapi_document
from schemas.events import (
    REQUEST_ADAPTER,
    DeadLetter,
    IndexAnnounced,
    Interaction,
    ItemUpdate,
    ItemVector,
    Reply,
)

SCHEMA_DIR = Path(__file__).parent / "json"
ASYNCAPI_FILE = "asyncapi.json"


def json_schemas() -> dict[str, dict[str, Any]]:
    return {
        "request": REQUEST_ADAPTER.json_schema(),
        "reply": Reply.model_json_schema(),
        "dead_letter": DeadLetter.model_json_schema(),
        "index_announced": IndexAnnounced.model_json_schema(),
        "item_update": ItemUpdate.model_json_schema(),
        "interaction": Interaction.model_json_schema(),
        "item_vector": ItemVector.model_json_schema(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def package_version() -> str:
    try:
        return version("annrec")
    except PackageNotFoundError:
        return "0+unknown"


def write_schemas(out: Path) -> list[Path]:
    """One JSON Schema per event, and the AsyncAPI 3.0 document of the topics."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = out / f"{name}.schema.json"
        path.write_text(render(schema))
        paths.append(path)
    path = out / ASYNCAPI_FILE
    path.write_text(render(asyncapi_document(package_version())))
    paths.append(path)
    return paths
