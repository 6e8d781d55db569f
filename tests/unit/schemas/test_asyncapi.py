"""The AsyncAPI document: generated, current, valid AsyncAPI 3.0, and it accepts the README's
example events (and refuses broken ones)."""

import json
import re
from pathlib import Path

import jsonschema
import pytest

from schemas.asyncapi import asyncapi_document
from schemas.export import ASYNCAPI_FILE, SCHEMA_DIR, package_version, render

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.S)
MESSAGE = {
    "request": "Request",
    "reply": "Reply",
    "dead_letter": "DeadLetter",
    "interaction": "Interaction",
}


@pytest.fixture(scope="module")
def doc():
    return json.loads((SCHEMA_DIR / ASYNCAPI_FILE).read_text())


def _validator(doc, message):
    """A validator for one message's payload, resolving #/components/... inside the document."""
    payload = doc["components"]["messages"][message]["payload"]
    return jsonschema.Draft7Validator({**payload, "components": doc["components"]})


def test_checked_in_document_matches_the_models():
    """Regenerate with `annrec schemas --out schemas/json` after changing an event model."""
    current = render(asyncapi_document(package_version()))
    assert (SCHEMA_DIR / ASYNCAPI_FILE).read_text() == current, (
        "schemas/json/asyncapi.json is stale"
    )


def test_document_is_valid_asyncapi_3(doc):
    spec = json.loads(SPEC.read_text())
    errors = sorted(jsonschema.Draft7Validator(spec).iter_errors(doc), key=str)
    assert not errors, "\n".join(e.message[:300] for e in errors[:5])
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {
        "annrec.requests",
        "annrec.replies",
        "annrec.dead-letters",
        "annrec.index-versions",
        "annrec.item-updates",
        "annrec.item-vectors",
        "annrec.interactions",
    }


def test_readme_examples_validate_against_the_document(doc):
    examples = EXAMPLE.findall((ROOT / "README.md").read_text())
    assert {kind for kind, _ in examples} == set(MESSAGE)
    for kind, body in examples:
        _validator(doc, MESSAGE[kind]).validate(json.loads(body))


@pytest.mark.parametrize(
    "broken",
    [
        {"request_id": "r", "kind": "recommend", "user_id": "u1", "k": 0},
        {"request_id": "r", "kind": "similar_items"},  # no item_id
        {"request_id": "r", "kind": "teleport", "user_id": "u1"},
        {"request_id": "r", "kind": "recommend", "user_id": "u1", "typo": 1},
    ],
)
def test_broken_requests_do_not_validate(doc, broken):
    with pytest.raises(jsonschema.ValidationError):
        _validator(doc, "Request").validate(broken)


@pytest.mark.parametrize(
    "broken",
    [
        {"user_id": "u1", "item_id": "i7"},  # no timestamp
        {"user_id": "u1", "item_id": "i7", "timestamp": "2026-11-25T20:55:43Z", "weight": 0},
        {"user_id": "u1", "item": "i7", "timestamp": "2026-11-25T20:55:43Z"},
    ],
)
def test_broken_interactions_do_not_validate(doc, broken):
    with pytest.raises(jsonschema.ValidationError):
        _validator(doc, "Interaction").validate(broken)
