"""annrec bench scale's parts that need no services: /proc readings, child runs (peak memory,
failures, the memory watch), growth fits and projections, the fan-out simulation and merge, the
summary from size files. The whole benchmark runs through Kafka in tests/integration
(test_bench_quick.py)."""

import json
import os

import numpy as np
import pytest

from tools.bench import fanout
from tools.bench.procstat import (
    cpu_seconds,
    mapped_bytes,
    parse_cpu_seconds,
    parse_mapped,
    parse_status,
)
from tools.bench.scale import run_child
from tools.bench.scale_report import fit_growth, metrics_of, project, rate_rows, summarize

STATUS = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nRssAnon:\t   51200 kB\n"


def test_status_fields_in_mib():
    assert parse_status(STATUS) == {"VmHWM": 200, "VmRSS": 100, "RssAnon": 50}


def test_mapped_counts_only_files_under_the_folder(tmp_path):
    inside, other = tmp_path / "v1" / "items.ann", tmp_path / "v10" / "x.ann"
    maps = (
        f"7f0000000000-7f0000100000 r--s 00000000 fd:00 12 {inside}\n"
        f"7f0000100000-7f0000300000 r--s 00000000 fd:00 13 {other}\n"
        "7f0000300000-7f0000400000 rw-p 00000000 00:00 0\n"
    )
    (tmp_path / "v1").mkdir()
    assert parse_mapped(maps, tmp_path / "v1") == 0x100000  # not v10, not anonymous memory


def test_mapped_bytes_of_this_process_see_an_mmapped_array(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.ones(1_000_000, dtype=np.float32))
    arr = np.load(path, mmap_mode="r")
    assert mapped_bytes(tmp_path) >= path.stat().st_size
    del arr


def test_cpu_seconds_read_past_a_command_name_with_spaces_and_parentheses():
    stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0"
    assert parse_cpu_seconds(stat) == pytest.approx(400 / os.sysconf("SC_CLK_TCK"))


def test_cpu_seconds_of_this_process_grow_with_work():
    before = cpu_seconds(os.getpid())
    x = np.random.default_rng(0).random((300, 300))
    for _ in range(200):
        x = np.tanh(x @ x.T / 300)
    assert cpu_seconds(os.getpid()) > before


