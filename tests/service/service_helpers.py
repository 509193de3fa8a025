"""Helpers for the service tests: a real service in-process (TestClient) or as `citysignal serve`.

Every service here runs a real SUMO twin (libsumo, one per process): in-process apps are module-scoped
so that at most one runs at a time; subprocess services are separate processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from citysignal.service.config import Role, Settings, TokenEntry

T = TypeVar("T")
CLI = [sys.executable, "-m", "citysignal"]
TOKENS = (
    TokenEntry("vera", Role.viewer, "viewer-token-0123456789"),
    TokenEntry("otto", Role.operator, "operator-token-0123456789"),
    TokenEntry("burst", Role.operator, "burst-operator-token-0123456789"),
    TokenEntry("ada", Role.admin, "admin-token-0123456789"),
)
TOKEN = {t.name: t.token for t in TOKENS}
DEV_OPERATOR = "dev-operator-token"
SERVED = re.compile(r"serving \S+ with \S+ at x\S+ at (http://\S+?)/ ")


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN[name]}"}


def strict_settings(db_url: str, *, read_open: bool = False, override_limit: int = 8) -> Settings:
    """Strict (non-development) settings with four users; the served origin is http://127.0.0.1:8000."""
    return Settings(env="test", tokens=TOKENS, read_open=read_open, db_url=db_url, host="127.0.0.1", port=8000,
                    override_limit=override_limit, override_window_s=60.0)  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSIGNAL_")}
    env.update(extra)
    return env


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = DEV_OPERATOR) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)


def start_serve(args: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 90.0) -> Served:
    """Start `citysignal serve ARGS` (add --port 0) and wait until /api/health answers 200."""
    with log.open("wb") as fh:
        proc = subprocess.Popen([*CLI, "serve", *args], stdout=fh, stderr=subprocess.STDOUT, env=env or clean_env())
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"citysignal serve exited with {proc.returncode}: {log.read_text()}")
        match = SERVED.search(log.read_text())
        if match:
            url = match.group(1)
            try:
                if httpx.get(f"{url}/api/health", timeout=2.0).status_code == 200:
                    return Served(url, proc, log)
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"citysignal serve did not come up at {url}: {log.read_text()}")


def stop_serve(served: Served, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    if served.proc.poll() is None:
        served.proc.send_signal(sig)
        try:
            served.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait(10)
    return int(served.proc.returncode)


@contextmanager
def serving(args: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[Served]:
    served = start_serve(args, log, env)
    try:
        yield served
    finally:
        stop_serve(served)


def wait_for(predicate: Callable[[], T], timeout: float = 15.0, every: float = 0.2) -> T:
    """Poll `predicate()` until it returns something truthy; returns it, or fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)
