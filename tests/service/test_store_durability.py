"""kill -9 of `citysignal serve` under a steady write load: no acknowledged audit entry is lost.

Acknowledged means the HTTP call returned success with the record's id. Several operators keep
sending overrides (hold, then back to automatic) and controller switches from their own threads; the
service is killed with SIGKILL while they are still sending. The database is then read directly
(on SQLite and on a real PostgreSQL server): every acknowledged entry must be there, as acknowledged.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from service_helpers import TOKEN, Served, start_serve, stop_serve, wait_for

from citysignal.service.store import AuditStore

SERVE = ["grid4x4", "--controller", "maxpressure", "--speed", "20", "--begin", "0", "--end", "1800", "--port", "0"]
WRITERS = ("otto", "burst", "ada")  # two operators and an admin, each on intersections of its own
LOAD_S = 3.0


@dataclass
class Writer:
    """One operator's steady stream of actions; `acked` is what the service acknowledged."""

    who: str
    served: Served
    intersections: list[str]
    acked: list[tuple[int, str, str, str]] = field(default_factory=list)  # (event id, action, target, reason)
    ended_by: str = ""

    def post(self, http: httpx.Client, path: str, body: dict[str, Any], action: str, target: str) -> None:
        res = http.post(path, json=body)
        if res.status_code == 200:
            self.acked.append((int(res.json()["event_id"]), action, target, str(body.get("reason", ""))))

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN[self.who]}"}
        with httpx.Client(base_url=self.served.url, headers=headers, timeout=10.0) as http:
            try:
                for n in range(1_000_000):
                    inter = self.intersections[n % len(self.intersections)]
                    mode = "hold" if n % 2 == 0 else "auto"
                    body = {"mode": mode, "reason": f"{self.who} #{n}"}
                    self.post(http, f"/api/intersections/{inter}/override", body, "override", inter)
                    if n % 5 == 4:
                        switch = {"controller": "fixed" if n % 10 == 4 else "maxpressure", "intersections": [inter]}
                        self.post(http, "/api/controller", switch, "controller_switch", inter)
            except httpx.TransportError as exc:  # the service is gone
                self.ended_by = type(exc).__name__


def test_no_acknowledged_entry_is_lost_on_kill_9(db_url: str, tmp_path: Path, serve_env: dict[str, str]) -> None:
    served = start_serve([*SERVE, "--db", db_url], tmp_path / "serve.log", serve_env)
    try:
        with served.client(TOKEN["vera"]) as http:
            names = [i["id"] for i in http.get("/api/network").json()["intersections"]]
        writers = [Writer(who, served, names[k :: len(WRITERS)]) for k, who in enumerate(WRITERS)]
        threads = [threading.Thread(target=w.run, name=f"writer-{w.who}") for w in writers]
        for t in threads:
            t.start()
        wait_for(lambda: all(len(w.acked) >= 5 for w in writers), timeout=60)  # a steady load before the kill
        time.sleep(LOAD_S)
    finally:
        assert stop_serve(served, signal.SIGKILL) == -signal.SIGKILL  # no shutdown code ran
    for t in threads:
        t.join(30)
    assert all(w.ended_by for w in writers), "every writer was still sending when the service was killed"

    store = AuditStore(db_url, "reader")
    stored = {e["id"]: e for e in store.events(limit=100_000)}
    store.close()
    acked = [(w.who, *entry) for w in writers for entry in w.acked]
    lost = [a for a in acked if a[1] not in stored]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged entries lost: {lost[:5]}"
    for who, event_id, action, target, reason in acked:
        row = stored[event_id]
        assert (row["actor"], row["action"], row["target"]) == (who, action, target)
        assert row["detail"].get("reason", "") == reason
    assert len(acked) >= 50, len(acked)
