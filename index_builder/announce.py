"""Announce a published version on the compacted index-versions topic."""

from __future__ import annotations

from adapters.topics import deliver
from schemas import keys
from schemas.events import IndexAnnounced
from schemas.manifest import DEFAULT_MODEL, Manifest


def announce_version(
    kafka_conf: dict[str, str],
    topic: str,
    manifest: Manifest,
    timeout_s: float = 30,
    model: str = DEFAULT_MODEL,
) -> None:
    """Produce the announcement and wait for the broker's ack; raise if it was not delivered."""
    event = IndexAnnounced(version=manifest.version, manifest=manifest, model=model)
    message = (keys.announce_key(model), event.model_dump_json())
    deliver(kafka_conf, topic, [message], f"announcement of {manifest.version}", timeout_s)
