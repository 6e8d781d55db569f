"""`annrec worker`: serve requests from Kafka until SIGTERM or SIGINT (worker/app.py)."""

from __future__ import annotations

import argparse
import signal
import threading

from tools import services
from worker.app import Worker
from worker.settings import WorkerSettings

# Flags that override the worker's ANNREC_* settings when given.
SETTINGS_FLAGS = (
    "storage",
    "group_id",
    "batch_size",
    "metrics_port",
    "cold_start",
    "serve_from_cache",
    "worker_id",
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="directory or s3://bucket/prefix (ANNREC_STORAGE)")
    parser.add_argument("--group-id")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--metrics-port", type=int, help="-1 off, 0 any free port")
    parser.add_argument("--cold-start", choices=["popular", "error"])
    parser.add_argument("--serve-from-cache", action="store_true", default=None)
    parser.add_argument("--worker-id")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides = {n: getattr(args, n) for n in SETTINGS_FLAGS}
    settings = WorkerSettings(**{k: v for k, v in overrides.items() if v is not None})
    worker = Worker(settings, services.kafka_conf(settings), services.redis_url(settings))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())  # finish the batch, commit, close
    worker.run(stop)
    return 0
