"""The audit store on every backend it supports: SQLite (WAL) and a real PostgreSQL server (see conftest)."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import closing
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from citysignal.errors import UserError
from citysignal.service.store import DETAIL_MAX_CHARS, AuditStore, EventIn

KPI = {"at": 1.0, "episode": 0, "sim_time": 10.0, "controller": "fixed", "vehicles": 3.0, "halting": 1.0,
       "mean_speed": 5.0, "occupancy": 0.1, "preemptions": 0, "deferred": 0, "refused": 0, "violations": 0,
       "overrides": 0, "pace": 1.0}  # fmt: skip


def read_back(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows read through a new connection of the backend's own driver, as another process would read them."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        with closing(sqlite3.connect(str(parsed.database))) as lite:
            return lite.execute(sql).fetchall()
    with psycopg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False)) as pg:
        return pg.execute(sql).fetchall()


def test_a_recorded_event_is_committed_when_record_returns(db_url: str) -> None:
    store = AuditStore(db_url, "run1")
    assert store.journal_mode == ("wal" if db_url.startswith("sqlite") else None)
    ev = store.record(EventIn("otto", "operator", "override", "A0", "applied", {"mode": "hold"}, sim_time=12.0))
    rows = read_back(db_url, "SELECT id, actor, action, target, result, sim_time FROM audit_events")
    assert rows == [(ev["id"], "otto", "override", "A0", "applied", 12.0)]
    store.close()


def test_history_survives_a_new_run_and_an_unclean_stop_is_flagged(db_url: str) -> None:
    first = AuditStore(db_url, "run1")
    first.record(EventIn("system", "system", "service_start", "service", "ok", {}))
    first.start_writer()
    first.record_later(EventIn("system", "system", "guard_preempted", "A0", "preempted", {}))
    first.kpi_later(KPI)
    first.close()  # no service_stop record: as if killed
    second = AuditStore(db_url, "run2")
    assert second.unclean_previous_run() == "run1"
    assert [e["action"] for e in second.events()] == ["guard_preempted", "service_start"]
    assert [k["sim_time"] for k in second.kpis()] == [10.0]
    assert second.last_event_id == 2
    second.record(EventIn("system", "system", "service_start", "service", "ok", {}))
    second.record(EventIn("system", "system", "service_stop", "service", "ok", {}))
    second.close()
    third = AuditStore(db_url, "run3")
    assert third.unclean_previous_run() is None
    third.close()


def test_reads_filter_and_page(db_url: str) -> None:
    store = AuditStore(db_url, "run1")
    ids = [store.record(EventIn("otto", "operator", "override", f"A{i % 3}", "applied", {"i": i}))["id"]
           for i in range(9)]  # fmt: skip
    assert [e["id"] for e in store.events(limit=4)] == ids[::-1][:4]
    assert [e["id"] for e in store.events(before_id=ids[3])] == ids[:3][::-1]
    assert [e["id"] for e in store.events(after_id=ids[6])] == ids[7:][::-1]
    assert [e["detail"]["i"] for e in store.events(target="A1")] == [7, 4, 1]
    assert store.events(action="controller_switch") == []
    for sim_time in (10.0, 20.0, 30.0):
        store.kpi_later({**KPI, "sim_time": sim_time})
    store.flush()
    assert [k["sim_time"] for k in store.kpis(limit=2)] == [20.0, 30.0]  # the latest, oldest first
    first_id = store.kpis()[0]["id"]
    assert [k["sim_time"] for k in store.kpis(after_id=first_id)] == [20.0, 30.0]
    big = 2**63 - 1  # any 64-bit id pages, beyond PostgreSQL's 32-bit integer too
    assert len(store.events(before_id=big)) == 9 and store.events(after_id=big) == []
    assert store.kpis(after_id=big) == []
    store.close()


def test_concurrent_writers_lose_nothing(db_url: str) -> None:
    store = AuditStore(db_url, "run1")
    store.start_writer()
    acked: list[int] = []

    def operator(name: str) -> None:
        for i in range(25):
            acked.append(store.record(EventIn(name, "operator", "override", f"A{i}", "applied", {}))["id"])
            store.record_later(EventIn("system", "system", "guard_refused", f"A{i}", "refused", {}))

    threads = [threading.Thread(target=operator, args=(f"op{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.flush()
    assert len(set(acked)) == 100
    stored = {row[0] for row in read_back(db_url, "SELECT id FROM audit_events WHERE action = 'override'")}
    assert stored == set(acked)
    assert len(store.events(limit=1000, action="guard_refused")) == 100
    assert store.last_event_id == max(r[0] for r in read_back(db_url, "SELECT id FROM audit_events"))
    assert store.write_errors == 0
    store.close()


def test_a_row_stores_at_most_the_cap_and_says_it_was_cut(db_url: str) -> None:
    store = AuditStore(db_url, "run1")
    ids = [f"intersection-{i}" for i in range(10_000)]  # a refused request of 10,000 ids, as a hostile client sends
    ev = store.record(EventIn("x" * 500, "operator" * 10, "controller_switch" * 5, ",".join(ids), "refused" * 20,
                              {"controller": "fixed", "intersections": ids}))  # fmt: skip
    stored = read_back(db_url, "SELECT actor, role, action, target, result, detail FROM audit_events")
    assert [len(v) for v in stored[0][:5]] == [64, 16, 32, 128, 64]
    assert len(stored[0][5]) <= DETAIL_MAX_CHARS
    assert ev["detail"]["truncated"] is True and ev["detail"]["chars"] > 200_000
    assert ev["detail"]["head"].startswith('{"controller": "fixed", "intersections": ["intersection-0", ')
    assert store.events()[0]["detail"] == ev["detail"]
    small = store.record(EventIn("otto", "operator", "override", "A0", "applied", {"reason": "x" * 1000}))
    assert small["detail"] == {"reason": "x" * 1000}  # under the cap: stored as it is, no marker
    store.close()


@pytest.mark.parametrize("reason", ['"' * 3000, "\\" * 3000, "é" * 3000, "\x00" * 3000])
def test_the_cap_holds_whatever_the_escaping(reason: str) -> None:
    store = AuditStore("sqlite://", "run1")
    detail = store.record(EventIn("otto", "operator", "override", "A0", "applied", {"reason": reason}))["detail"]
    assert detail["truncated"] is True and len(json.dumps(detail)) <= DETAIL_MAX_CHARS
    assert json.dumps({"reason": reason}).startswith(detail["head"]) and len(detail["head"]) > 900
    store.close()


def test_text_a_backend_refuses_is_made_storable(db_url: str) -> None:
    store = AuditStore(db_url, "run1")
    # PostgreSQL refuses NUL in text; no driver encodes a lone surrogate (json.loads of '"\\ud800"' makes one)
    ev = store.record(EventIn("otto", "operator", "override", "A\x00\ud800", "refused",
                              {"reason": "nul \x00 and \ud800 surrogate"}))  # fmt: skip
    assert ev["target"] == "A\ufffd?"
    assert ev["detail"] == {"reason": "nul \x00 and ? surrogate"}  # NUL is valid JSON text, escaped
    assert store.events()[0]["target"] == "A\ufffd?"
    assert [e["id"] for e in store.events(target="A\x00\ud800")] == [ev["id"]]  # the filter matches as stored
    assert store.events(target="\x00", action="\x00") == []
    json.dumps(store.events()[0], ensure_ascii=False).encode("utf-8")  # what the API sends can be encoded
    store.close()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("not a url", "bad database URL"),
        ("postgresql+nosuchdriver://u@h/db", "no database driver"),
        ("sqlite:////proc/nope/x.db", "cannot create the folder of the audit database /proc/nope/x.db"),
        ("postgresql+psycopg://citysignal:secret@127.0.0.1:1/audit", "cannot open the audit database"),
    ],
)
def test_bad_databases_are_one_line_user_errors_without_the_password(url: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment) as info:
        AuditStore(url, "run")
    assert "\n" not in str(info.value) and "secret" not in str(info.value)
