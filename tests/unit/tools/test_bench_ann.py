import json
from itertools import pairwise

import pytest

from tools.bench.ann import bench_ann
from tools.bench.sweep import pareto, search_k_grid

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ("item->items", "user->items")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("ann")
    returned = bench_ann(
        out, 3000, datasets=["synth"], n_trees=20, queries=100, timed_queries=30, seed=1
    )
    return out, returned


def test_writes_json_with_every_method_and_task(result):
    out, returned = result
    doc = json.loads((out / "ann.json").read_text())
    assert doc == json.loads(json.dumps(returned))  # the file is what the call returned
    assert doc["command"] and doc["machine"]["blas"] is not None
    assert doc["params"]["n_items"] == 3000 and doc["params"]["dim"] == 64
    synth = doc["datasets"]["synth"]
    assert synth["n_items"] == 3000 and synth["dim"] == 64
    assert set(synth["tasks"]) == set(TASKS)
    for task in synth["tasks"].values():
        assert task["queries"] == 100 and task["timed_queries"] == 30
        names = [m["name"] for m in task["methods"]]
        assert names[:3] == ["brute_single", "brute_batched", "annrec"]
        for m in task["methods"]:
            assert m["build_s"] >= 0 and m["index_bytes"] > 0 and m["points"]
            for p in m["points"]:
                assert 0.0 <= p["recall_at_10"] <= 1.0 and p["queries_per_s"] > 0
                assert p["speedup_vs_single"] > 0 and p["speedup_vs_batched"] > 0


def test_brute_force_is_exact(result):
    _, doc = result
    for task in doc["datasets"]["synth"]["tasks"].values():
        brute = {m["name"]: m for m in task["methods"] if m["name"].startswith("brute")}
        assert len(brute) == 2
        for m in brute.values():
            assert m["points"][0]["recall_at_10"] == 1.0
        assert brute["brute_single"]["points"][0]["speedup_vs_single"] == 1.0


def _grows(points):
    ks = [p["param"]["search_k"] for p in points]
    recalls = [p["recall_at_10"] for p in points]
    assert ks == sorted(ks) and len(set(ks)) == len(ks)
    # Non-decreasing up to sampling noise (100 queries: one neighbour of 1000 is 0.001).
    assert all(b >= a - 0.02 for a, b in pairwise(recalls))
    return ks, recalls


def test_annrec_recall_grows_with_search_k(result):
    _, doc = result
    tasks = doc["datasets"]["synth"]["tasks"]
    item = next(m for m in tasks["item->items"]["methods"] if m["name"] == "annrec")
    ks, recalls = _grows(item["points"])
    # The grid runs until search_k covers the catalogue or recall is near-perfect.
    assert ks[-1] >= 3000 or recalls[-1] >= 0.995
    assert recalls[-1] >= 0.9
    user = next(m for m in tasks["user->items"]["methods"] if m["name"] == "annrec")
    heads = {p["param"]["exact_items"] for p in user["points"]}
    assert heads == {512, 2560}  # 3000 items: [0, 512) and [512, 3000); the head is one or both
    groups = {(p["param"]["exact_items"], p["param"]["bound_factor_pct"]) for p in user["points"]}
    for group in groups:
        _grows(
            [
                p
                for p in user["points"]
                if (p["param"]["exact_items"], p["param"]["bound_factor_pct"]) == group
            ]
        )
    # The norm bands answer skewed-norm MIPS well where one augmented index does not.
    assert max(p["recall_at_10"] for p in user["points"]) >= 0.95


def test_user_to_items_alternatives_are_measured_side_by_side(result):
    _, doc = result
    methods = {m["name"]: m for m in doc["datasets"]["synth"]["tasks"]["user->items"]["methods"]}
    for name in ("xbox", "xbox_k", "head_xbox", "angular_ip", "bands_5t", "bands_20t"):
        assert methods[name]["points"], name
        if not name.startswith("bands"):
            _grows(methods[name]["points"])
    # The exact head can only add true neighbours to what the same index finds.
    for plain, headed in zip(
        methods["xbox"]["points"], methods["head_xbox"]["points"], strict=False
    ):
        assert headed["recall_at_10"] >= plain["recall_at_10"] - 1e-9


def test_peers_are_measured_or_reported_skipped(result):
    _, doc = result
    for name, status in doc["peers"].items():
        assert status["available"] in (True, False)
        assert status.get("version") if status["available"] else status.get("skipped")
        for task in doc["datasets"]["synth"]["tasks"].values():
            measured = [m for m in task["methods"] if m["name"] == name]
            assert len(measured) == (1 if status["available"] else 0)


def test_plots_are_png_files(result):
    out, doc = result
    assert doc["plots"] == ["ann-synth.png"]
    assert (out / "ann-synth.png").read_bytes()[:8] == PNG_MAGIC


def test_without_peers_and_variants_only_annrec_and_brute_force(tmp_path, capsys):
    doc = bench_ann(
        tmp_path,
        500,
        datasets=["synth"],
        n_trees=5,
        queries=20,
        timed_queries=5,
        peers=False,
        variants=False,
    )
    for task in doc["datasets"]["synth"]["tasks"].values():
        assert [m["name"] for m in task["methods"]] == ["brute_single", "brute_batched", "annrec"]
    assert all(s["available"] is False for s in doc["peers"].values())
    printed = capsys.readouterr().out
    assert "synth item->items" in printed and "synth user->items" in printed


def test_search_k_grid_doubles_up_to_the_catalogue():
    assert search_k_grid(110, 1000) == [110, 220, 440, 880, 1760]
    assert search_k_grid(100, 50) == [100]


def test_pareto_keeps_points_nothing_beats():
    points = [
        {"recall_at_10": 0.5, "queries_per_s": 100.0},
        {"recall_at_10": 0.6, "queries_per_s": 50.0},
        {"recall_at_10": 0.4, "queries_per_s": 80.0},  # beaten by the first
        {"recall_at_10": 0.9, "queries_per_s": 10.0},
    ]
    assert [p["recall_at_10"] for p in pareto(points)] == [0.5, 0.6, 0.9]


def test_unknown_dataset_is_refused(tmp_path):
    from schemas.errors import InvalidInput

    with pytest.raises(InvalidInput, match="datasets"):
        bench_ann(tmp_path, 100, datasets=["movielens"])


def test_markdown_summary_quotes_the_fastest_point_per_recall_level(result):
    from tools.bench.ann_table import markdown_summary

    _, doc = result
    table = markdown_summary(doc, (0.5, 1.01)).splitlines()
    methods = [
        m
        for task in doc["datasets"]["synth"]["tasks"].values()
        for m in task["methods"]
        if not m["name"].startswith("brute")
    ]
    assert len(table) == 2 + len(methods)
    for line, m in zip(table[2:], methods, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == m["label"]
        reached = [p for p in m["points"] if p["recall_at_10"] >= 0.5]
        if reached:
            fastest = max(reached, key=lambda p: p["queries_per_s"])
            assert cells[3].startswith(f"{fastest['recall_at_10']:.3f}:")
        else:
            assert cells[3] == "-"
        assert cells[4] == "-"  # no recall above 1
