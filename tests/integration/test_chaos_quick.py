"""Every chaos scenario in --quick mode through the CLI, on a stack of its own: the outage
scenario freezes Redis and restarts the broker, which must not hit the session's shared stack."""

import json
import os

import pytest

from tests.cli import annrec


# Seven scenarios of seconds each, plus their clusters' start-ups: past pytest's default 300 s on
# a busy 2-core machine; the command itself is given 1200 s below.
@pytest.mark.timeout(1200)
def test_chaos_quick(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ANNREC_KAFKA_BOOTSTRAP", "ANNREC_REDIS_URL")
    }
    env["ANNREC_STACK_DIR"] = str(tmp_path / "stack")
    env["TMPDIR"] = str(tmp_path / "tmp")  # the scenarios' storage folders: none in /tmp
    (tmp_path / "tmp").mkdir()
    out = tmp_path / "chaos.json"
    result = annrec("chaos", "--quick", "--out", str(out), env=env, timeout=1200)
    assert out.exists(), result.stderr[-3000:]
    doc = json.loads(out.read_text())
    runs = doc["scenarios"]
    assert set(runs) == {
        "crash",
        "swaps",
        "bad-index",
        "outage",
        "fuzz",
        "overload",
        "interactions",
    }
    failed = {name: figures for name, figures in runs.items() if not figures["passed"]}
    assert not failed, json.dumps(failed, indent=2)[-4000:]
    assert result.returncode == 0

    crash = runs["crash"]
    assert crash["kills"] >= 2 and crash["audit"]["lost"] == 0
    assert crash["audit"]["sent"] == crash["audit"]["replied"]
    swaps = runs["swaps"]
    assert swaps["versions_served"] >= 2 and swaps["replies_not_matching_their_version"] == 0
    bad = runs["bad-index"]
    assert {c["damage"] for c in bad["cases"]} == {
        "corrupted",
        "truncated",
        "half-copied",
        "wrong-dimension",
    }
    assert bad["refusals_metric"] >= 4 and bad["next_good_version_served"]
    outage = runs["outage"]
    assert outage["audit"]["lost"] == 0 and not outage["worker_crashed"]
    assert outage["write_failures_logged"] > 0  # the outage was felt, and survived
    fuzz = runs["fuzz"]
    assert fuzz["valid_lost"] == 0 and fuzz["dead_letters"] == fuzz["hostile_produced"]
    crash_delay = crash["failover"]["delay_s"]["max"]
    assert crash_delay <= crash["params"]["max_delay_s"]  # failover on the default settings
    overload = runs["overload"]
    assert overload["phases"]["overload"]["statuses"].get("expired", 0) > 0  # it shed
    bound = overload["params"]["deadline_s"] + overload["params"]["slack_s"]
    assert overload["overload_p99_s"] <= bound
    events = runs["interactions"]
    assert events["kills"] >= 2 and events["history"]["held"] == events["events_produced"]
    assert events["history"]["lost"] == events["history"]["double_counted"] == 0
    assert not os.path.exists(tmp_path / "stack" / "stack.json")  # the stack was stopped
    assert list((tmp_path / "tmp").iterdir()) == []  # every scenario removed its folders
