"""Producing interaction events (what users did) to the interactions topic, keyed by user_id so
that one user's events stay in order on one partition. Workers consume them (worker/app.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from adapters.topics import deliver
from schemas.events import Interaction


def interaction_message(event: Interaction) -> tuple[str, str]:
    """(key, value) of an interaction on the topic."""
    return event.user_id, event.model_dump_json(exclude_none=True)


def publish_interactions(
    kafka_conf: Mapping[str, str],
    topic: str,
    events: Sequence[Interaction],
    timeout_s: float = 30,
) -> None:
    """Produce the events and wait until the broker has them all."""
    messages = [interaction_message(e) for e in events]
    deliver(kafka_conf, topic, messages, f"{len(events)} interactions", timeout_s)
