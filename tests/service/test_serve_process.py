"""`citysignal serve` as a user runs it: start-up errors in one line (exit 2), durability on kill -9, exit 0 on SIGTERM.

A twin that freezes or dies: test_twin_recovery.py.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest
from process_helpers import alive, children_of
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
        assert stop_serve(second) == 0  # SIGTERM: a clean shutdown, exit code 0

    store = AuditStore(f"sqlite:///{db}", "reader")
    runs = [e["run_id"] for e in store.events(action="service_start")]
    assert len(runs) == 2
    assert [e["run_id"] for e in store.events(action="service_stop")] == [runs[0]]  # only the second stopped cleanly
    store.close()
