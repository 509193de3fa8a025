"""What a careless or hostile client can make the audit store keep, through a real `citysignal serve`.

Refused requests are audited with what was asked; a large request (thousands of intersection ids, up to
the 64 KiB body limit) must not be stored whole: each row's detail stays within DETAIL_MAX_CHARS, on
SQLite and on PostgreSQL (the routes may trim first; the store caps whatever reaches it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from service_helpers import TOKEN, serving

from citysignal.service.app import MAX_BODY_BYTES
from citysignal.service.store import DETAIL_MAX_CHARS, AuditStore

SERVE = ["grid4x4", "--controller", "maxpressure", "--speed", "20", "--begin", "0", "--end", "1800", "--port", "0"]


def test_large_refused_requests_store_at_most_the_cap(
    backend: str, tmp_path_factory: pytest.TempPathFactory, serve_env: dict[str, str],
    new_database: Callable[[str, Path], str],
) -> None:  # fmt: skip
    folder = tmp_path_factory.mktemp(f"cap-{backend}")
    url = new_database(backend, folder)
    ids = [f"no-such-crossing-{i:05d}" for i in range(2300)]
    body = {"controller": "fixed", "intersections": ids}
    assert 50_000 < len(json.dumps(body)) < MAX_BODY_BYTES  # as large as the service takes
    with (
        serving([*SERVE, "--db", url], folder / "serve.log", serve_env) as served,
        served.client(TOKEN["otto"]) as http,
    ):
        for _ in range(10):
            res = http.post("/api/controller", json=body)
            assert res.status_code == 404 and "no-such-crossing-00000" in res.text
            assert len(res.content) < 1000  # the answer does not echo the request
        rows = http.get("/api/events?action=controller_switch").json()
    assert len(rows) == 10
    for row in rows:
        assert row["result"] == "refused" and row["actor"] == "otto" and len(row["target"]) == 128
        stored_detail = json.dumps(row["detail"])  # as the store wrote it
        assert len(stored_detail) <= DETAIL_MAX_CHARS and '"no-such-crossing-00000"' in stored_detail
    store = AuditStore(url, "reader")
    stored = store.events(limit=1000)
    store.close()
    # the whole audit log of this run, start record included, is smaller than one of the requests
    assert sum(len(json.dumps(e["detail"])) for e in stored) < 12 * DETAIL_MAX_CHARS < len(json.dumps(body))
