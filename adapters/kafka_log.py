"""Every Kafka client's settings pass through here: librdkafka's own log goes to the project's
structured log, repeats collapsed, and a lost broker is said once.

librdkafka writes its log lines (`%3|...|FAIL|... Connection refused`) to stderr unless a logger
is given. `client_config` gives every Consumer, Producer and AdminClient of the project (worker,
adapters, tools) the same hooks:

- `logger`: a `logging.Logger` whose one handler re-emits each line as a structlog event
  (`kafka_client_log`, at librdkafka's level: 3 error, 4 warning, 5-6 info, 7 debug). Consumers and
  producers serve it from poll()/flush(), so it runs on the thread that polls, never inside
  librdkafka's own threads.
- `error_cb`: "all brokers down" marks the bootstrap unreachable (`kafka_unreachable`, once, naming
  the setting to check); transport errors repeat the log's FAIL lines and are dropped; any other
  error is logged (`kafka_error`) through the same collapsing.
- `stats_cb`: while a bootstrap is marked unreachable, a client's statistics taken after the loss
  showing a broker UP mark it reachable again (`kafka_reachable`, with how long it was down).
  Statistics are off unless the client sets `statistics.interval.ms` (the worker's consumer
  does): a client must be polled for them, and an idle producer would only pile them up.
- `reconnect.backoff.ms`/`reconnect.backoff.max.ms`: a lost broker is retried with a backoff
  growing to 10 s, not every 100 ms per connection.

Repeats (same facility and text, durations aside) are collapsed by `Repeats`: the first line is
logged, then one line per interval with how many were left out (5 s, doubling to 60 s while they
keep coming).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import structlog
from confluent_kafka import KafkaError

from schemas import keys

log = structlog.get_logger("annrec.kafka")

# Project defaults; the caller's settings (ANNREC_KAFKA_CONFIG and per-role ones) win.
DEFAULTS: dict[str, object] = {
    "reconnect.backoff.ms": 500,
    "reconnect.backoff.max.ms": 10_000,
}

FIRST_INTERVAL_S = 5.0
MAX_INTERVAL_S = 60.0


class Repeats:
    """Which occurrences of a repeating line to log.

    The first occurrence of a key is logged; later ones are counted, and the next one past the
    interval is logged with that count; the interval doubles (first_s .. max_s) while the key
    keeps coming, and a key quiet for max_s starts over. Thread-safe: clients poll on several
    threads.
    """

    def __init__(
        self,
        first_s: float = FIRST_INTERVAL_S,
        max_s: float = MAX_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [next time a line may go out, current interval, left out since the last line,
        #         last seen]
        self._seen: dict[Hashable, list[float]] = {}

    def admit(self, key: Hashable) -> int | None:
        """None: leave this one out. Otherwise log it, saying how many were left out before it
        (0 for the first of a series)."""
        now = self._clock()
        with self._lock:
            entry = self._seen.get(key)
            if entry is None or now - entry[3] >= self._max_s:
                self._seen[key] = [now + self._first_s, self._first_s, 0, now]
                self._forget_quiet(now)
                return 0
            entry[3] = now
            if now < entry[0]:
                entry[2] += 1
                return None
            left_out = int(entry[2])
            interval = min(entry[1] * 2, self._max_s)
            entry[:3] = [now + interval, interval, 0]
            return left_out

    def next_interval_s(self, key: Hashable) -> float:
        with self._lock:
            entry = self._seen.get(key)
            return entry[1] if entry else self._first_s

    def _forget_quiet(self, now: float) -> None:
        if len(self._seen) > 256:
            for k in [k for k, e in self._seen.items() if now - e[3] >= self._max_s]:
                del self._seen[k]


_DURATION = re.compile(r"\d+ms")


def _syslog_level(level: int) -> int:
    """librdkafka gives syslog levels; confluent-kafka maps them to logging's before calling
    the logger, but accept either."""
    if level >= logging.DEBUG:
        return level
    if level <= 2:
        return logging.CRITICAL
    return {3: logging.ERROR, 4: logging.WARNING, 5: logging.INFO, 6: logging.INFO}.get(
        level, logging.DEBUG
    )


class _ToStructlog(logging.Handler):
    """confluent-kafka calls logger.log(level, "%s [%s] %s", facility, client name, text)."""

    def __init__(self, repeats: Repeats) -> None:
        super().__init__(logging.DEBUG)
        self.repeats = repeats

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 3:
            facility, client, text = (str(a) for a in args)
        else:
            facility, client, text = "", "", record.getMessage()
        key = (facility, _DURATION.sub("Nms", text))
        left_out = self.repeats.admit(key)
        if left_out is None:
            return
        fields: dict[str, Any] = {"facility": facility, "client": client, "message": text}
        if left_out:
            fields["repeated"] = left_out
            fields["next_summary_s"] = self.repeats.next_interval_s(key)
        log.log(_syslog_level(record.levelno), "kafka_client_log", **fields)


class KafkaLink:
    """Whether a bootstrap answers, as this process's clients saw it last; one per bootstrap."""

    def __init__(self, bootstrap: str, clock: Callable[[], float] = time.time) -> None:
        self.bootstrap = bootstrap
        self._clock = clock  # wall clock: librdkafka's statistics carry their time in it
        self._lock = threading.Lock()
        self._down_since: float | None = None

    @property
    def down_since(self) -> float | None:
        return self._down_since

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    def lost(self) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = self._clock()
        log.warning(
            "kafka_unreachable",
            bootstrap=self.bootstrap,
            check=keys.ENV_KAFKA_BOOTSTRAP,
            detail="no broker answers; retrying with backoff, state kept",
        )

    def reached(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            down_s = self._clock() - self._down_since
            self._down_since = None
        log.info("kafka_reachable", bootstrap=self.bootstrap, down_s=round(down_s, 1))


_handler = _ToStructlog(Repeats())
_logger = logging.getLogger("annrec.kafka.librdkafka")
_logger.propagate = False
_logger.setLevel(logging.DEBUG)
_logger.handlers = [_handler]  # one, even if this module is loaded twice
_links: dict[str, KafkaLink] = {}
_links_lock = threading.Lock()


def link(conf: Mapping[str, object]) -> KafkaLink:
    """The reachability of conf's bootstrap servers in this process."""
    bootstrap = str(conf.get("bootstrap.servers", ""))
    with _links_lock:
        return _links.setdefault(bootstrap, KafkaLink(bootstrap))


def _on_error(found: KafkaLink) -> Callable[[KafkaError], None]:
    def on_error(err: KafkaError) -> None:
        code = err.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            found.lost()
        elif code == KafkaError._TRANSPORT:
            return  # the same failure as the FAIL line librdkafka logs
        elif _handler.repeats.admit(("error", code)) is not None:
            level = logging.CRITICAL if err.fatal() else logging.WARNING
            log.log(level, "kafka_error", error=err.str(), code=err.name())

    return on_error


def _on_stats(found: KafkaLink) -> Callable[[str], None]:
    def on_stats(stats_json: str) -> None:
        since = found.down_since
        if since is None:
            return  # nothing to learn: keep the parse off the healthy path
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        # Only statistics taken after the loss (whole seconds): a client polled late serves
        # ones queued while the broker was still up.
        if stats.get("time", 0) <= since:
            return
        if any(b.get("state") == "UP" for b in stats.get("brokers", {}).values()):
            found.reached()

    return on_stats


def client_config(conf: Mapping[str, object]) -> dict[str, Any]:
    """conf (bootstrap, ANNREC_KAFKA_CONFIG, the role's settings) with the project's defaults
    under it and the log, error and statistics hooks beside it (those given in conf are kept)."""
    found = link(conf)
    hooks: dict[str, object] = {
        "logger": _logger,
        "error_cb": _on_error(found),
        "stats_cb": _on_stats(found),
    }
    return {**DEFAULTS, **hooks, **conf}
