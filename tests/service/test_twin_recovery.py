"""A twin that freezes or dies, and a service killed and restarted: each against a real `citysignal serve`.

- frozen (SIGSTOP of the twin process): health "degraded" with the reason, every read answers 503 within
  2 s even in a burst of 45, an override refused meanwhile is not carried out once the twin runs again;
- killed (kill -9 of the twin process): health 503 "restarting", the twin back within 5 s from its latest
  snapshot (not from the scenario's begin) with the operators' overrides and controller assignments;
- service killed (kill -9) and restarted on the same database: overrides and assignments restored and
  audited, simulated time resumed from the snapshot; after a long outage overrides are dropped (audited);
  SIGTERM ends it with exit code 0 and clears the restart state;
- hung past the limit: killed and restarted; a twin that cannot start again: given up after
  `MAX_RESTARTS`, health "error"; a snapshot the twin process dies on: started from the begin instead
  (these build the service or its twin in-process, to shorten a limit or hand over a snapshot).

grid4x4 at x20: a snapshot every 5 s of wall time is 100 simulated seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from process_helpers import alive
from service_helpers import DEV_OPERATOR, Served, start_serve, stop_serve, strict_settings, wait_for

from citysignal.network import load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import resolve
from citysignal.service.context import Service, build_service
from citysignal.service.engine import CommandError, EngineConfig, Snapshot
from citysignal.service.store import AuditStore
from citysignal.service.worker import MAX_RESTARTS, EngineProcess

ARGS = ["grid4x4", "--controller", "maxpressure", "--speed", "20", "--begin", "0", "--end", "3600", "--port", "0"]
HOLDS = ["A1", "B1", "C1", "D1"]


def serve_on(db: Path, log: Path) -> Served:
    return start_serve([*ARGS, "--db", f"sqlite:///{db}"], log)


def events(http: httpx.Client, action: str) -> list[dict[str, Any]]:
    res = http.get(f"/api/events?action={action}&limit=1000")
    assert res.status_code == 200, res.text
    return list(res.json())


def timed(call: Callable[[], httpx.Response]) -> tuple[int, float]:
    started = time.monotonic()
    status = call().status_code
    return status, time.monotonic() - started


def burst(served: Served, n: int, path: str) -> list[tuple[int, float]]:
    """`n` concurrent GETs of `path`: (status, seconds) each."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    headers = {"Authorization": f"Bearer {DEV_OPERATOR}"}
    with (
        httpx.Client(base_url=served.url, headers=headers, timeout=30.0, limits=limits) as http,
        ThreadPoolExecutor(n) as pool,
    ):
        return list(pool.map(lambda _: timed(lambda: http.get(path)), range(n)))


def health(http: httpx.Client) -> tuple[int, dict[str, Any]]:
    res = http.get("/api/health")
    return res.status_code, res.json()


def twin_pid(http: httpx.Client) -> int:
    pid = http.get("/api/info").json()["twin"]["pid"]
    assert isinstance(pid, int) and alive(pid)
    return pid


def unhealthy(http: httpx.Client) -> dict[str, Any] | None:
    code, body = health(http)
    return body if code == 503 else None


