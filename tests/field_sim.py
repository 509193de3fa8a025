"""`citysignal field-sim` in a process of its own (libsumo allows one simulation per process), for tests that
drive simulated field controllers over UDP loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def field_sim(scenario: str, end: float, out: Path, *options: str) -> Iterator[int]:
    """Simulated field controllers in lockstep until `end`; yields their UDP port, then waits for a clean exit."""
    port = free_udp_port()
    command = [sys.executable, "-m", "citysignal", "field-sim", scenario, "--port", str(port), "--speed", "0",
               "--end", f"{end:g}", "--out", str(out), *options]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield port
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
