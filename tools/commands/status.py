"""`annrec status`: group, lag, workers, versions, dead letters (tools/status.py)."""

from __future__ import annotations

import argparse
import json

from tools import services
from tools.status import collect_status, render_status
from worker.settings import WorkerSettings


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", help="directory or s3://bucket/prefix (ANNREC_STORAGE)")
    parser.add_argument("--group-id")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"storage": args.storage, "group_id": args.group_id}
    settings = WorkerSettings(**{k: v for k, v in overrides.items() if v is not None})
    doc = collect_status(settings, services.kafka_conf(settings), services.redis_url(settings))
    print(json.dumps(doc, indent=2) if args.json else render_status(doc))
    return 0
