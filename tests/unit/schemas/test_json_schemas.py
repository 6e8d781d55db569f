import json

import pytest

from schemas.export import SCHEMA_DIR, json_schemas, render


@pytest.mark.parametrize("name", sorted(json_schemas()))
def test_checked_in_json_schema_matches_the_models(name):
    """Regenerate with `annrec schemas --out schemas/json` after changing an event model."""
    path = SCHEMA_DIR / f"{name}.schema.json"
    assert path.read_text() == render(json_schemas()[name]), f"{path} is stale"


def test_request_schema_documents_every_request_form():
    schema = json.loads((SCHEMA_DIR / "request.schema.json").read_text())
    recommend = schema["$defs"]["RecommendRequest"]["properties"]
    assert {"user_id", "user_vector", "recent_items", "exclude_seen", "deadline_ms"} <= set(
        recommend
    )
    assert schema["discriminator"]["propertyName"] == "kind"
