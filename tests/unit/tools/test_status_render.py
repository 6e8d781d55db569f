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
        "interactions": {
            "topic": "annrec.interactions",
            "group": "annrec-workers.interactions",
            "lag": [{"partition": 0, "committed": 3, "end": 7, "lag": 4}],
        },
    }
    text = render_status(doc)
    assert "consumer group g: stable, 1 member(s)" in text
    assert "partitions 0,1" in text
    assert "lag: 2 request(s) waiting" in text
    assert (
        "interactions (annrec.interactions, group annrec-workers.interactions): 4 waiting" in text
    )
    assert "live recall recommend 0.970 (20)" in text
    assert "* v1" in text and "LATEST v1" in text
    assert "dead letters in the last hour: 3" in text
    assert "item updates read 5" in text
    assert "item updates published to annrec.item-updates: 7" in text


def _doc(**changes):
    doc = {
        "group": {"id": "g", "state": "empty", "members": []},
        "lag": [{"partition": 0, "committed": None, "end": 0, "lag": 0}],
        "workers": [
            {
                "worker_id": "w1",
                "version": "v1",
                "uptime_s": 3.0,
                "processed": 2,
                "partitions": [],
                "live_recall": {},
                "at": 1000.0,
            }
        ],
        "versions": {"storage": "/s", "versions": [], "latest": None},
        "dead_letters_last_hour": 0,
        "at": 1002.0,
    }
    return {**doc, **changes}


def test_render_says_what_is_missing_instead_of_none():
    text = render_status(_doc())
    assert "None" not in text
    assert "partition 0: end 0, nothing committed yet, lag 0" in text
    assert "LATEST none (nothing published yet)" in text


def test_render_dates_a_workers_counts_by_its_heartbeat():
    assert "processed 2 (as of 2 s ago)" in render_status(_doc())


def test_a_refusing_redis_is_one_line_naming_the_setting_and_not_the_password():
    import redis

    from adapters.redis_client import redis_refusal

    url = "redis://:hunter2@cache.internal:6390/0"
    line = redis_refusal(url, redis.AuthenticationError("invalid username-password pair"))
    assert line == (
        "Redis at cache.internal:6390 refused the password: check ANNREC_REDIS_URL "
        "or `annrec stack up`"
    )
    gone = redis_refusal(url, redis.ConnectionError("refused"))
    assert "is not reachable" in gone and "hunter2" not in gone


def test_status_says_which_workers_refuse_what_latest_names():
    from tools.status import latest_refused

    workers = [
        {"worker_id": "w1", "version": "v1", "refused": {"v2": "v2: file a.ann has 3 bytes"}},
        {"worker_id": "w2", "version": "v1", "refused": {}},
        {"worker_id": "w3", "version": "v1"},  # a heartbeat from before refusals were reported
    ]
    refused = latest_refused(workers, "v2")
    assert refused == [{"worker_id": "w1", "serving": "v1", "reason": "v2: file a.ann has 3 bytes"}]
    assert latest_refused(workers, "v1") == latest_refused(workers, None) == []
    versions = {"storage": "/s", "versions": ["v1", "v2"], "latest": "v2"}
    text = render_status(_doc(versions=versions, latest_refused=refused))
    assert "* v2" in text
    assert "LATEST refused by w1 (still serving v1): v2: file a.ann has 3 bytes" in text
    assert "refused" not in render_status(_doc(versions=versions))


def test_a_workers_models_and_experiment_arms_are_shown_side_by_side():
    from tools.status import _model_lines

    models = {
        "default": {
            "latest": "v2",
            "experiment": "ranker",
            "arms": {
                "control": {"version": "v2", "share": 0.9, "requests": 91},
                "candidate": {"version": "v3", "share": 0.1, "requests": 9},
            },
            "requests": 100,
            "held": ["v1", "v2", "v3"],
        },
        "eu": {"unavailable": "version v9 of model eu maps 900 MiB; ... budget"},
    }
    assert _model_lines(models) == [
        "    model default: LATEST v2, 100 request(s); experiment ranker: control 90% v2 91 "
        "request(s), candidate 10% v3 9 request(s); also held v1, v3",
        "    model eu: not served: version v9 of model eu maps 900 MiB; ... budget",
    ]


def test_the_models_in_storage_are_listed_with_their_experiment_and_pins():
    doc = {
        "group": {"id": "g", "state": "stable", "members": []},
        "lag": [],
        "workers": [],
        "versions": {
            "storage": "/s",
            "versions": ["v1"],
            "latest": "v1",
            "models": {
                "default": {"versions": 1, "latest": "v1", "experiment": None, "pinned": []},
                "eu": {
                    "versions": 3,
                    "latest": "e3",
                    "pinned": ["e1"],
                    "experiment": {
                        "name": "t",
                        "arms": [
                            {"name": "control", "version": None, "share": 0.9},
                            {"name": "candidate", "version": "e2", "share": 0.1},
                        ],
                    },
                },
            },
        },
        "dead_letters_last_hour": 0,
    }
    text = render_status(doc)
    assert "  model default: 1 version(s), LATEST v1\n" in text
    assert (
        "  model eu: 3 version(s), LATEST e3, pinned e1, experiment t: control 90% LATEST, "
        "candidate 10% e2"
    ) in text
