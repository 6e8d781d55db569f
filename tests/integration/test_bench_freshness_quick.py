"""`annrec bench freshness --quick` through the CLI on real Kafka and Redis."""

import json

from tests.integration.test_bench_quick import _bench


def test_bench_freshness_quick(services, tmp_path):
    out = tmp_path / "freshness"
    printed = _bench("freshness", out, services, tmp_path)
    results = json.loads((out / "freshness.json").read_text())
    segment, fresh = results["segment"], results["freshness"]
    for kind in ("recommend", "similar_items"):
        # Brute force over version + segment: the segment is scanned exactly.
        assert (
            segment[kind]["with"]["recall_at_10"] >= segment[kind]["without"]["recall_at_10"] - 0.02
        )
    assert fresh["visible"] == fresh["upserts"] > 0  # every upsert reached a reply
    assert fresh["requests_answered"] == fresh["requests_sent"]  # none lost
    assert (out / "freshness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "upsert -> first reply holding it" in printed
