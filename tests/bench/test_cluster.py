"""Ray on loopback by default, a cluster by address with token authentication, one-line errors.

Every Ray instance here is on loopback: the local run through `bench.cluster`, and a head started with
`ray start --head --node-ip-address 127.0.0.1` in loopback mode, whose sockets are checked as well.
The head is stopped through its own process (never `ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from citysignal.bench.cluster import LOOPBACK_ENV
from citysignal.bench.parallel import Job, run_jobs
from citysignal.scenarios import resolve

CLI = [sys.executable, "-m", "citysignal"]
RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def _bound_sockets(root: psutil.Process) -> list[tuple[str, str, int]]:
    """(process, ip, port) of every listening TCP or bound UDP socket of `root` and its descendants."""
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:  # a worker that just exited
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN or (c.status == psutil.CONN_NONE and not c.raddr):
                found.append((name, c.laddr.ip, c.laddr.port))
    return found


def test_local_ray_run_listens_on_loopback_only() -> None:
    import ray

    sc = resolve("cologne1", 25200, 25260)
    seen: list[tuple[str, str, int]] = []

    def on_done(job: Job, frac: float) -> None:  # while the other job may still run
        seen.extend(_bound_sockets(psutil.Process()))

    try:
        results = run_jobs([Job(sc, "fixed", 1), Job(sc, "maxpressure", 1)], workers=2, on_done=on_done)
        seen.extend(_bound_sockets(psutil.Process()))
        node_ip = ray.util.get_node_ip_address()
    finally:
        ray.shutdown()
    assert [r.controller for r in results] == ["fixed", "maxpressure"]
    assert node_ip == "127.0.0.1"
    processes = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= processes, processes  # the check saw Ray's own servers
    assert not [s for s in seen if not _is_loopback(s[1])]


def _user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _bench(address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = ["bench", "cologne1", "-c", "fixed", "--end", "25260", "--json", "--address", address]
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_unreachable_cluster_is_one_line(scheme: str) -> None:
    address = f"{scheme}127.0.0.1:{_free_port()}"  # nothing listens there
    started = time.monotonic()
    proc = _bench(address, dict(os.environ))
    _user_error(proc, "cannot reach the Ray cluster", address)
    assert time.monotonic() - started < 60  # not Ray's minutes of retries


def test_bad_address_is_one_line() -> None:
    _user_error(_bench("head:port", dict(os.environ)), "bad Ray address")


@pytest.fixture(scope="module")
def loopback_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, psutil.Process]]:
    """A Ray head on 127.0.0.1 with token authentication: (address, token, head process)."""
    token = secrets.token_hex(16)
    port = _free_port()
    env = {**os.environ, LOOPBACK_ENV: "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
           "--ray-client-server-port", str(_free_port()), "--dashboard-host", "127.0.0.1",
           "--include-dashboard", "false", "--num-cpus", "1", "--disable-usage-stats",
           "--temp-dir", str(tmp_path_factory.mktemp("ray"))]  # fmt: skip
    head = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ray start --head did not come up (exit {head.poll()})")
                time.sleep(0.5)
        yield f"127.0.0.1:{port}", token, psutil.Process(head.pid)
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()


def test_bench_on_a_cluster_by_address_with_its_token(loopback_head: tuple[str, str, psutil.Process]) -> None:
    address, token, head = loopback_head
    proc = _bench(address, {**os.environ, "RAY_AUTH_TOKEN": token})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == ""
    row = json.loads(proc.stdout)
    assert row["scenario"] == "cologne1" and row["safety_violations"] == 0 and row["control_s"] > 0
    sockets = _bound_sockets(head)
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in sockets}
    assert not [s for s in sockets if not _is_loopback(s[1])]  # the test's own head stays on loopback too


def test_cluster_refusing_the_token_is_one_line(loopback_head: tuple[str, str, psutil.Process]) -> None:
    address, _, _ = loopback_head
    proc = _bench(address, {**os.environ, "RAY_AUTH_TOKEN": "not-the-token"})
    _user_error(proc, "cannot connect to the Ray cluster", address, "uthentication")
