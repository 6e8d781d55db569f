"""bench e2e with shop-like traffic (--mix, --zipf), through the CLI on real Kafka and Redis."""

import json

from tests.cli import annrec


def test_bench_e2e_mixed_traffic_quick(services, tmp_path):
    out = tmp_path / "e2e"
    env = {
        "ANNREC_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ANNREC_REDIS_URL": services.redis_url,
        "ANNREC_STACK_DIR": str(tmp_path / "stack"),
    }
    mix = ("--mix", "similar=50,recommend=40,filtered=10", "--zipf", "1.1")
    result = annrec("bench", "e2e", "--quick", *mix, "--out", str(out), extra_env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "e2e.json").read_text())
    assert list(results["runs"]) == ["echo", "1 worker", "1 worker + reply cache"]
    assert results["params"]["request"] == (
        "mix similar=50,recommend=40,filtered=10, zipf 1.1, k=10"
    )
    assert results["params"]["warmup_s"] == 0.5
    for points in results["runs"].values():
        first, second = points
        assert first["answered"] == first["sent"] == 100  # 50/s for 2 s, nothing lost
        # Each configuration's first rate comes after its warm-up, counted apart; the next
        # rate reuses the warm clients.
        assert first["warmup"]["sent"] == first["warmup"]["answered"] == 25
        assert "warmup" not in second
    assert "1 worker + reply cache" in result.stdout


def test_an_unknown_request_kind_in_the_mix_is_a_one_line_error(tmp_path):
    result = annrec("bench", "e2e", "--quick", "--mix", "views=5", "--out", str(tmp_path))
    assert result.returncode != 0
    assert "--mix: unknown kind 'views'" in result.stderr
    assert "Traceback" not in result.stderr