def test_child_peak_memory_is_its_own(tmp_path):
    # This process holds 400 MiB while it starts both children: getrusage would report at least
    # that for each of them (the high-water mark survives exec); their own peaks differ.
    held = np.ones(400 * 2**20 // 8)
    code = (
        "import numpy as np, time; a = np.ones(300 * 2**20 // 8); time.sleep(1); print(a.sum() > 0)"
    )
    small = run_child(["-c", "import time; time.sleep(1)"], tmp_path / "a.log", 0.0, module=True)
    big = run_child(["-c", code], tmp_path / "b.log", 0.0, module=True)
    assert big.failure is None and big.stdout.strip() == "True"
    assert big.peak_rss_mib >= 300 > small.peak_rss_mib > 0
    assert held.sum() > 0


def test_child_failure_names_the_exit_code_and_the_last_lines(tmp_path):
    code = "import sys; print('first', file=sys.stderr); sys.exit('out of luck')"
    run = run_child(["-c", code], tmp_path / "c.log", 0.0, module=True)
    assert run.returncode == 1
    assert run.failure is not None and "exit code 1" in run.failure and "out of luck" in run.failure


def test_memory_watch_stops_a_child_when_the_machine_runs_short(tmp_path):
    # A limit above the machine's memory: the watch must stop the child at its first look.
    run = run_child(["-c", "import time; time.sleep(60)"], tmp_path / "d.log", 1e6, module=True)
    assert run.returncode != 0
    assert run.failure is not None and "available memory fell" in run.failure
    assert run.wall_s < 30


def test_growth_fit_recovers_a_power_law_and_projects_it():
    ns = [100_000, 300_000, 1_000_000, 3_000_000]
    fit = fit_growth(ns, [2e-3 * n**1.25 for n in ns])
    assert fit is not None and fit["exponent"] == pytest.approx(1.25, abs=1e-3)
    assert project(fit, 10_000_000) == pytest.approx(2e-3 * 1e7**1.25, rel=1e-3)
    assert fit_growth([100_000], [1.0]) is None  # one point has no slope


def test_one_shard_is_the_measured_distribution_and_more_shards_cost_more():
    samples = np.random.default_rng(1).lognormal(1.0, 0.5, 50_000)
    q = fanout.quantiles(samples)
    one = fanout.simulate(q, q, 0.0, 1)
    assert one["p50_ms"] == pytest.approx(np.percentile(samples, 50), rel=0.02)
    p99s = [fanout.simulate(q, [0.0, 0.0], 0.0, s)["p99_ms"] for s in (1, 2, 4, 8, 16)]
    assert p99s == sorted(p99s) and p99s[-1] > p99s[0]
    # A constant shard time: the max is that time, plus the hop and the merge.
    assert fanout.simulate([5.0] * 11, [2.0] * 11, 0.5, 8)["p99_ms"] == pytest.approx(7.5)


def test_drawing_from_quantiles_is_their_linear_interpolation():
    q = fanout.quantiles(np.random.default_rng(2).lognormal(1.0, 0.7, 10_000))
    u = np.random.default_rng(3).random(5_000)
    u[:3] = [0.0, 1.0, 0.5]  # both ends of the grid and a point on it
    expected = np.interp(u, np.linspace(0, 1, len(q)), q)
    assert np.allclose(fanout.draw(q, u), expected, rtol=1e-12, atol=1e-12)


def test_the_slowest_shard_drawn_at_once_matches_the_max_of_each_shards_draw():
    # simulate draws max(S draws) as one draw at a uniform^(1/S); the explicit max of S
    # independent draws must have the same quantiles.
    q = fanout.quantiles(np.random.default_rng(4).lognormal(1.0, 0.6, 50_000))
    rng = np.random.default_rng(5)
    for s in (2, 8, 16):
        explicit = fanout.draw(q, rng.random((200_000, s))).max(axis=1)
        simulated = fanout.simulate(q, [0.0, 0.0], 0.0, s, seed=6)
        assert simulated["p50_ms"] == pytest.approx(np.percentile(explicit, 50), rel=0.02)
        assert simulated["p99_ms"] == pytest.approx(np.percentile(explicit, 99), rel=0.03)


def test_merge_takes_the_best_k_of_all_shards():
    rng = np.random.default_rng(2)
    partials, everything = [], []
    for s in range(4):
        scores = np.sort(rng.random(10))[::-1]
        items = [{"item_id": f"s{s}-{j}", "score": float(x)} for j, x in enumerate(scores)]
        everything += items
        reply = {"request_id": "r", "status": "ok", "items": items, "worker_id": f"w{s}"}
        partials.append(json.dumps(reply))
    merged = fanout.merge_replies(partials, 10)
    best = sorted(everything, key=lambda i: -i["score"])[:10]
    assert [i.item_id for i in merged] == [i["item_id"] for i in best]
    assert fanout.merge_cost_ms(4) > 0


def _size(n, wall, rss, stopped=None):
    size = {"n_items": n, "machine": MACHINE, "commit": "abc"}
    if stopped:
        return {**size, "build": {"failure": stopped}, "stopped": stopped}
    size["build"] = {"wall_s": wall, "peak_rss_mib": rss, "phases_s": {"angular_index": wall / 2}}
    size["disk_mib"] = {"items.angular.ann": rss / 2, "item_factors.npy": rss / 4}
    return size


MACHINE = {
    "cpu": "test",
    "cores": 2,
    "memory_gib": 8,
    "python": "3.11",
    "packages": {"numpy": "2", "annoy": "1"},
    "blas": [],
}


def test_summary_fits_the_sizes_and_projects_the_one_that_stopped(tmp_path, capsys):
    ns = [100_000, 300_000, 1_000_000]
    for n in ns:
        size = _size(n, 1e-4 * n**1.1, 1e-3 * n)
        (tmp_path / f"size-{n}.json").write_text(json.dumps(size))
    stopped = _size(3_000_000, 0, 0, stopped="build: killed by SIGKILL")
    (tmp_path / "size-3000000.json").write_text(json.dumps(stopped))
    # 10M's run was killed from outside: only its running file says where it was
    phase = {"seconds": 1070.2, "cpu_s": 308.8, "peak_rss_mib": 7521, "attempt": 1}
    running = {
        "n_items": 10_000_000,
        "updated_at": "2026-12-02T02:00:00Z",
        "elapsed_s": 2400,
        "stage": "build",
        "build_running": {
            "peak_rss_mib": 8379,
            "phases_done": {"angular_index": phase},
            "phase_running": "mips_index",
        },
    }
    (tmp_path / "running-10000000.json").write_text(json.dumps(running))
    summary = summarize(tmp_path)
    assert summary["unfinished"][10_000_000]["build_running"]["phase_running"] == "mips_index"
    assert summary["growth"]["build_wall_s"]["exponent"] == pytest.approx(1.1, abs=0.01)
    assert summary["growth"]["build_peak_rss_mib"]["exponent"] == pytest.approx(1.0, abs=0.01)
    assert summary["stopped"] == {3_000_000: "build: killed by SIGKILL"}
    projected = summary["projected"][3_000_000]["build_peak_rss_mib"]
    assert projected == pytest.approx(3000, rel=0.01)
    assert metrics_of(stopped) == {}  # a stopped size adds no measured point
    stopped["build"]["phases_done"] = {"angular_index": {"seconds": 270.0, "cpu_s": 82.0}}
    assert metrics_of(stopped) == {"phase_angular_index_s": 270.0}  # but its finished phases
    printed = capsys.readouterr().out
    assert "| 1,000,000 |" in printed and "stopped at 3,000,000 items" in printed
    assert "projected at 3,000,000 (from the fits, not measured)" in printed
    assert "unfinished at 10,000,000 items" in printed and "phase mips_index" in printed
    assert "angular_index 1,070 s (309 CPU s, peak 7,521 MiB)" in printed
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "scale.json").read_text())["growth"]


