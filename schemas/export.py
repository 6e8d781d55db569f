"""JSON Schemas of the events, generated from the pydantic models and checked into
schemas/json/ (a test fails when they drift), for teams that code against the topics in
another language. Regenerate with `annrec schemas --out schemas/json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.events import REQUEST_ADAPTER, DeadLetter, IndexAnnounced, Reply

SCHEMA_DIR = Path(__file__).parent / "json"


def json_schemas() -> dict[str, dict[str, Any]]:
    return {
        "request": REQUEST_ADAPTER.json_schema(),
        "reply": Reply.model_json_schema(),
        "dead_letter": DeadLetter.model_json_schema(),
        "index_announced": IndexAnnounced.model_json_schema(),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in json_schemas().items():
        path = out / f"{name}.schema.json"
        path.write_text(render(schema))
        paths.append(path)
    return paths
