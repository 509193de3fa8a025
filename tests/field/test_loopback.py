"""End to end over UDP loopback: `citysignal field-sim` (SUMO behind NTCIP 1202 over SNMP, in a process
of its own) driven through the field backend, against the same controller on the direct twin.

Short windows (300 s); the full windows are in benchmarks/field.py. In lockstep (`--speed 0`) the
commands act in the second they were decided for, so a clean link must give the direct twin's run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from field_sim import field_sim

from citysignal.bench.episode import run_episode
from citysignal.bench.metrics import trip_metrics
from citysignal.field.client import parse_address
from citysignal.field.episode import FieldResult, run_field
from citysignal.scenarios import resolve

WINDOW_S = 300.0


def drive(
    scenario: str, controller: str, out: Path, *options: str, window: float = WINDOW_S, address: str = "snmp://"
) -> tuple[FieldResult, dict[str, Any], float]:
    """The centre's result, the controllers' summary and the vehicles' delay (resco_delay) of one field run."""
    sc = resolve(scenario)
    end = sc.begin + window
    with field_sim(scenario, end, out, *options) as port:
        uri = f"{address}127.0.0.1:{port}?timeout=0.1"
        result = run_field(resolve(scenario, None, end), controller, parse_address(uri))
    summary = json.loads((out / "summary.json").read_text())
    return result, summary, trip_metrics(out / "tripinfo.xml")["resco_delay"]


@pytest.mark.parametrize(("scenario", "controller"), [("cologne1", "maxpressure"), ("cologne3", "ai")])
def test_a_controller_through_the_field_matches_the_direct_twin(scenario: str, controller: str, tmp_path: Path) -> None:
    result, summary, field_delay = drive(scenario, controller, tmp_path)
    sc = resolve(scenario)
    direct = run_episode(resolve(scenario, None, sc.begin + WINDOW_S), controller, 23423).metrics
    assert result.metrics["safety_violations"] == 0 and summary["violations"] == 0
    assert result.metrics["comm_loss_events"] == 0 and sum(summary["backup_s"].values()) == 0
    assert result.metrics["steps"] >= WINDOW_S - 1
    assert field_delay == pytest.approx(direct["resco_delay"], rel=0.10)


def test_a_lossy_link_stays_safe_and_falls_back_gracefully(tmp_path: Path) -> None:
    """20 % of the datagrams lost each way: polls are missed and commands lost, never an unsafe state."""
    result, summary, delay = drive("cologne1", "maxpressure", tmp_path, "--loss", "0.2")
    assert summary["datagrams_dropped"] > 0.1 * (summary["datagrams_dropped"] + summary["datagrams_carried"])
    assert result.metrics["missed_poll_share"] > 0.2
    assert result.metrics["safety_violations"] == 0 and summary["violations"] == 0
    assert result.metrics["in_comm_loss_at_end"] == 0
    assert 0 < delay < 90.0  # a graceful fallback, not a breakdown (a gridlock reaches hundreds of seconds)


def test_comm_loss_runs_the_local_plan_and_control_resumes(tmp_path: Path) -> None:
    """A 40 s outage: the centre marks the intersection after its missed polls, the controller runs its
    local plan after its backup time, and when the link is back the centre takes over again."""
    sc = resolve("cologne1")
    cut, back = sc.begin + 100, sc.begin + 140
    result, summary, delay = drive("cologne1", "maxpressure", tmp_path, "--outage", f"{cut:g}-{back:g}",
                                   "--step-timeout", "0.2")  # fmt: skip
    kinds = [(e.kind, e.time) for e in result.events]
    assert [k for k, _ in kinds] == ["comm_loss", "comm_restored"]
    (_, lost_at), (_, restored_at) = kinds
    assert cut - 1 <= lost_at <= cut + 5 and back <= restored_at < back + 5
    on_local_plan = sum(summary["backup_s"].values())
    assert 20 <= on_local_plan <= 40  # from the backup time (5 s) after the last command to the first one after
    assert result.metrics["safety_violations"] == 0 and summary["violations"] == 0
    assert result.metrics["in_comm_loss_at_end"] == 0 and result.metrics["backup_share"] < 0.2
    assert delay > 0


def test_snmpv3_auth_priv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same run over SNMPv3 (authPriv: SHA-256, AES-128), keys from the environment on both sides."""
    monkeypatch.setenv("CITYSIGNAL_SNMP_AUTH_KEY", "loopback-auth-key")
    monkeypatch.setenv("CITYSIGNAL_SNMP_PRIV_KEY", "loopback-priv-key")
    result, summary, _ = drive("cologne1", "maxpressure", tmp_path, "--v3-user", "centre", "--community", "unused",
                               window=60.0, address="snmpv3://centre@")  # fmt: skip
    assert result.metrics["steps"] >= 59 and result.metrics["missed_poll_share"] == 0
    assert result.metrics["safety_violations"] == 0 and sum(summary["backup_s"].values()) == 0
