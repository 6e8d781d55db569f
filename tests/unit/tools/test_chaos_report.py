from tools.chaos.report import markdown_report


def _audit(lost):
    return {
        "sent": 10,
        "replied": 10 - lost,
        "lost": lost,
        "lost_ids": [],
        "duplicates": 2,
        "statuses": {"ok": 12 - lost},
        "versions": {},
        "dead_letters": 0,
        "missing_in_redis": lost,
    }


def test_report_flags_failures_and_shows_losses():
    results = {
        "scenarios": {
            "crash": {
                "passed": False,
                "wall_s": 1.0,
                "params": {"rate": 5},
                "audit": _audit(3),
                "kills": 2,
                "duplicates_identical": True,
            },
            "outage": {"passed": True, "wall_s": 0.1, "skipped": "needs the local stack"},
            "fuzz": {"passed": False, "wall_s": 0.2, "error": "RuntimeError: boom"},
        }
    }
    text = markdown_report(results)
    assert "### crash: FAILED (1.0 s)" in text
    assert "| **lost** (no reply, or no Redis key) | **3** |" in text
    assert "| workers killed with SIGKILL (and restarted) | 2 |" in text
    assert "skipped: needs the local stack" in text
    assert "error: RuntimeError: boom" in text
