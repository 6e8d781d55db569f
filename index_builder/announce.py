"""Announce a published version on the compacted index-versions topic."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from schemas import keys
from schemas.errors import AnnrecError
from schemas.events import IndexAnnounced
from schemas.manifest import Manifest


def announce_version(
    kafka_conf: dict[str, str], topic: str, manifest: Manifest, timeout_s: float = 30
) -> None:
    """Produce the announcement and wait for the broker's ack; raise if it was not delivered."""
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({**kafka_conf, "enable.idempotence": True})
    event = IndexAnnounced(version=manifest.version, manifest=manifest)
    producer.produce(
        topic,
        key=keys.ANNOUNCE_KEY.encode(),
        value=event.model_dump_json().encode(),
        on_delivery=on_delivery,
    )
    if producer.flush(timeout_s) > 0:
        raise AnnrecError(f"announcement of {manifest.version} not delivered in {timeout_s}s")
    if errors:
        raise AnnrecError(f"announcement of {manifest.version} failed: {errors[0]}")
