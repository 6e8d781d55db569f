"""librdkafka's log through the project's logger: repeats collapsed (fake clock), levels kept,
a lost bootstrap said once."""

from __future__ import annotations

import logging

import pytest
import structlog
from confluent_kafka import KafkaError

from adapters import kafka_log
from adapters.kafka_log import KafkaLink, Repeats, client_config


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_logged_then_one_line_per_interval_with_the_count() -> None:
    clock = Clock()
    repeats = Repeats(first_s=5, max_s=60, clock=clock)
    logged = []
    for _ in range(600):  # 60 connection failures a second for 10 s
        left_out = repeats.admit("refused")
        if left_out is not None:
            logged.append((clock.now - 1000.0, left_out))
        clock.now += 1 / 60
    assert logged[0] == (0.0, 0)
    assert len(logged) == 2  # the first, then one summary at 5 s (the next is due at 15 s)
    at, left_out = logged[1]
    assert at == pytest.approx(5.0, abs=0.02)
    assert left_out == pytest.approx(300, abs=1)  # every failure is counted in some line
    assert repeats.next_interval_s("refused") == 10


def test_interval_doubles_to_the_cap_and_a_quiet_key_starts_over() -> None:
    clock = Clock()
    repeats = Repeats(first_s=5, max_s=60, clock=clock)
    times = []
    for second in range(400):
        clock.now = 1000.0 + second
        if repeats.admit("k") is not None:
            times.append(second)
    assert times == [0, 5, 15, 35, 75, 135, 195, 255, 315, 375]  # 5, 10, 20, 40, 60, 60, ...
    clock.now += 60  # quiet for the cap: the next one is a first again
    assert repeats.admit("k") == 0


def test_keys_are_independent() -> None:
    clock = Clock()
    repeats = Repeats(first_s=5, max_s=60, clock=clock)
    assert repeats.admit("a") == 0
    assert repeats.admit("b") == 0
    assert repeats.admit("a") is None
    clock.now += 5
    assert repeats.admit("a") == 1
    assert repeats.admit("b") == 0


@pytest.fixture
def events():
    with structlog.testing.capture_logs() as captured:
        yield captured


def _librdkafka_line(fac: str, text: str, level: int = logging.ERROR) -> None:
    # What confluent-kafka does with each librdkafka line once a logger is configured.
    logger = client_config({"bootstrap.servers": "b:1"})["logger"]
    assert isinstance(logger, logging.Logger)
    logger.log(level, "%s [%s] %s", fac, "rdkafka#consumer-1", text)


def test_librdkafka_lines_become_events_at_their_level_with_repeats_collapsed(
    events, monkeypatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(kafka_log._handler, "repeats", Repeats(clock=clock))
    for ms in range(100):
        _librdkafka_line(
            "FAIL", f"b:1/bootstrap: Connect failed: refused (after {ms}ms in CONNECT)"
        )
    _librdkafka_line("GETPID", "Coordinator load in progress: retrying", logging.WARNING)
    clock.now += 5
    _librdkafka_line("FAIL", "b:1/bootstrap: Connect failed: refused (after 0ms in CONNECT)")
    assert [(e["log_level"], e["facility"], e.get("repeated")) for e in events] == [
        ("error", "FAIL", None),
        ("warning", "GETPID", None),
        ("error", "FAIL", 99),
    ]
    assert events[0]["event"] == "kafka_client_log"
    assert events[0]["client"] == "rdkafka#consumer-1"
    assert events[2]["next_summary_s"] == 10


def test_lost_bootstrap_is_said_once_and_its_return_once(events) -> None:
    clock = Clock()
    found = KafkaLink("b:1", clock=clock)
    for _ in range(5):
        found.lost()
    assert not found.reachable
    clock.now += 12
    found.reached()
    found.reached()
    assert found.reachable
    assert [e["event"] for e in events] == ["kafka_unreachable", "kafka_reachable"]
    assert events[0]["check"] == "ANNREC_KAFKA_BOOTSTRAP"
    assert events[1]["down_s"] == 12


def test_error_and_stats_callbacks_drive_the_link(events) -> None:
    conf = client_config({"bootstrap.servers": "cb:1"})
    found = kafka_log.link(conf)
    conf["error_cb"](KafkaError(KafkaError._TRANSPORT, "refused"))
    assert found.reachable and events == []
    conf["error_cb"](KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    assert not found.reachable
    since = found.down_since
    assert since is not None
    later = int(since) + 2
    conf["stats_cb"](f'{{"time": {later}, "brokers": {{"cb:1/1": {{"state": "TRY_CONNECT"}}}}}}')
    assert not found.reachable
    # taken before the loss, served late (an idle client polled at last): not a recovery
    conf["stats_cb"](f'{{"time": {int(since) - 1}, "brokers": {{"cb:1/1": {{"state": "UP"}}}}}}')
    assert not found.reachable
    conf["stats_cb"](f'{{"time": {later}, "brokers": {{"cb:1/1": {{"state": "UP"}}}}}}')
    assert found.reachable
    assert [e["event"] for e in events] == ["kafka_unreachable", "kafka_reachable"]


def test_callers_settings_win_over_the_defaults() -> None:
    conf = client_config({"bootstrap.servers": "x:1", "reconnect.backoff.max.ms": 2000})
    assert conf["reconnect.backoff.max.ms"] == 2000
    assert conf["reconnect.backoff.ms"] == kafka_log.DEFAULTS["reconnect.backoff.ms"]
    assert callable(conf["error_cb"])
