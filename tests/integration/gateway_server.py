"""A real gateway (uvicorn, in a thread) on a free port, for the integration and browser tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from schemas.settings import TOPIC_FIELDS
from worker.settings import WorkerSettings


def gateway_settings(worker: WorkerSettings, **overrides: Any) -> GatewaySettings:
    """A gateway in front of the test's workers: their topics, group, storage and services."""
    return GatewaySettings(
        kafka_bootstrap=worker.kafka_bootstrap,
        redis_url=worker.redis_url,
        storage=worker.storage,
        group_id=worker.group_id,
        **{f: getattr(worker, f) for f in TOPIC_FIELDS},
        **overrides,
    )


@contextmanager
def running_gateway(
    settings: GatewaySettings, kafka_conf: dict[str, str], redis_url: str
) -> Iterator[str]:
    """The gateway's base URL while it serves; stopped (and its bridge closed) after."""
    app = create_app(settings, kafka_conf, redis_url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_keep_alive=30)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gateway")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)  # waits for a condition, bounded: not a race
    try:
        assert server.started, "the gateway did not start within 30 s"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive(), "the gateway did not stop within 30 s"
