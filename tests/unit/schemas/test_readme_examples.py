"""The README's example events are valid events: documentation that cannot drift from the models."""

import re
from pathlib import Path

import pytest

from schemas.events import DeadLetter, Reply, parse_interaction, parse_request

README = Path(__file__).resolve().parents[3] / "README.md"
EXAMPLE = re.compile(r"<!-- example: (\w+) -->\s*```json\n(.*?)```", re.S)
PARSERS = {
    "request": parse_request,
    "reply": Reply.model_validate_json,
    "dead_letter": DeadLetter.model_validate_json,
    "interaction": parse_interaction,
}


def _examples() -> list[tuple[str, str]]:
    return EXAMPLE.findall(README.read_text())


def test_readme_has_an_example_of_each_event():
    assert {kind for kind, _ in _examples()} == set(PARSERS)


@pytest.mark.parametrize(("kind", "body"), _examples())
def test_readme_example_is_a_valid_event(kind, body):
    PARSERS[kind](body.encode())
