"""The Prometheus and Grafana files of docker-compose.yml (not run here: no Docker engine) must at
least agree with the worker: every metric a dashboard panel queries is one a worker exports, the
scrape config targets the worker's metrics port, and compose mounts the files it names."""

import json
import re
from pathlib import Path

import yaml

from worker.metrics import WorkerMetrics
from worker.settings import WorkerSettings
from worker.shadow import ShadowSampler

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "annrec.json"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _exported() -> set[str]:
    metrics = WorkerMetrics()
    ShadowSampler(metrics.registry)  # its metrics live in the worker's registry
    return {family.name for family in metrics.registry.collect()}


def _family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_every_dashboard_query_uses_exported_metrics():
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    used = {_family(m) for e in exprs for m in re.findall(r"annrec_[a-z_]+", e)}
    assert used, "the dashboard queries annrec metrics"
    assert used <= _exported(), used - _exported()
    # and the figures issue 8 asks operators to see are all on it
    for needed in ("annrec_live_recall", "annrec_consumer_lag", "annrec_index_age_seconds"):
        assert needed in used


def test_alert_rules_query_exported_metrics_and_are_loaded():
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounted = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"])
    for path in prom["rule_files"]:
        assert (ROOT / mounted[path]).exists(), path
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    used = {_family(m) for e in exprs.values() for m in re.findall(r"annrec_[a-z_]+", e)}
    assert used <= _exported(), used - _exported()
    # time waited in the topic, expiries, lag and stalls (issue 21)
    for needed in (
        "annrec_request_latency_seconds",
        "annrec_queue_wait_seconds",
        "annrec_consumer_lag",
        "annrec_stalled_partitions",
    ):
        assert needed in used, needed
    assert 'outcome="expired"' in exprs["AnnrecRequestsExpiring"]


def test_scrape_config_targets_the_workers_metrics_port():
    prom = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = prom["scrape_configs"]
    assert job["dns_sd_configs"][0]["port"] == WorkerSettings.model_fields["metrics_port"].default
    assert job["metrics_path"] == "/metrics"


def test_compose_mounts_the_files_it_names():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in ("prometheus", "grafana"):
        for volume in compose["services"][service]["volumes"]:
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), source
