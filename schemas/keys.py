"""Names in one place: environment variables, topic names, Redis keys and their TTLs.

Anyone with a Kafka client (kcat) or redis-cli can use annrec from these names alone; the README
documents the same layout.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel

ENV_PREFIX = "ANNREC_"
ENV_KAFKA_BOOTSTRAP = "ANNREC_KAFKA_BOOTSTRAP"
ENV_REDIS_URL = "ANNREC_REDIS_URL"
ENV_PROGRESS = "ANNREC_PROGRESS"  # progress bars: auto (on a terminal only), on, off

TOPIC_REQUESTS = "annrec.requests"
TOPIC_REPLIES = "annrec.replies"
TOPIC_DEAD_LETTERS = "annrec.dead-letters"
TOPIC_INDEX_VERSIONS = "annrec.index-versions"
# Compacted: per (attribute, item) key only the newest value is kept, so replaying it from the
# beginning gives the current state of every item's availability.
TOPIC_ITEM_UPDATES = "annrec.item-updates"
# Compacted, keyed by item_id: items added, changed or removed since the last build. Every
# worker replays it into its fresh segment; the next build folds it into the version.
TOPIC_ITEM_VECTORS = "annrec.item-vectors"

# What users do (views, clicks, purchases), keyed by user_id: every worker of the group reads
# its share of the partitions and keeps each user's recent history in Redis (history_key).
TOPIC_INTERACTIONS = "annrec.interactions"

REQUEST_PARTITIONS = 4
CONSUMER_GROUP = "annrec-workers"

REDIS_PREFIX = "annrec"
# A caller that knows its request_id reads the reply here (e.g. a frontend that fired and forgot).
REPLY_TTL_S = 3600
# The latest answer for a subject (a user or an item), for frontends that read recommendations
# without waiting on Kafka. Longer-lived: it is the serving cache.
RESULT_TTL_S = 24 * 3600


def reply_key(request_id: str) -> str:
    return f"{REDIS_PREFIX}:reply:{request_id}"


def result_key(kind: str, subject_id: str, model: str = "default") -> str:
    """The latest answer for a subject; another model's answers have keys of their own (the
    model `default` keeps the key it had before there were several)."""
    if model == "default":
        return f"{REDIS_PREFIX}:result:{kind}:{subject_id}"
    return f"{REDIS_PREFIX}:result:{model}:{kind}:{subject_id}"


def history_key(user_id: str) -> str:
    """A user's recent interactions: a sorted set, score the event's timestamp (epoch s), member
    the event (its identity, item and weight), trimmed to ANNREC_HISTORY_LENGTH and
    ANNREC_HISTORY_MAX_AGE_S; it expires when the user is idle that long."""
    return f"{REDIS_PREFIX}:history:{user_id}"


# A worker's heartbeat: a hash refreshed every few seconds with this TTL; `annrec status` lists
# the workers whose key exists (a crashed worker disappears when its key expires).
HEARTBEAT_TTL_S = 15


def worker_key(worker_id: str) -> str:
    return f"{REDIS_PREFIX}:worker:{worker_id}"


WORKER_KEY_PATTERN = f"{REDIS_PREFIX}:worker:*"


def recall_key(version: str) -> str:
    """Live recall of a version (hash: <kind> -> mean recall, <kind>:samples -> window size),
    written by each worker's shadow sampler: the latest writer's window."""
    return f"{REDIS_PREFIX}:recall:{version}"


# Key of every announcement on the compacted index-versions topic: compaction keeps the newest.
ANNOUNCE_KEY = "items"


def announce_key(model: str) -> str:
    """The model `default` keeps ANNOUNCE_KEY; another model's newest announcement is kept under
    a key of its own."""
    return ANNOUNCE_KEY if model == "default" else f"{ANNOUNCE_KEY}:{model}"


def cache_key(version: str, request: BaseModel) -> str:
    """What was asked, for one version: the request without who asked and when."""
    asked = request.model_dump_json(exclude={"request_id", "deadline_ms", "sent_at"})
    return f"{REDIS_PREFIX}:cache:{version}:{hashlib.sha256(asked.encode()).hexdigest()[:32]}"
