"""Real Kafka and Redis for the integration tests, resolved in this order:

1. ANNREC_KAFKA_BOOTSTRAP / ANNREC_REDIS_URL, when set (each wins for its own service);
2. testcontainers, when a Docker engine answers (official apache/kafka and redis images);
3. the local launcher (`annrec stack`): Kafka from Maven Central jars + Debian's redis-server.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from schemas import keys
from tools.stack import KAFKA_VERSION, LocalStack


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    redis_url: str
    source: str


def docker_engine_answers() -> bool:
    try:
        import docker

        return bool(docker.from_env(timeout=3).ping())
    except Exception:
        return False


@contextmanager
def real_services(state_dir: Path) -> Iterator[Services]:
    kafka = os.environ.get(keys.ENV_KAFKA_BOOTSTRAP)
    redis_url = os.environ.get(keys.ENV_REDIS_URL)
    if kafka and redis_url:
        yield Services(kafka, redis_url, "environment")
        return
    with ExitStack() as stack:
        if docker_engine_answers():
            k, r = stack.enter_context(_containers())
            source = "testcontainers"
        else:
            local = LocalStack(state_dir)
            info = local.up()
            stack.callback(_down, local)
            k, r, source = info.kafka_bootstrap, info.redis_url, f"local stack in {state_dir}"
        yield Services(kafka or k, redis_url or r, source)


def _down(local: LocalStack) -> None:
    """Stop the local stack, then drop its data (Kafka's log segments, Redis' folder): only its
    logs stay, for a failed run to be read."""
    local.down()
    for path in local.state_dir.iterdir():
        if path.name == "logs":
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def _containers() -> Iterator[tuple[str, str]]:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs
    from testcontainers.redis import RedisContainer

    with socket.socket() as s:  # the advertised listener must name the host port, so pick it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kafka = (
        DockerContainer(f"apache/kafka:{KAFKA_VERSION}")
        .with_bind_ports(9092, port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
        )
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    with kafka, RedisContainer("redis:7") as redis_c:
        wait_for_logs(kafka, "Kafka Server started", timeout=90)
        host, rport = redis_c.get_container_host_ip(), redis_c.get_exposed_port(6379)
        yield f"127.0.0.1:{port}", f"redis://{host}:{rport}/0"
