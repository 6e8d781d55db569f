"""A seeded generator of hostile request payloads: the event stream a worker must survive.

Every payload here is invalid and must land in the dead-letter topic with a reason (none of them
is a request annrec can serve); `valid_payload` makes the well-formed requests interleaved with
them, which must all be answered. Seeded, so a failure replays exactly.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from schemas.events import MAX_DIM, MAX_K, MAX_LIST, MAX_REQUEST_BYTES
from schemas.filters import MAX_FILTER_DEPTH, MAX_FILTER_TERMS, MAX_IN_VALUES

Maker = Callable[[random.Random, str], bytes]


def _j(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _base(rid: str) -> dict[str, object]:
    return {"request_id": rid, "kind": "recommend", "user_id": "u1"}


def _random_bytes(rng: random.Random, rid: str) -> bytes:
    return rng.randbytes(rng.randint(1, 300))


def _invalid_utf8(rng: random.Random, rid: str) -> bytes:
    return b'{"request_id": "' + rid.encode() + b'", "kind": "recommend", "user_id": "\xff\xfe"}'


def _not_json(rng: random.Random, rid: str) -> bytes:
    return rng.choice([b"", b"null", b"[]", b"42", b'"text"', b"{", b"{'a': 1}", b"\x00" * 8])


def _wrong_types(rng: random.Random, rid: str) -> bytes:
    doc = _base(rid)
    field, value = rng.choice(
        [
            ("k", "ten"),
            ("k", 3.5),
            ("k", None),
            ("user_id", {"id": 1}),
            ("exclude_items", "i1"),
            ("kind", 7),
            ("search_k", [1]),
            ("deadline_ms", "soon"),
        ]
    )
    doc[field] = value
    return _j(doc)


def _huge_k(rng: random.Random, rid: str) -> bytes:
    return _j(_base(rid) | {"k": rng.choice([0, -1, MAX_K + 1, 10**12, 2**64])})


def _bad_vector(rng: random.Random, rid: str) -> bytes:
    doc: dict[str, object] = {"request_id": rid, "kind": "recommend"}
    choice = rng.randrange(5)
    if choice in (0, 1):  # json.dumps writes them as the NaN / Infinity tokens JSON forbids
        doc["user_vector"] = [float("nan") if choice == 0 else float("inf"), 1.0]
    elif choice == 2:
        doc["user_vector"] = rng.choice([[1.0] * (MAX_DIM + 1), [1e39, 1.0], [-1e300, 0.0]])
    elif choice == 3:
        doc["user_vector"] = ["x", 1.0]
    else:
        doc["user_vector"] = []
    return _j(doc)


def _two_subjects(rng: random.Random, rid: str) -> bytes:
    return _j(_base(rid) | {"user_vector": [1.0, 2.0]})


def _unknown_fields(rng: random.Random, rid: str) -> bytes:
    return _j(_base(rid) | {"__proto__": 1, "admin": True})


def _too_many_ids(rng: random.Random, rid: str) -> bytes:
    return _j(_base(rid) | {"exclude_items": [f"i{i}" for i in range(MAX_LIST + 1)]})


def _unknown_item(rng: random.Random, rid: str) -> bytes:
    # Well-formed but unservable: no such item in any version.
    return _j({"request_id": rid, "kind": "similar_items", "item_id": f"no-such-{rng.random()}"})


def _bad_filter(rng: random.Random, rid: str) -> bytes:
    """Filters past the language's bounds, malformed, or naming what no version has."""
    deep: dict[str, object] = {"attr": "in_stock", "eq": True}
    for _ in range(MAX_FILTER_DEPTH + 1):
        deep = {"not": deep}
    leaf = {"attr": "in_stock", "eq": True}
    flt = rng.choice(
        [
            deep,
            {"all": [leaf] * (MAX_FILTER_TERMS + 1)},
            {"attr": "category", "in": [str(i) for i in range(MAX_IN_VALUES + 1)]},
            {"attr": "category", "eq": {"$ne": 1}},
            {"attr": "category", "like": "shoe%"},
            {"all": []},
            "in_stock = true",
            {"attr": f"no_such_attr_{rng.randrange(1000)}", "eq": "x"},
        ]
    )
    return _j(_base(rid) | {"filter": flt})


def _deep_nesting(rng: random.Random, rid: str) -> bytes:
    depth = rng.choice([1_000, 100_000])
    return b'{"request_id": "' + rid.encode() + b'", "x": ' + b"[" * depth + b"]" * depth + b"}"


def _oversized(rng: random.Random, rid: str) -> bytes:
    pad = "a" * (MAX_REQUEST_BYTES + rng.randint(1, 1000))
    return _j(_base(rid) | {"pad": pad})


MAKERS: dict[str, Maker] = {
    "random_bytes": _random_bytes,
    "invalid_utf8": _invalid_utf8,
    "not_json": _not_json,
    "wrong_types": _wrong_types,
    "huge_k": _huge_k,
    "bad_vector": _bad_vector,
    "two_subjects": _two_subjects,
    "unknown_fields": _unknown_fields,
    "too_many_ids": _too_many_ids,
    "unknown_item": _unknown_item,
    "bad_filter": _bad_filter,
    "deep_nesting": _deep_nesting,
    "oversized": _oversized,
}
# Costly payloads (megabytes) are rarer, as they would be in a real stream.
WEIGHTS = {"oversized": 0.2, "deep_nesting": 0.5}


def hostile_payloads(seed: int, n: int) -> list[tuple[str, str, bytes]]:
    """n (category, request id, payload) triples, categories mixed by WEIGHTS."""
    rng = random.Random(seed)
    names = list(MAKERS)
    weights = [WEIGHTS.get(name, 1.0) for name in names]
    out = []
    for i in range(n):
        name = rng.choices(names, weights)[0]
        rid = f"hostile-{seed}-{i}"
        out.append((name, rid, MAKERS[name](rng, rid)))
    return out


def valid_payload(rid: str, n_users: int, i: int) -> bytes:
    return _j({"request_id": rid, "kind": "recommend", "user_id": f"u{i % n_users}", "k": 5})
