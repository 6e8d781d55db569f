"""Every benchmark in --quick mode, through the CLI, so the benchmark code cannot rot."""

import json

from tests.cli import annrec


def _bench(kind, out, services, tmp_path, *extra):
    temp = tmp_path / "tmp"  # the benchmark's temporary folders: none may be left behind
    temp.mkdir(exist_ok=True)
    env = {
        "ANNREC_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
        "ANNREC_REDIS_URL": services.redis_url,
        "ANNREC_STACK_DIR": str(tmp_path / "stack"),
        "TMPDIR": str(temp),
    }
    result = annrec("bench", kind, "--quick", "--out", str(out), *extra, extra_env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(temp.iterdir()) == []
    # Only results in --out (and `bench build`'s storage, which it measures and keeps).
    assert [p.name for p in out.iterdir() if p.is_dir()] in ([], ["storage"])
    return result.stdout


def test_bench_e2e_quick(services, tmp_path):
    out = tmp_path / "e2e"
    printed = _bench("e2e", out, services, tmp_path)
    results = json.loads((out / "e2e.json").read_text())
    assert set(results["runs"]) == {
        "echo",
        "1 worker",
        "1 worker, no live recall",
        "2 workers",
        "1 worker + 3 swaps",
    }
    first = results["runs"]["echo"][0]
    assert first["answered"] == first["sent"] == 100  # 50/s for 2 s, nothing lost
    assert (out / "e2e_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "highest sustained rate, echo" in printed


def test_bench_build_and_ann_quick(services, tmp_path):
    printed = _bench("build", tmp_path / "build", services, tmp_path)
    build = json.loads((tmp_path / "build" / "build.json").read_text())
    assert build["peak_rss_mib"] > 0 and "mips_index" in build["phases_s"]
    assert "peak RSS" in printed
    # Measured again without a build: the build's figures kept, the served ones new.
    printed = _bench("build", tmp_path / "build", services, tmp_path, "--measure-only")
    again = json.loads((tmp_path / "build" / "build.json").read_text())
    assert again["phases_s"] == build["phases_s"] and again["wall_s"] == build["wall_s"]
    assert again["served_measured"]["version"] and "measured again" in printed
    assert again["served"].keys() == build["served"].keys()
    _bench("ann", tmp_path / "ann", services, tmp_path)
    ann = json.loads((tmp_path / "ann" / "ann.json").read_text())
    assert ann["params"]["n_items"] == 3000


def test_bench_filters_quick(services, tmp_path):
    out = tmp_path / "filters"
    printed = _bench("filters", out, services, tmp_path)
    result = json.loads((out / "filters.json").read_text())
    for task in ("recommend", "similar_items"):
        rows = result["tasks"][task]
        assert [r["selectivity"] for r in rows] == [0.5, 0.1, 0.01, 0.001, 0.0001]
        for r in rows:
            assert r["exact_subset"]["recall_at_10"] == 1.0  # it is the ground truth
            assert r["planner"]["mean_results"] == min(10, r["passing"])  # always k
        # post-filtering 100 candidates cannot find 10 passing items at 0.1% selectivity
        assert rows[3]["post_filter"]["mean_results"] < 10
    assert (out / "filters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| selectivity |" in printed
    # max_per: every attribute and n for both kinds, k results always (the catalogue has them)
    assert len(result["max_per"]) == 2 * 3 * 3
    for r in result["max_per"]:
        assert r["mean_results"] == 10 and r["short_answers"] == 0
    assert result["explain"]["max_relative_sum_error"] < 1e-4
    assert "| task | attribute | n |" in printed and "explain / plain" in printed


def test_bench_load_quick(services, tmp_path):
    out = tmp_path / "load"
    printed = _bench("load", out, services, tmp_path)
    result = json.loads((out / "load.json").read_text())
    idle, loading = result["phases"]["idle"], result["phases"]["loading"]
    assert idle["queries"] > 100 and loading["queries"] > 0  # served all along the load
    assert len(result["load_seconds"]) == len(result["swap_pause_ms"]) == 1
    assert result["p99_ratio_loading_over_idle"] == loading["p99_ms"] / idle["p99_ms"]
    assert (out / "load_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| loading |" in printed


def test_bench_training_quick(tmp_path):
    """No services needed: the synthetic log of seed 0, popularity vs default vs tuned ALS."""
    out, temp = tmp_path / "training", tmp_path / "tmp"
    temp.mkdir()
    result = annrec(
        "bench", "training", "--quick", "--out", str(out), extra_env={"TMPDIR": str(temp)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert list(temp.iterdir()) == []
    (seed,) = json.loads((out / "training.json").read_text())["seeds"]
    popularity = seed["popularity"]["hit_rate_at_k"]
    assert seed["default"]["hit_rate_at_k"] > popularity  # the default path never below it
    assert seed["tuned"]["hit_rate_at_k"] >= 1.5 * popularity  # the target
    assert len(seed["tuning"]["curve"]) >= 10
    assert (out / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "tuned / popularity hit@10" in result.stdout


def test_bench_scale_quick(services, tmp_path):
    out = tmp_path / "scale"
    printed = _bench("scale", out, services, tmp_path)
    summary = json.loads((out / "scale.json").read_text())
    assert sorted(int(n) for n in summary["sizes"]) == [5_000, 15_000]
    for n in (5_000, 15_000):
        size = json.loads((out / f"size-{n}.json").read_text())
        assert size["build"]["returncode"] == 0 and size["build"]["peak_rss_mib"] > 0
        assert "angular_index" in size["build"]["phases_s"]  # the build's own phases
        assert size["disk_mib"]["items.angular.ann"] > 0
        memory = size["worker"]["memory"]
        # the worker maps the whole version (every byte of the index files)
        assert memory["mapped_version_mib"] >= size["disk_mib"]["items.angular.ann"] - 1
        for kind in ("recommend", "similar_items"):
            assert size["worker"]["queries"][kind]["recall_at_10"] >= 0.9
            search = size["kafka"][kind]
            assert search["points"] and all(p["answered"] == p["sent"] for p in search["points"])
            assert all(p["core_ms_per_request"] > 0 for p in search["points"])
        # the echo worker's search beside the worker's at every size, from the same first rate
        echo = size["kafka"]["echo_search"]
        assert echo["points"] and all(p["answered"] == p["sent"] for p in echo["points"])
        assert echo["points"][0]["rate"] == search["points"][0]["rate"]
    assert summary["growth"]["disk_mib"]["exponent"] > 0.8  # disk grows about linearly
    # the fan-out simulated from the distributions measured, for each size and kind
    simulated = summary["fanout"]["shards"]
    assert {"5000 recommend", "15000 similar_items", "5000 echo (no search)"} <= set(simulated)
    for entry in simulated.values():
        p99s = [row["p99_ms"] for row in entry["rows"]]
        assert p99s == sorted(p99s)  # waiting for more shards never makes the tail shorter
    assert (out / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| items | build s |" in printed and "growth (log-log least squares)" in printed
