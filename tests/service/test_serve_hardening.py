"""`citysignal serve` keeps secrets out of its output and stays up under oversized requests.

Start-up refusals that involve a secret (a database URL with a password) or an exposed address (the
default tokens off loopback) end in one line, exit 2, and never show the password; nothing listens.
A running service (development mode, default tokens, real uvicorn) prints no token, neither its own
nor a wrong one a client sent, and no traceback, while clients send wrong tokens, a streamed body over
64 KiB and an oversized WebSocket message.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import DEV_OPERATOR, serving, wait_for
from test_serve_process import run_serve
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from citysignal.service.config import DEFAULT_TOKENS

SECRET = "s3cret-Pa55"
SHORT = ["grid4x4", "--controller", "fixed", "--speed", "20", "--begin", "0", "--end", "1800"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--db", "sqlite:////proc/nope/x.db"], "cannot create the folder of the audit database /proc/nope"),
        (["--db", f"postgresql+psycopg://ops:{SECRET}@127.0.0.1:1/audit"],
         "cannot open the audit database postgresql+psycopg://ops:***@127.0.0.1:1/audit"),
        (["--db", f"postgresql+psycopg://ops:{SECRET}@127.0.0.1:notaport/audit"], "bad database URL"),
        (["--db", f"sqlite://ops:{SECRET}@/audit.db"], "a SQLite URL has no user, password or host"),
        (["--host", "0.0.0.0"], "refusing to listen on 0.0.0.0 with the default development tokens"),
        (["--host", "::"], "refusing to listen on :: with the default development tokens"),
    ],
)  # fmt: skip
def test_refusals_are_one_line_and_never_show_the_password(args: list[str], fragment: str) -> None:
    port = _free_port()
    proc = run_serve(*SHORT, "--port", str(port), *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("citysignal: error: ") and fragment in lines[0], proc.stderr
    assert SECRET not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr
    with socket.socket() as probe:  # nothing was left listening
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_running_service_prints_no_token_and_survives_oversized_requests(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    wrong = f"wrong-{SECRET}-token"
    args = [*SHORT, "--port", "0", "--db", f"sqlite:///{tmp_path / 'audit.db'}"]
    with serving(args, log) as served, served.client() as http, served.client(wrong) as intruder:
        assert http.get("/api/state").status_code == 200
        assert intruder.get("/api/state").status_code == 401
        assert intruder.get(f"/api/events?token={wrong}").status_code == 401  # a token in a query string too

        def streamed() -> Iterator[bytes]:
            yield b'{"mode": "hold", "reason": "'
            for _ in range(20):
                yield b"x" * 8192

        res = http.post("/api/intersections/A0/override", content=streamed(),
                        headers={"Content-Type": "application/json"})  # fmt: skip
        assert res.status_code == 413
        ws_url = served.url.replace("http://", "ws://") + "/api/ws"
        with connect(ws_url) as ws:
            ws.send(json.dumps({"token": wrong}))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        with connect(ws_url, max_size=None) as ws:
            ws.send(json.dumps({"token": DEV_OPERATOR, "pad": "x" * 100_000}))  # over 64 KiB
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # message too big
        with connect(ws_url) as ws:
            ws.send(json.dumps({"token": DEV_OPERATOR}))
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        def channels() -> set[str]:
            return {e["detail"]["channel"] for e in http.get("/api/events?action=login_failed").json()}

        assert wait_for(lambda: channels() == {"http", "websocket"})  # failed logins are audited
        assert httpx.get(f"{served.url}/api/health", timeout=5).status_code == 200
    text = log.read_text()
    assert "serving grid4x4" in text and "development mode" in text
    for secret in [wrong, *(t.token for t in DEFAULT_TOKENS)]:
        assert secret not in text, f"{secret} printed"
    assert "Traceback" not in text and "Exception" not in text
