"""`annrec bench personalization --quick` through the CLI: the benchmark cannot rot, and its
figures are the ones it claims (every method on the same predictions, every event reflected)."""

import json

from tests.cli import annrec


def test_bench_personalization_quick(services, tmp_path):
    out = tmp_path / "personalization"
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        "ANNREC_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ANNREC_REDIS_URL": services.redis_url,
        "TMPDIR": str(temp),
    }
    result = annrec("bench", "personalization", "--quick", "--out", str(out), extra_env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "personalization.json").read_text())
    q = doc["quality"]
    assert q["predictions"] == 500 and q["streamed"] > 0
    methods = q["methods"]
    assert {"popularity", "static", "recent_items in request"} <= set(methods)
    assert {m for m in methods if m.startswith("stream: ")} >= {"stream: recent", "stream: prior 1"}
    for m in methods.values():
        assert 0 <= m["ndcg_at_10"] <= m["hit_rate_at_10"] <= 1
    assert q["best_stream"] in methods and q["hit_ratio_vs_static"] > 0
    d = doc["delay"]
    assert d["events"] == 150 and d["reflected"] == 150  # 50/s for 3 s, every one reflected
    assert d["event_to_reflecting_reply_ms"]["p50"] <= d["event_to_reflecting_reply_ms"]["p99"]
    assert d["request_to_reply_without_events_ms"]["p99"] > 0  # the same load, without events
    assert d["request_p99_with_vs_without_events"] > 0
    assert (out / "personalization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best stream combination" in result.stdout
    assert list(temp.iterdir()) == []