def test_a_frozen_twin_degrades_health_and_reads_fail_fast(tmp_path: Path) -> None:
    served = serve_on(tmp_path / "audit.db", tmp_path / "serve.log")
    try:
        with served.client() as http:
            pid = twin_pid(http)
            assert http.get("/api/intersections/B2").status_code == 200
            os.kill(pid, signal.SIGSTOP)
            try:
                right_away = burst(served, 45, "/api/intersections/B2")  # before the watchdog has noticed
                assert {status for status, _ in right_away} == {503}
                assert max(took for _, took in right_away) < 2.0, right_away
                code, body = health(http)
                assert code == 503 and body["status"] == "degraded" and "simulated time stands still" in body["error"]
                frozen_at = body["sim_time"]
                assert timed(lambda: http.get("/api/health"))[1] < 0.5  # health answers at once, no thread wait
                later = burst(served, 45, "/api/intersections/B2")
                assert {status for status, _ in later} == {503} and max(took for _, took in later) < 1.0, later
                refused = http.post("/api/intersections/C2/override", json={"mode": "force", "green": 1})
                assert refused.status_code == 503
                time.sleep(2.0)
                code, body = health(http)
                assert code == 503 and body["sim_time"] == frozen_at  # time stood still, and health says so
            finally:
                os.kill(pid, signal.SIGCONT)
            wait_for(lambda: health(http)[0] == 200, timeout=10)
            assert http.get("/api/intersections/B2").status_code == 200
            wait_for(lambda: http.get("/api/state").json()["time"] > frozen_at + 20)
            # the call that reached the paused twin after its caller got 503 was dropped, not carried out
            assert "C2" not in http.get("/api/state").json()["overrides"]
            degraded = wait_for(lambda: events(http, "twin_degraded"))
            assert "stands still" in degraded[0]["detail"]["reason"]
            assert wait_for(lambda: events(http, "twin_recovered"))
            assert not events(http, "twin_restart")  # frozen for less than the hung limit: same process
            assert twin_pid(http) == pid
    finally:
        assert stop_serve(served) == 0


def test_a_killed_twin_is_restarted_from_its_snapshot_within_5_s(tmp_path: Path) -> None:
    served = serve_on(tmp_path / "audit.db", tmp_path / "serve.log")
    try:
        with served.client() as http:
            forced = http.post("/api/intersections/B2/override", json={"mode": "force", "green": 1, "reason": "crash"})
            assert forced.status_code == 200, forced.text
            switched = http.post("/api/controller", json={"controller": "fixed", "intersections": ["A0"]})
            assert switched.status_code == 200, switched.text
            wait_for(lambda: http.get("/api/state").json()["time"] >= 300, timeout=30)
            old = twin_pid(http)
            os.kill(old, signal.SIGKILL)
            killed = time.monotonic()
            body = wait_for(lambda: unhealthy(http), timeout=5, every=0.01)
            assert body is not None and body["status"] == "restarting" and "ended unexpectedly" in body["error"]
            wait_for(lambda: health(http)[0] == 200, timeout=30, every=0.02)
            recovery = time.monotonic() - killed
            print(f"twin recovery after kill -9: {recovery:.2f} s")  # the figure the issue asks for (pytest -s)
            assert recovery < 5.0

            restart = wait_for(lambda: events(http, "twin_restart"))  # the audit writer commits within a second
            assert len(restart) == 1 and restart[0]["result"] == "ok", restart
            detail = restart[0]["detail"]
            assert "ended unexpectedly" in detail["reason"] and detail["downtime_s"] < 5.0
            assert detail["from_sim_time"] > 0  # from a snapshot, not from the scenario's begin
            assert wait_for(lambda: events(http, "engine_error") and events(http, "twin_resumed"))
            state = http.get("/api/state").json()
            assert state["time"] >= detail["from_sim_time"]
            assert state["overrides"]["B2"]["green"] == 1 and state["overrides"]["B2"]["reason"] == "crash"
            ids = [i["id"] for i in http.get("/api/network").json()["intersections"]]
            assert state["controllers"][state["assignment"][ids.index("A0")]] == "fixed"
            assert state["controllers"][state["assignment"][ids.index("B0")]] == "maxpressure"
            assert state["kpi"]["violations"] == 0
            assert twin_pid(http) != old and not alive(old)
            assert http.get("/api/info").json()["twin"] == {"pid": twin_pid(http), "restarts": 1,
                                                            "snapshot_write_errors": 0}  # fmt: skip
            assert http.get("/api/intersections/B2").json()["override"]["green"] == 1
    finally:
        assert stop_serve(served) == 0


