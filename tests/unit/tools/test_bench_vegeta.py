"""Reading vegeta's results: latencies counted from the scheduled send, the schedule's lag, the
gateway's Server-Timing, errors (tools/bench/vegeta.py)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from schemas.errors import AnnrecError
from tools.bench import vegeta
from tools.bench.vegeta import Target, parse_results_csv, targets_jsonl

T0 = 1_764_000_000_000_000_000  # Unix ns
HEADERS = (
    "Server-Timing: gateway;dur=3.5, handover;dur=0.25\r\nContent-Type: application/json\r\n\r\n"
)


def _row(
    seq: int,
    start_ms: float,
    latency_ms: float,
    code: int = 200,
    error: str = "",
    headers: str = HEADERS,
) -> str:
    """One line as `vegeta encode --to csv` writes it (12 columns, headers base64)."""
    cols = [
        str(T0 + int(start_ms * 1e6)),
        str(code),
        str(int(latency_ms * 1e6)),
        "60",
        "0",
        error,
        "",
        "",
        str(seq),
        "POST",
        "http://127.0.0.1:8080/v1/recommend",
        base64.b64encode(headers.encode()).decode() if code else "",
    ]
    return ",".join(f'"{c}"' if "," in c else c for c in cols) + "\n"


def test_latency_counts_from_the_scheduled_send_and_the_lag_is_reported():
    # 500/s: request n is due at 2n ms. Rows out of order, as results arrive.
    text = (
        _row(2, 7.0, 1.0)  # due at 4 ms, started 3 ms late
        + _row(0, 0.0, 2.0)
        + _row(1, 2.0, 4.0)  # on time
        + _row(3, 6.0, 1.5)  # on time
    )
    hits = parse_results_csv(text)
    assert hits.seq.tolist() == [0, 1, 2, 3]
    assert hits.lag_ms(500) == pytest.approx([0, 0, 3, 0])
    assert hits.from_schedule_ms(500) == pytest.approx([2, 4, 4, 1.5])
    assert hits.latency_ms == pytest.approx([2, 4, 1, 1.5])
    assert hits.server_ms == pytest.approx([3.5] * 4)
    assert hits.handover_ms == pytest.approx([0.25] * 4)


def test_the_first_send_is_the_earliest_on_its_schedule_even_when_request_0_was_late():
    text = _row(0, 5.0, 1.0) + _row(1, 2.0 + 0.0, 1.0) + _row(2, 4.0, 1.0)
    hits = parse_results_csv(text)
    assert hits.lag_ms(500) == pytest.approx([5, 0, 0])


def test_codes_errors_and_a_missing_server_timing():
    text = (
        _row(0, 0.0, 5000.0, code=0, error='Post "http://x": connection refused')
        + _row(1, 2.0, 1.0, code=504, headers="Content-Type: application/json\r\n\r\n")
        + _row(2, 4.0, 1.0, code=0, error='Post "http://x": connection refused')
    )
    hits = parse_results_csv(text)
    assert hits.code.tolist() == [0, 504, 0]
    assert hits.errors == {'Post "http://x": connection refused': 2}
    assert np.isnan(hits.server_ms).all() and np.isnan(hits.handover_ms).all()


def test_targets_are_vegetas_json_format_with_the_body_base64():
    lines = targets_jsonl([Target("http://h/v1/recommend", b'{"user_id":"u1"}')]).splitlines()
    [doc] = [json.loads(line) for line in lines]
    assert doc["method"] == "POST" and doc["url"] == "http://h/v1/recommend"
    assert base64.b64decode(doc["body"]) == b'{"user_id":"u1"}'
    assert doc["header"] == {"Content-Type": ["application/json"]}


def test_without_vegeta_or_go_the_bench_stops_with_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither vegeta nor go on it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing built before
    monkeypatch.setattr(vegeta, "GO_FALLBACK", tmp_path / "no-go")
    with pytest.raises(AnnrecError, match=r"vegeta is not on PATH and Go is not installed") as e:
        vegeta.find_vegeta()
    assert "\n" not in str(e.value)


def test_a_vegeta_built_before_is_found_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built = tmp_path / "cache" / "annrec" / "bin" / f"vegeta-{vegeta.VERSION}"
    built.parent.mkdir(parents=True)
    built.write_bytes(b"")
    assert vegeta.find_vegeta() == built
