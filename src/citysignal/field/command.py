"""`citysignal field-sim` (simulated field controllers) and `bench --field` (a controller driving them).

`field-sim` serves one scenario's window once and exits; with `--out` it leaves `tripinfo.xml` (the
vehicles' travel times, for the delay) and `summary.json` (what the controllers saw) there. Every user
error is one line with exit code 2, like the rest of the CLI.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from citysignal.errors import UserError
from citysignal.scenarios.demand import time_option
from citysignal.scenarios.registry import END_HELP

FIELD_HELP = (
    "Drive NTCIP 1202 field controllers at snmp://[COMMUNITY@]HOST:PORT (v2c) or snmpv3://USER@HOST:PORT "
    "(authPriv, keys in $CITYSIGNAL_SNMP_AUTH_KEY / $CITYSIGNAL_SNMP_PRIV_KEY), optionally ?timeout=S; one "
    "scenario (the field's network) and one controller."
)
OUTAGE_HELP = "FROM-TO (controller seconds or clock times): the link drops everything then (repeatable)."


def _outage(text: str) -> tuple[float, float]:
    start, sep, stop = text.partition("-")
    if not sep:
        raise UserError(f"--outage takes FROM-TO, got '{text}'")
    a, b = time_option(start, "--outage"), time_option(stop, "--outage")
    if a is None or b is None or b <= a:
        raise UserError(f"--outage takes FROM-TO with FROM before TO, got '{text}'")
    return a, b


def field_sim(
    scenario: Annotated[str, typer.Argument(help="Bundled scenario name or .sumocfg path.")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="UDP port of the SNMP agent.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    loss: Annotated[float, typer.Option(help="Fraction of datagrams the link drops, each way.")] = 0.0,
    latency: Annotated[float, typer.Option(min=0.0, help="Delay the link adds to each datagram (ms).")] = 0.0,
    outage: Annotated[list[str] | None, typer.Option(help=OUTAGE_HELP)] = None,
    speed: Annotated[float, typer.Option(min=0.0, help="Controller seconds per wall second; 0: lockstep.")] = 1.0,
    step_timeout: Annotated[float, typer.Option(min=0.01, help="Lockstep: wait at most this for commands (s).")] = 1.0,
    backup_time: Annotated[int, typer.Option(min=1, max=65535, help="Command timeout before the local plan (s).")] = 5,
    local_plan: Annotated[str, typer.Option(help="Controller run locally without central commands.")] = "fixed",
    community: Annotated[str, typer.Option(help="SNMP v1/v2c community (intersection k: COMMUNITY@k).")] = "public",
    v3_user: Annotated[
        str | None, typer.Option(help="Also accept this SNMPv3 user (authPriv, keys as --field).")
    ] = None,
    begin: Annotated[str | None, typer.Option(help="Window start (s or clock time); default: the scenario's.")] = None,
    end: Annotated[str | None, typer.Option(help=END_HELP)] = None,
    seed: Annotated[int | None, typer.Option(help="SUMO seed; default SUMO's 23423.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write tripinfo.xml and summary.json here.")] = None,
) -> None:
    """Simulated NTCIP 1202 field controllers: a scenario on SUMO behind an SNMP agent, one context per intersection."""
    from citysignal.field.client import v3_user as user_from_env
    from citysignal.field.sim import FieldSim, SimOptions
    from citysignal.scenarios import resolve
    from citysignal.twin.session import DEFAULT_SEED

    sc = resolve(scenario, time_option(begin, "--begin"), time_option(end, "--end"))
    options = SimOptions(
        port=port, host=host, loss=loss, latency_s=latency / 1000.0,
        outages=tuple(_outage(o) for o in outage or ()), speed=speed, step_timeout_s=step_timeout,
        backup_s=backup_time, local_plan=local_plan, community=community,
        user=user_from_env(v3_user) if v3_user else None, seed=DEFAULT_SEED if seed is None else seed, out=out,
    )  # fmt: skip
    sim = FieldSim(sc, options)
    err = Console(stderr=True)
    err.print(f"citysignal: field controllers for {sc.name} ({sim.layout.n_intersections}) at snmp://{host}:{port}/")
    summary = asyncio.run(sim.run())
    err.print(f"served {summary.steps} s: {summary.violations} violations, "
              f"{sum(summary.backup_s.values())} intersection-seconds on the local plan")  # fmt: skip


def bench_field(
    scenarios: list[str], controllers: list[str], uri: str, policy: Path | None, max_red: float,
    begin: float | None, end: float | None, as_json: bool, out: Path | None,
) -> None:  # fmt: skip
    """`bench --field`: one controller through the field backend on the field's scenario."""
    from citysignal.field.client import parse_address
    from citysignal.field.episode import run_field
    from citysignal.scenarios import resolve

    if len(scenarios) != 1 or len(controllers) != 1:
        raise UserError("--field runs one scenario (the field's network) with one controller")
    address = parse_address(uri)
    sc = resolve(scenarios[0], begin, end)
    name = controllers[0]
    result = run_field(sc, name, address, policy=policy if name.startswith("ai") else None, max_red=max_red)
    row = result.row()
    if as_json:
        sys.stdout.write(json.dumps(row) + "\n")
    else:
        table = Table(title=f"{sc.name} through {address}: {name}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in result.metrics.items():
            table.add_row(key, f"{value:g}")
        Console().print(table)
        for event in result.events:
            Console(stderr=True).print(f"{event.time:g} s {event.intersection}: {event.kind}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "field.json").write_text(json.dumps(row, indent=1) + "\n")
