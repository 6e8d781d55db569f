"""bench build's per-request figures: the version loaded as a worker loads it, answers through
answer() against the exact scan of the same queries."""

from index_builder.publish import BuildOptions, publish_version
from index_builder.synth import synth_factors
from schemas.layout import read_latest, version_dir
from schemas.manifest import Manifest
from tests.cli import annrec
from tools.bench.served import measure_served


def test_answers_are_measured_against_the_exact_scan(tmp_path):
    factors = synth_factors(n_items=600, n_users=50, dim=8, n_clusters=6, seed=4)
    storage = tmp_path / "s"
    manifest = publish_version(factors, storage, BuildOptions(n_trees=5, quality=False))
    figures = measure_served(storage, manifest.version, n_queries=30)
    assert list(figures) == [
        "similar_items k=10",
        "similar_items k=50",
        "similar_items k=100",
        "recommend k=10",
    ]
    # 600 items: the exact graph, and k=10 within its width: every answer is the exact one.
    assert figures["similar_items k=10"]["recall_at_k"] == 1.0
    for f in figures.values():
        assert f["queries"] == 30 and 0.5 <= f["recall_at_k"] <= 1.0
        for path in ("exact_us", "core_us", "answer_us"):
            assert 0 < f[path]["p50_us"] <= f[path]["p99_us"]
        assert f["answer_vs_exact"] > 0


def test_a_version_without_a_table_says_so_in_its_manifest(tmp_path):
    common = ("--no-announce", "--storage", str(tmp_path / "s"), "--no-quality")
    synth = ("--synth", "--items", "200", "--users", "10", "--dim", "4")
    result = annrec("build", *synth, "--neighbours", "0", *common)
    assert result.returncode == 0, result.stderr
    latest = read_latest(tmp_path / "s")
    manifest = Manifest.model_validate_json(
        (version_dir(tmp_path / "s", latest) / "manifest.json").read_text()
    )
    assert manifest.neighbour_table is None