def age_restart_state(db: Path, seconds: float) -> None:
    """As if the service had been down `seconds` longer."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE control_state SET at = at - ?", (seconds,))
        conn.execute("UPDATE twin_snapshots SET taken_at = taken_at - ?", (seconds,))


def restart_rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("control_state", "twin_snapshots"))


def test_a_killed_service_restores_overrides_assignments_and_time(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    first = serve_on(db, tmp_path / "first.log")
    try:
        with first.client() as http:
            for inter in HOLDS:
                assert http.post(f"/api/intersections/{inter}/override", json={"mode": "hold"}).status_code == 200
            assert http.post("/api/intersections/B2/override", json={"mode": "force", "green": 1}).status_code == 200
            switched = http.post("/api/controller", json={"controller": "fixed", "intersections": ["A0", "D3"]})
            assert switched.status_code == 200
            wait_for(lambda: http.get("/api/state").json()["time"] >= 400, timeout=40)
            time.sleep(1.5)  # the snapshot taken by now reaches the database within a second
            before = http.get("/api/state").json()
    finally:
        assert stop_serve(first, signal.SIGKILL) == -signal.SIGKILL

    second = serve_on(db, tmp_path / "second.log")
    try:
        with second.client() as http:
            state = http.get("/api/state").json()
            assert 100 <= state["time"] <= before["time"] + 100  # resumed from a snapshot, not from t=0
            resumed = wait_for(lambda: events(http, "twin_resumed"))
            assert resumed and resumed[0]["run_id"] != before["run_id"]
            assert set(state["overrides"]) == {*HOLDS, "B2"} and state["overrides"]["B2"]["green"] == 1
            for inter in HOLDS:
                assert state["overrides"][inter]["green"] == before["overrides"][inter]["green"]
            restored = [e for e in events(http, "override") if e["result"] == "restored"]
            assert sorted(e["target"] for e in restored) == sorted([*HOLDS, "B2"])
            assert all(e["actor"] == "system" and e["detail"]["by"] == "operator" for e in restored)
            switch = [e for e in events(http, "controller_switch") if e["result"] == "restored"]
            assert switch and switch[0]["detail"]["controllers"] == {"fixed": 2, "maxpressure": 14}
            assert state["assignment"] == before["assignment"]
            assert state["kpi"]["violations"] == 0
    finally:
        assert stop_serve(second, signal.SIGKILL) == -signal.SIGKILL

    age_restart_state(db, 3600.0)
    third = serve_on(db, tmp_path / "third.log")
    try:
        with third.client() as http:
            run_id = http.get("/api/state").json()["run_id"]
            dropped = [e for e in events(http, "override") if e["result"] == "dropped" and e["run_id"] == run_id]
            assert sorted(e["target"] for e in dropped) == sorted([*HOLDS, "B2"])
            assert all("expired" in e["detail"]["why"] for e in dropped)
            state = http.get("/api/state").json()
            assert state["overrides"] == {} and state["assignment"] == before["assignment"]
            assert state["time"] >= 100  # the twin still resumes: only the operators' overrides expire
    finally:
        assert stop_serve(third) == 0  # SIGTERM: clean exit ...
    assert restart_rows(db) == 0  # ... and the next run starts as its command line says


def in_process(db: Path, scenario: str) -> Service:
    return build_service(strict_settings(f"sqlite:///{db}"), scenario, "maxpressure", speed=20, begin=0, end=3600)


def test_a_twin_hung_past_the_limit_is_killed_and_restarted(tmp_path: Path) -> None:
    service = in_process(tmp_path / "audit.db", "grid4x4")
    service.engine.hung_restart_s = 3.0
    service.start()
    try:
        hung = service.engine.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        restart = wait_for(lambda: service.store.events(action="twin_restart"), timeout=20)
        assert restart[0]["result"] == "ok" and "did not answer" in restart[0]["detail"]["reason"]
        assert [e["result"] for e in service.store.events(action="twin_degraded")] == ["degraded"]
        wait_for(lambda: service.engine.health()[0] == "ok", timeout=10)
        assert service.engine.pid != hung and not alive(hung)
    finally:
        service.stop()


def refusal(service: Service, inter_id: str) -> int:
    """The status a read of `inter_id` is refused with (the read must be refused)."""
    with pytest.raises(CommandError) as refused:
        service.engine.detail(inter_id)
    return refused.value.status


def test_a_thawed_twin_is_healthy_once_it_steps_and_stays_so(tmp_path: Path) -> None:
    """After a freeze the twin first answers the calls queued meanwhile, then steps: those answers must not
    report it healthy while its next heartbeat still says it has not stepped (health would flip back to
    degraded and a read the operator sent on "ok" would be refused)."""
    service = in_process(tmp_path / "audit.db", "grid4x4")
    service.start()
    try:
        pid = service.engine.pid
        assert pid is not None and service.engine.detail("B2")
        os.kill(pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(5) as pool:  # sent before the freeze is noticed: they wait in the pipe
                assert set(pool.map(lambda _: refusal(service, "B2"), range(5))) == {503}
            wait_for(lambda: service.engine.health()[0] == "degraded")
            time.sleep(2.0)  # frozen for longer than a step may take
        finally:
            os.kill(pid, signal.SIGCONT)
        seen: list[str] = []
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            status = service.engine.health()[0]
            if not seen or seen[-1] != status:
                seen.append(status)
            time.sleep(0.002)
        assert seen == ["degraded", "ok"], seen
        assert service.engine.detail("B2")
    finally:
        service.stop()


def test_a_twin_that_cannot_start_again_is_not_restarted_forever(tmp_path: Path) -> None:
    files = tmp_path / "city"
    shutil.copytree(resolve("grid4x4", None, None).sumocfg.parent, files)
    service = in_process(tmp_path / "audit.db", str(files / "grid4x4.sumocfg"))
    service.start()
    try:
        pid = service.engine.pid
        assert pid is not None and service.engine.health()[0] == "ok"
        shutil.rmtree(files)  # the scenario's files are gone from the disk, then the twin dies
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: service.engine.health()[0] == "error", timeout=60)
        reason = service.engine.health()[1]
        assert reason is not None and f"{MAX_RESTARTS} restarts" in reason
        attempts = service.store.events(action="engine_error")
        assert len(attempts) == 1  # the loss; the failed attempts are the restart's own
        gave_up = wait_for(lambda: service.store.events(action="twin_restart"))
        assert gave_up[0]["result"] == "gave_up"
        with pytest.raises(CommandError) as refused:
            service.engine.detail("B2")
        assert refused.value.status == 503
    finally:
        service.stop()


def test_sigterm_ends_the_service_with_exit_0_even_with_a_frozen_twin(tmp_path: Path) -> None:
    served = serve_on(tmp_path / "audit.db", tmp_path / "serve.log")
    with served.client() as http:
        pid = twin_pid(http)
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    assert stop_serve(served) == 0
    assert time.monotonic() - started < 10 and not alive(pid)
    assert "Traceback" not in served.log.read_text()


class DiesWhenLoaded:
    """Unpickled in the twin process, it ends that process at once: a snapshot SUMO would crash on."""

    def __reduce__(self) -> tuple[Callable[[int], None], tuple[int]]:
        return os._exit, (3,)


def test_a_snapshot_the_twin_dies_on_does_not_keep_it_down(tmp_path: Path) -> None:
    sc = resolve("grid4x4", 0, 3600)
    network = load_network(sc.net_file, sc.additional_files)
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}", "run")
    store.start_writer()
    config = EngineConfig(sc, "maxpressure", speed=20)
    engine = EngineProcess(config, network, Layout.from_network(network), store)
    engine.start(resume=Snapshot(config.key, 0, 500, 500.0, time.time(), {"poison": DiesWhenLoaded()}, b""))
    try:
        assert engine.health() == ("ok", None)
        live = wait_for(engine.live)
        assert live is not None and live.time < 500  # from the scenario's begin
        unusable = wait_for(lambda: store.events(action="snapshot_unusable"))
        assert "exit code 3" in unusable[0]["detail"]["error"] and unusable[0]["detail"]["sim_time"] == 500.0
    finally:
        engine.stop()
        store.close()
