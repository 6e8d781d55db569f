"""`annrec bench models --quick` through the CLI on real Kafka and Redis."""

import json

from tests.integration.test_bench_quick import _bench


def test_bench_models_quick(services, tmp_path):
    out = tmp_path / "models"
    printed = _bench("models", out, services, tmp_path)
    results = json.loads((out / "models.json").read_text())
    [round_] = results["rounds"]
    for label, models in (("one model", ["default"]), ("two models", ["default", "second"])):
        phase = round_["phases"][label]
        assert phase["models"] == models
        assert phase["answered"] == phase["sent"] > 0  # none lost
        assert phase["resident_mib"]["RssFile"] > 0
    assert set(results["models"]) == {"default", "second"}
    assert results["p99_ratio_median"] > 0
    assert (out / "models.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "p99 two models / one model" in printed
