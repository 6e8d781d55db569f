"""`annrec gateway`: HTTP for frontends that cannot hold a Kafka consumer, and the explorer page
(gateway/app.py), served by uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse

import structlog

from adapters.topics import ensure_topics, topic_specs
from gateway.settings import GatewaySettings
from tools import services

log = structlog.get_logger(__name__)

# Flags that override the gateway's ANNREC_* settings when given.
SETTINGS_FLAGS = {
    "host": "gateway_host",
    "port": "gateway_port",
    "deadline_ms": "gateway_deadline_ms",
    "storage": "storage",
    "group_id": "group_id",
}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", help="address to listen on (ANNREC_GATEWAY_HOST, default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, help="HTTP port (ANNREC_GATEWAY_PORT, default 8080)")
    parser.add_argument(
        "--deadline-ms",
        type=int,
        help="wait for a request without deadline_ms (ANNREC_GATEWAY_DEADLINE_MS, default 5000)",
    )
    parser.add_argument("--storage", help="where /v1/status reads LATEST (ANNREC_STORAGE)")
    parser.add_argument("--group-id", help="the workers' group, for /v1/status (ANNREC_GROUP_ID)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.app import create_app

    given = {field: getattr(args, flag) for flag, field in SETTINGS_FLAGS.items()}
    settings = GatewaySettings(**{k: v for k, v in given.items() if v is not None})
    kafka = services.kafka_conf(settings)
    ensure_topics(kafka, topic_specs(settings))  # the reply topic must exist to be read
    app = create_app(settings, kafka, services.redis_url(settings))
    host, port = settings.gateway_host, settings.gateway_port
    log.info("gateway_listening", explorer=f"http://{host}:{port}/explorer/", docs="/docs")
    # uvicorn's own log lines are not key=value: its access log is off (/metrics counts
    # requests), its error lines stay.
    uvicorn.run(app, host=host, port=port, access_log=False, log_config=None)
    return 0
