"""`annrec demo` (what `make demo` runs) end to end, on the test services."""

from tests.cli import annrec


def test_demo_prints_recommendations_that_went_through_kafka_and_redis(services, tmp_path):
    temp = tmp_path / "tmp"  # where the demo's data folder goes: removed once it has run
    temp.mkdir()
    env = {
        "ANNREC_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ANNREC_REDIS_URL": services.redis_url,
        "ANNREC_STACK_DIR": str(tmp_path / "stack"),
        "TMPDIR": str(temp),
    }
    result = annrec("demo", extra_env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # Captured, not a terminal: no progress bars or escape sequences, and every log line in the
    # project's key=value format (librdkafka's own `%4|...` lines included, routed through it).
    assert "\x1b" not in result.stdout + result.stderr
    log_lines = [line for line in result.stderr.splitlines() if line.startswith("ts=")]
    assert log_lines and not [line for line in result.stderr.splitlines() if line.startswith("%")]
    assert f"into {temp}/annrec-demo-" in result.stderr
    assert list(temp.iterdir()) == []
    out = result.stdout
    assert out.count("same items as the Kafka reply") == 4
    assert "recommend for u0" in out and "similar_items for i0" in out
    assert '{"attr":"category","eq":"c03"}' in out and "items pass" in out  # the filtered one
    recalls = [
        float(line.rsplit(" ", 1)[1])
        for line in out.splitlines()
        if "against exact brute force" in line
    ]
    assert len(recalls) == 4 and min(recalls) >= 0.6
