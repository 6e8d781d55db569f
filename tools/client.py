"""Send one request through Kafka and wait for its reply (what `annrec request` does), and print it.

The reply consumer is positioned at the end of every reply partition *before* the request is
produced, so the reply cannot be missed, and it uses no consumer group (nothing to commit).
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Message, Producer

from adapters.kafka_log import client_config
from adapters.reply_topic import replies_from_now
from schemas.errors import AnnrecError
from schemas.events import RecommendRequest, Reply, SimilarItemsRequest


def new_request_id() -> str:
    return uuid.uuid4().hex


class ReplyWaiter:
    """Reads the reply topic from 'now' on and hands out replies by request_id."""

    def __init__(
        self, kafka_conf: dict[str, str], replies_topic: str, *, read_committed: bool = False
    ) -> None:
        """read_committed: only replies of committed transactions: with workers running
        ANNREC_PROCESSING_GUARANTEE=exactly-once, each request's reply is seen once."""
        self._consumer = replies_from_now(kafka_conf, replies_topic, read_committed=read_committed)
        self._seen: dict[str, Reply] = {}

    def wait(self, request_ids: set[str], timeout_s: float) -> dict[str, Reply]:
        """Replies for the given ids (the first one seen of each); stops at the timeout."""
        deadline = time.monotonic() + timeout_s
        while not request_ids <= self._seen.keys() and time.monotonic() < deadline:
            msg = self._consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            reply = Reply.model_validate_json(msg.value() or b"")
            self._seen.setdefault(reply.request_id, reply)
        return {rid: self._seen[rid] for rid in request_ids if rid in self._seen}

    def drain(self, timeout_s: float) -> list[str]:
        """Request ids of the replies that have arrived, waiting up to timeout_s for the first
        (load generators: no parsing, and no waiting for a full batch, which would add up to
        timeout_s to every latency measured)."""
        return [k.decode() for m in self._arrived(timeout_s) if (k := m.key())]

    def drain_replies(self, timeout_s: float) -> list[Reply]:
        """The replies that have arrived, parsed, waiting up to timeout_s for the first."""
        return [Reply.model_validate_json(m.value() or b"") for m in self._arrived(timeout_s)]

    def _arrived(self, timeout_s: float) -> list[Message]:
        first = self._consumer.poll(timeout_s)
        if first is None:
            return []
        messages = [first, *self._consumer.consume(num_messages=1000, timeout=0)]
        return [m for m in messages if m.error() is None]

    def close(self) -> None:
        self._consumer.close()


def send_requests(
    kafka_conf: dict[str, str], topic: str, requests: list[SimilarItemsRequest | RecommendRequest]
) -> None:
    producer = Producer({**client_config(kafka_conf), "enable.idempotence": True})
    for req in requests:
        # Keyed by subject: one user's requests stay on one partition, in order.
        key = req.subject_id or req.request_id
        producer.produce(topic, key=key.encode(), value=req.model_dump_json().encode())
    if producer.flush(30) > 0:
        raise AnnrecError("requests not delivered to Kafka within 30 s")


def request_once(
    kafka_conf: dict[str, str],
    requests_topic: str,
    replies_topic: str,
    request: SimilarItemsRequest | RecommendRequest,
    timeout_s: float = 30.0,
) -> Reply:
    waiter = ReplyWaiter(kafka_conf, replies_topic)
    try:
        send_requests(kafka_conf, requests_topic, [request])
        replies = waiter.wait({request.request_id}, timeout_s)
    finally:
        waiter.close()
    if request.request_id not in replies:
        raise AnnrecError(
            f"no reply to {request.request_id} within {timeout_s:.0f}s: is a worker running?"
        )
    return replies[request.request_id]


