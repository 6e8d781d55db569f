"""`annrec demo`: the whole path on a local stack, printed.

Starts Kafka and Redis (unless ANNREC_KAFKA_BOOTSTRAP / ANNREC_REDIS_URL point elsewhere), builds
and publishes a synthetic version, starts a real `annrec worker` process, sends requests through
Kafka, prints the replies and reads the same results back from Redis.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import redis

from adapters.index_files import load_attributes
from adapters.topics import ensure_topics, topic_specs
from index_builder.announce import announce_version
from index_builder.inputs import Factors
from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_attributes, synth_factors
from query_engine.attributes import ItemAttributes
from query_engine.selection import select
from query_engine.vectors import exact_cosine_top_k, exact_inner_product_top_k, recall_at_k, top_k
from schemas import keys
from schemas.errors import AnnrecError
from schemas.events import RecommendRequest, Reply, SimilarItemsRequest
from schemas.filters import AllOf, AttrEquals
from schemas.layout import version_dir
from schemas.manifest import Manifest
from schemas.settings import CommonSettings
from tools import processes, services
from tools.client import ReplyWaiter, format_reply, new_request_id, send_requests
from tools.stack import LocalStack

# "recommended for you, in category c03, in stock": business rules in the query.
DEMO_FILTER = AllOf(
    all=[AttrEquals(attr="category", eq="c03"), AttrEquals(attr="in_stock", eq=True)]
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.set_defaults(handler=lambda args: run_demo(keep=args.keep))


def run_demo(keep: bool = False) -> int:
    settings = CommonSettings()
    stack = LocalStack(settings.stack_dir)
    started_stack = _stack_up(settings, stack)
    kafka = services.kafka_conf(settings)
    redis_url = services.redis_url(settings)
    ensure_topics(kafka, topic_specs(settings))

    # The data folder (the version, the worker's log) goes when the demo has run, --keep or not:
    # --keep keeps the stack (Kafka, Redis), which needs nothing in it once the demo's worker has
    # stopped. A demo that did not finish keeps it for the worker's log, and says where it is.
    storage = Path(tempfile.mkdtemp(prefix="annrec-demo-"))
    try:
        _serve_and_ask(
            storage, settings, kafka, redis_url, stack if started_stack and not keep else None
        )
    except BaseException:
        _say(f"the version and the worker's log stay in {storage}")
        raise
    shutil.rmtree(storage, ignore_errors=True)
    if started_stack and keep:
        _say("stack left running: `annrec stack down` stops it")
    return 0


def _serve_and_ask(
    storage: Path,
    settings: CommonSettings,
    kafka: dict[str, str],
    redis_url: str,
    stack_to_stop: LocalStack | None,
) -> None:
    """Publish a version into `storage`, serve it with a worker, ask, print; the worker is
    stopped (and `stack_to_stop` with it) before this returns."""
    factors, manifest = _publish(storage, kafka, settings)
    attributes = load_attributes(
        version_dir(storage, manifest.version), manifest.attributes, manifest.n_items
    )
    worker = _start_worker(storage, kafka, redis_url)
    try:
        replies = _ask(kafka, settings, worker)
    finally:
        processes.stop([worker])
        if stack_to_stop is not None:
            stack_to_stop.down()
    _show(replies, factors, manifest.version, attributes)


def _stack_up(settings: CommonSettings, stack: LocalStack) -> bool:
    """The local stack up unless the environment names Kafka and Redis; True if this started
    it (then the demo stops it at the end, unless --keep)."""
    if settings.kafka_bootstrap is not None and settings.redis_url is not None:
        return False
    started = stack.running() is None
    _say(
        f"starting local Kafka + Redis in {stack.state_dir}"
        if started
        else "using the running local stack"
    )
    stack.up()
    return started


def _publish(
    storage: Path, kafka: dict[str, str], settings: CommonSettings
) -> tuple[Factors, Manifest]:
    _say(
        f"building a synthetic index (20,000 items, 2,000 users, K=32, attributes category, "
        f"brand, in_stock) into {storage}"
    )
    factors = synth_factors(20_000, 2_000, 32, seed=7)
    manifest = publish_version(
        factors,
        storage,
        BuildOptions(n_trees=20),
        source="demo synth",
        announce=lambda m: announce_version(kafka, settings.topic_index_versions, m),
        attributes=synth_attributes(20_000, seed=7),
    )
    return factors, manifest


def _start_worker(storage: Path, kafka: dict[str, str], redis_url: str) -> subprocess.Popen[bytes]:
    """A real `annrec worker` process serving `storage`, its log beside the version."""
    env = {
        **os.environ,
        "ANNREC_STORAGE": str(storage),
        "ANNREC_KAFKA_BOOTSTRAP": kafka["bootstrap.servers"],
        "ANNREC_REDIS_URL": redis_url,
        "ANNREC_METRICS_PORT": "0",  # any free port: never collide with a running worker
    }
    log_path = storage / "worker.log"
    _say(f"starting a worker (log: {log_path})")
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _ask(
    kafka: dict[str, str], settings: CommonSettings, worker: subprocess.Popen[bytes]
) -> list[tuple[Reply, dict[str, object] | None]]:
    requests: list[SimilarItemsRequest | RecommendRequest] = [
        RecommendRequest(request_id=new_request_id(), user_id="u0", k=5),
        RecommendRequest(request_id=new_request_id(), user_id="u1", k=5),
        SimilarItemsRequest(request_id=new_request_id(), item_id="i0", k=5),
        RecommendRequest(request_id=new_request_id(), user_id="u0", k=5, filter=DEMO_FILTER),
    ]
    waiter = ReplyWaiter(kafka, settings.topic_replies)
    try:
        send_requests(kafka, settings.topic_requests, requests)
        _say(f"sent {len(requests)} requests to {settings.topic_requests}; waiting for replies")
        got = waiter.wait({r.request_id for r in requests}, timeout_s=90)
    finally:
        waiter.close()
    if len(got) < len(requests):
        state = "exited" if worker.poll() is not None else "running"
        raise AnnrecError(f"only {len(got)}/{len(requests)} replies within 90 s (worker {state})")
    r = redis.Redis.from_url(services.redis_url(settings))
    out = []
    for req in requests:
        stored = r.get(keys.reply_key(req.request_id))
        out.append(
            (
                got[req.request_id],
                Reply.model_validate_json(stored).model_dump() if stored else None,
            )
        )
    return out


def _show(
    replies: list[tuple[Reply, dict[str, object] | None]],
    factors: Factors,
    version: str,
    attributes: ItemAttributes,
) -> None:
    items = factors.item_factors
    norms = np.linalg.norm(items, axis=1).astype(np.float32)
    print(f"\nannrec demo: index version {version}\n")
    for reply, stored in replies:
        if reply.filtered:
            print(f"filter {DEMO_FILTER.model_dump_json(by_alias=True)}")
            print(f"  {reply.filter_passing:,} of {len(items):,} items pass")
        print(format_reply(reply))
        same = stored is not None and stored["items"] == reply.model_dump()["items"]
        print(
            f"  redis {keys.reply_key(reply.request_id)}: "
            f"{'same items as the Kafka reply' if same else 'MISSING'}"
        )
        row = int(str(reply.subject_id)[1:])  # synthetic ids: i<row>, u<row>
        k = len(reply.items)
        if reply.filtered:  # the exact top-k among the items passing the filter
            passing = select(attributes, DEMO_FILTER, None, len(items))
            assert passing is not None
            scores = items[passing.rows] @ factors.user_factors[row]
            truth = passing.rows[top_k(scores, k)]
        elif reply.kind == "recommend":
            truth = exact_inner_product_top_k(items, factors.user_factors[row], k)
        else:
            truth = exact_cosine_top_k(items, norms, items[row], k, exclude=row)
        found = [int(i.item_id[1:]) for i in reply.items]
        print(f"  recall@{k} against exact brute force: {recall_at_k(found, truth):.2f}\n")


def _say(message: str) -> None:
    print(f"annrec demo: {message}", file=sys.stderr, flush=True)
