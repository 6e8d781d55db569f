"""`annrec bench freshness --segment-only`: the in-process part alone, no services started."""

import json

from tests.cli import annrec


def test_segment_only_measures_the_segment_and_starts_no_kafka_phase(tmp_path):
    out = tmp_path / "fresh"
    small = ("--items", "3000", "--fresh", "200", "--queries", "40", "--dim", "16")
    # No Kafka or Redis here: a Kafka phase would fail to reach them.
    env = {"ANNREC_KAFKA_BOOTSTRAP": "127.0.0.1:1", "ANNREC_REDIS_URL": "redis://127.0.0.1:1"}
    result = annrec(
        "bench", "freshness", "--segment-only", *small, "--out", str(out), extra_env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "freshness.json").read_text())
    assert "freshness" not in results and not (out / "freshness.png").exists()
    for kind in ("recommend", "similar_items"):
        figures = results["segment"][kind]
        assert figures["with"]["recall_at_10"] >= figures["without"]["recall_at_10"] - 0.05
        assert figures["p99_with_vs_without"] > 0
    assert "similar_items" in result.stdout and "upsert -> first reply" not in result.stdout
