"""`citysignal serve` as a user runs it: start-up errors in one line (exit 2), and durability on kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from service_helpers import CLI, clean_env, start_serve, stop_serve, wait_for

from citysignal.service.store import AuditStore

SHORT = ["grid4x4", "--controller", "maxpressure", "--speed", "20", "--begin", "0", "--end", "1800", "--port", "0"]


def run_serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, "serve", *args], capture_output=True, text=True, timeout=120, env=clean_env(**env))


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["nosuchcity", "--controller", "maxpressure"], {}, "unknown scenario 'nosuchcity'"),
        (["grid4x4", "--controller", "actuated", "--port", "0"], {}, "controller 'actuated' cannot be served"),
        (["grid4x4", "--controller", "maxpressure", "--port", "0"], {"CITYSIGNAL_ENV": "production"},
         "CITYSIGNAL_TOKENS is empty"),
        (["grid4x4", "--controller", "maxpressure", "--port", "0"],
         {"CITYSIGNAL_ENV": "production", "CITYSIGNAL_TOKENS": "ops:operator:dev-operator-token"},
         "default development token"),
        (["grid4x4", "--controller", "maxpressure", "--port", "0", "--db", "nonsense://"], {}, "database"),
        (["grid4x4", "--controller", "maxpressure", "--speed", "0"], {}, "--speed"),
    ],
)  # fmt: skip
def test_start_up_errors_are_one_line_and_exit_2(args: list[str], env: dict[str, str], fragment: str) -> None:
    proc = run_serve(*args, **env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0]


def test_a_port_in_use_is_a_user_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = run_serve("grid4x4", "--controller", "maxpressure", "--port", str(port))
    assert proc.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def children_of(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_acknowledged_override_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    args = [*SHORT, "--db", f"sqlite:///{db}"]
    first = start_serve(args, tmp_path / "first.log")
    twin = children_of(first.proc.pid)
    assert twin, "the twin runs in a child process of the service"
    try:
        with first.client() as http:
            ack = http.post("/api/intersections/B2/override", json={"mode": "hold", "reason": "before the crash"})
            assert ack.status_code == 200, ack.text
            event_id = ack.json()["event_id"]
    finally:
        assert stop_serve(first, signal.SIGKILL) == -signal.SIGKILL  # no shutdown code ran
    wait_for(lambda: not any(alive(pid) for pid in twin), timeout=15)  # no orphaned simulation

    second = start_serve(args, tmp_path / "second.log")
    try:
        with second.client() as http:
            found = [e for e in http.get("/api/events?limit=1000").json() if e["id"] == event_id]
            assert found and found[0]["action"] == "override" and found[0]["target"] == "B2"
            assert found[0]["actor"] == "operator" and found[0]["detail"]["reason"] == "before the crash"
            unclean = http.get("/api/events?action=previous_run_unclean").json()
            assert unclean and unclean[0]["detail"]["run_id"] == found[0]["run_id"]
            # the restarted service still shows the earlier run's KPI series
            wait_for(lambda: {k["run_id"] for k in http.get("/api/kpis?limit=5000").json()} >= {found[0]["run_id"]})
    finally:
        # SIGTERM: graceful shutdown, then uvicorn re-raises the signal so the exit status reports it
        assert stop_serve(second) in (0, -signal.SIGTERM)

    store = AuditStore(f"sqlite:///{db}", "reader")
    runs = [e["run_id"] for e in store.events(action="service_start")]
    assert len(runs) == 2
    assert [e["run_id"] for e in store.events(action="service_stop")] == [runs[0]]  # only the second stopped cleanly
    store.close()


def test_a_crashed_twin_is_reported_and_the_api_keeps_the_history(tmp_path: Path) -> None:
    served = start_serve([*SHORT, "--db", f"sqlite:///{tmp_path / 'audit.db'}"], tmp_path / "serve.log")
    try:
        twin = children_of(served.proc.pid)
        for pid in twin:  # as if SUMO segfaulted
            os.kill(pid, signal.SIGKILL)
        with served.client() as http:
            health = wait_for(lambda: (r := http.get("/api/health")).status_code == 503 and r.json())
            assert health["running"] is False and "ended unexpectedly" in health["error"]
            assert http.get("/api/events?action=engine_error").json()
            assert http.get("/api/events?action=service_start").json()  # the history is still served
            res = http.post("/api/intersections/B2/override", json={"mode": "hold"})
            assert res.status_code == 503
    finally:
        stop_serve(served)