def wait_for_workers(
    kafka_conf: dict[str, str],
    requests_topic: str,
    replies_topic: str,
    n_users: int,
    workers: int,
    timeout_s: float = 120.0,
) -> set[str]:
    """Send recommendations for u0, u1, ... until `workers` distinct workers have answered:
    every one joined the group, loaded an index and got partitions (a rebalance in the middle
    of a measurement would be measured as latency, or as a fault). Returns the worker ids."""
    waiter = ReplyWaiter(kafka_conf, replies_topic)
    producer = Producer({**client_config(kafka_conf), "linger.ms": 0})
    answered: set[str] = set()
    deadline = time.monotonic() + timeout_s
    attempt = 0
    try:
        while len(answered) < workers and time.monotonic() < deadline:
            ids = {f"warm-{attempt}-{i}" for i in range(8)}  # 8 keys reach every partition
            for rid in ids:
                req = RecommendRequest(request_id=rid, user_id=f"u{attempt % n_users}", k=10)
                producer.produce(requests_topic, key=rid.encode(), value=req.model_dump_json())
            producer.flush(10)
            answered |= {r.worker_id for r in waiter.wait(ids, timeout_s=2.0).values()}
            attempt += 1
    finally:
        waiter.close()
    if len(answered) < workers:
        raise AnnrecError(f"only {len(answered)} of {workers} workers answered in {timeout_s} s")
    return answered


def format_reply(reply: Reply) -> str:
    """A reply as a person reads it: a head line, what was unusual about it (a fallback, filled
    items, ignored ids), then rank, item, score and a note per item."""
    if reply.status == "no_match":
        return f"{reply.request_id}: no_match: no item passes the filter"
    if reply.status not in ("ok", "partial"):
        return f"{reply.request_id}: {reply.status}: {reply.error}"
    head = (
        f"{reply.kind} for {reply.subject_id}  (index {reply.index_version}, "
        f"worker {reply.worker_id})"
    )
    rows = [
        f"{i:>4}  {item.item_id:<16} "
        + ("-".rjust(10) if item.score is None else f"{item.score:>10.4f}")
        + ("  filled" if item.filled else "")
        for i, item in enumerate(reply.items, 1)
    ]
    header = f"{'rank':>4}  {'item_id':<16} {'score':>10}  note"
    return "\n".join([head, *reply_notes(reply), header, *rows, *_because(reply)])


def _because(reply: Reply) -> list[str]:
    """Each explained item's history items with their share of its score."""
    explained = [(i, item) for i, item in enumerate(reply.items, 1) if item.because]
    lines = ["because (recent item: share of the score)"] if explained else []
    for i, item in explained:
        parts = ", ".join(f"{c.item_id}: {c.share:.0%}" for c in item.because or [])
        lines.append(f"{i:>4}  {item.item_id:<16} {parts}")
    return lines


def reply_notes(reply: Reply) -> list[str]:
    """The facts a table of items would otherwise hide, one line each."""
    notes = []
    if reply.fallback == "cold_start":
        notes.append(
            "fallback: cold_start: the version knows nothing of this user, so these are its most "
            "popular items (no score)"
        )
    elif any(item.filled for item in reply.items):
        notes.append(
            "filled: fewer than k results were left after exclusions and the filter; the rest "
            "come from the version's popularity list"
        )
    if reply.unknown_items:
        shown = ", ".join(reply.unknown_items[:5])
        more = f" and {len(reply.unknown_items) - 5} more" if len(reply.unknown_items) > 5 else ""
        notes.append(f"ignored: items this version does not know: {shown}{more}")
    if reply.max_per is not None:
        m = reply.max_per
        met = "met" if reply.status != "partial" else "could not be met: all the items that meet it"
        notes.append(f"max_per: at most {m.n} per {m.attr}: {met}")
    if reply.explain_refused:
        notes.append(reply.explain_refused)
    if reply.filter_passing is not None:
        notes.append(f"filter: {reply.filter_passing} items of the catalogue pass")
    if reply.from_cache:
        notes.append("answered from the reply cache (computed earlier for this version)")
    return notes