def test_chunked_synthetic_factors_match_the_one_shot_ones_within_a_chunk(tmp_path):
    from index_builder.inputs import load_factors
    from index_builder.synth import synth_factors, write_synth_factors

    write_synth_factors(tmp_path / "a.npz", 3000, 300, 16, seed=5)
    same = load_factors(tmp_path / "a.npz")
    one_shot = synth_factors(3000, 300, 16, seed=5)
    assert np.array_equal(same.item_factors, one_shot.item_factors)
    assert np.array_equal(same.user_factors, one_shot.user_factors)
    write_synth_factors(tmp_path / "b.npz", 3000, 300, 16, seed=5, chunk_rows=700)
    chunked = load_factors(tmp_path / "b.npz")  # validated: finite, unique ids
    assert chunked.item_factors.shape == (3000, 16) and len(set(chunked.item_ids)) == 3000
    assert not np.array_equal(chunked.item_factors, one_shot.item_factors)
    norms = [np.median(np.linalg.norm(f.item_factors, axis=1)) for f in (chunked, one_shot)]
    assert norms[0] == pytest.approx(norms[1], rel=0.1)  # the same distribution


def test_quick_stops_at_300k_whatever_the_command_line_says():
    import argparse

    from tools.bench.cli import KINDS, apply_quick
    from tools.bench.scale import register

    assert KINDS["scale"].register == "tools.bench.scale:register"
    parser = argparse.ArgumentParser()
    register(parser)
    args = apply_quick(parser.parse_args(["--out", "x", "--quick", "--sizes", "10000000"]))
    assert max(int(n) for n in args.sizes.split(",")) <= 300_000 and args.queries < 200


def _log_line(event, phase, **fields):
    return json.dumps({"event": event, "phase": phase, "level": "info", **fields})


def test_build_phases_are_read_across_the_attempts_that_continued_each_other(tmp_path):
    from tools.bench.scale import build_phases, combine_attempts

    first, second = tmp_path / "build.log.1", tmp_path / "build.log"
    done = {"cpu_s": 50.0, "peak_rss_mib": 700}
    first.write_text(
        "\n".join(
            [
                _log_line("build_phase_started", "angular_index"),
                _log_line("build_phase_done", "angular_index", seconds=100.0, **done),
                _log_line("build_phase_started", "mips_index"),
                "not json: a librdkafka line",
            ]
        )
    )
    stopped = build_phases([first])
    assert stopped["phase_running"] == "mips_index"
    assert stopped["phases_done"]["angular_index"] == {"seconds": 100.0, **done, "attempt": 1}
    second.write_text(
        "\n".join(
            [
                _log_line("build_phase_started", "mips_index"),
                _log_line("build_phase_done", "mips_index", seconds=40.0, **done),
                _log_line("build_phase_started", "verify"),
                _log_line("build_phase_done", "verify", seconds=5.0, **done),
            ]
        )
    )
    third = tmp_path / "build.log.3"
    third.write_text(_log_line("build_phase_started", "angular_index"))
    redoing = build_phases([first, third])  # not resumed: the phase runs again
    assert redoing["phase_running"] == "angular_index" and redoing["phases_done"] == {}
    both = build_phases([first, second])
    assert both["phase_running"] is None
    assert {k: v["attempt"] for k, v in both["phases_done"].items()} == {
        "angular_index": 1,
        "mips_index": 2,
        "verify": 2,
    }
    last = {"wall_s": 60.0, "peak_rss_mib": 900, "attempt": 2, **both}
    earlier = [{"wall_s": 130.0, "peak_rss_mib": 1200}]
    combined = combine_attempts(last, earlier)
    # the phases once each (100 + 40 + 5) plus the last attempt's 15 s outside its phases
    assert combined["wall_s"] == 160.0
    assert combined["peak_rss_mib"] == 1200 and combined["attempts_wall_s"] == [130.0, 60.0]
    assert combine_attempts(last, []) == last


