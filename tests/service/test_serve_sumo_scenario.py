"""`citysignal serve` on a scenario written elsewhere (clock-time flows, no end), on loopback, read only."""

from __future__ import annotations

from pathlib import Path

from scenario_files import published_style
from service_helpers import serving, wait_for


def test_serve_runs_a_published_style_scenario(tmp_path: Path) -> None:
    cfg = published_style(tmp_path)
    args = [str(cfg), "--controller", "maxpressure", "--speed", "100", "--port", "0",
            "--db", f"sqlite:///{tmp_path / 'audit.db'}"]  # fmt: skip
    with serving(args, tmp_path / "serve.log") as served, served.client() as client:
        health = wait_for(lambda: (h := client.get("/api/health").json())["sim_time"] >= 54060 and h)
        assert health["status"] == "ok"
        assert 54060 <= health["sim_time"] < 57590  # the config's begin 53990, not 0
        state = wait_for(lambda: (s := client.get("/api/state").json())["kpi"]["vehicles"] > 0 and s)
        assert state["kpi"]["violations"] == 0
    log = (tmp_path / "serve.log").read_text()
    assert f"citysignal: note: {cfg} gives no end time: running 53990-57590 s" in log
    assert "Traceback" not in log
