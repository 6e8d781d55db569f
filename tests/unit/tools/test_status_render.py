from tools.status import render_status


def test_render_names_every_section_and_figure():
    doc = {
        "group": {
            "id": "g",
            "state": "stable",
            "members": [{"client_id": "w1", "host": "/127.0.0.1", "partitions": [0, 1]}],
        },
        "lag": [
            {"partition": 0, "committed": 10, "end": 12, "lag": 2},
            {"partition": 1, "committed": None, "end": 0, "lag": 0},
        ],
        "workers": [
            {
                "worker_id": "w1",
                "version": "v1",
                "uptime_s": 12.0,
                "processed": 40,
                "partitions": [0, 1],
                "live_recall": {"recommend": {"recall": 0.97, "samples": 20}},
                "item_updates_read": 5,
            }
        ],
        "versions": {"storage": "/s", "versions": ["v0", "v1"], "latest": "v1"},
        "dead_letters_last_hour": 3,
        "item_updates": {"topic": "annrec.item-updates", "published": 7},
    }
    text = render_status(doc)
    assert "consumer group g: stable, 1 member(s)" in text
    assert "partitions 0,1" in text
    assert "lag: 2 request(s) waiting" in text
    assert "live recall recommend 0.970 (20)" in text
    assert "* v1" in text and "LATEST v1" in text
    assert "dead letters in the last hour: 3" in text
    assert "item updates read 5" in text
    assert "item updates published to annrec.item-updates: 7" in text