def test_an_earlier_attempts_log_is_kept_under_the_next_number(tmp_path):
    from tools.bench.scale import _keep_earlier_log

    log = tmp_path / "build.log"
    assert _keep_earlier_log(log) == []
    for text in ("first", "second"):
        log.write_text(text)
        kept = _keep_earlier_log(log)
    assert [p.name for p in kept] == ["build.log.1", "build.log.2"]
    assert [p.read_text() for p in kept] == ["first", "second"] and not log.exists()


def _point(rate, p99, sustained, answered=None):
    sent = rate * 3
    return {
        "rate": rate,
        "sent": sent,
        "answered": sent if answered is None else answered,
        "latency_ms": {"p50": 2.0, "p99": p99},
        "sustained": sustained,
        "core_ms_per_request": 1.5,
    }


def _search(points, held):
    return {"points": points, "max_rate_at_p99": held}


def test_rates_are_set_side_by_side_with_the_echo_workers_and_the_last_try_counts(tmp_path, capsys):
    size = _size(1_000_000, 100.0, 1000.0)
    size["kafka"] = {
        # 200/s failed once and held on its second try; 400/s lost replies twice
        "recommend": _search(
            [
                _point(100, 9.0, True),
                _point(200, 40.0, False),
                _point(200, 20.0, True),
                _point(400, 90.0, False, answered=1100),
                _point(400, 80.0, False, answered=1150),
                _point(300, 30.0, False),
            ],
            200,
        ),
        "similar_items": _search([_point(100, 12.0, True), _point(200, 30.0, False)], 100),
        "no_live_recall": {
            "recommend": _search([_point(100, 8.0, True), _point(200, 12.0, True)], 200),
            "similar_items": _search([_point(100, 9.0, True)], 100),
        },
        "echo_search": _search([_point(100, 3.0, True), _point(200, 4.0, True)], 200),
    }
    rows = rate_rows(size)
    assert [r["rate"] for r in rows] == [100, 200, 300, 400]
    assert rows[1]["recommend"]["latency_ms"]["p99"] == 20.0  # the try that held
    assert rows[3]["recommend"]["answered"] == 1150
    assert "similar_items" not in rows[2] and "echo" not in rows[3]
    assert rows[1]["recommend, no_live_recall"]["latency_ms"]["p99"] == 12.0
    assert metrics_of(size)["echo_max_rate"] == 200
    assert metrics_of(size)["recommend_max_rate_no_live_recall"] == 200
    (tmp_path / "size-1000000.json").write_text(json.dumps(size))
    summary = summarize(tmp_path)
    assert [r["rate"] for r in summary["rates"][1_000_000]] == [100, 200, 300, 400]
    printed = capsys.readouterr().out
    head = "| items | rate/s | recommend p50 / p99 ms | similar_items p50 / p99 ms | "
    head += "recommend, no_live_recall p50 / p99 ms | similar_items, no_live_recall p50 / p99 ms | "
    assert head + "echo p50 / p99 ms |" in printed
    row = (
        "| 1,000,000 | 200 | 2.0 / 20.0 ok | 2.0 / 30.0 missed | 2.0 / 12.0 ok | - | 2.0 / 4.0 ok |"
    )
    assert row in printed
    assert "| 1,000,000 | 400 | 2.0 / 80.0 1,150 of 1,200 back | - | - | - | - |" in printed
    assert "| 200 / 100 / 200 |" in printed  # the summary table's rates at the bound
