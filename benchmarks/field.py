"""Controllers through the NTCIP 1202 field backend against the same controllers on the direct twin.

For each map and controller, over the scenario's full window: the direct twin (a bench episode in a
fresh process), then `citysignal field-sim` in lockstep over UDP loopback driven through the field
backend (`bench --field`'s run), on a clean link and with 20 % of the datagrams lost each way. The
delay is resco_delay from the simulated controllers' tripinfo. Violations are counted twice: by the
centre's field guard (what the controllers reported) and by the controllers' own guard. Writes the
"Field backend (NTCIP 1202)" section of BENCHMARKS.md.

    .venv/bin/python benchmarks/field.py [--maps cologne1,cologne3] [--controllers maxpressure,ai] [--loss 0.2]
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from citysignal.bench.metrics import trip_metrics
from citysignal.bench.parallel import Job, run_jobs
from citysignal.bench.report import update_section
from citysignal.field.client import parse_address
from citysignal.field.episode import run_field
from citysignal.scenarios import resolve
from citysignal.twin import DEFAULT_SEED

SECTION = "## Field backend (NTCIP 1202)"
TIMEOUT_S = 0.1  # loopback: an answer comes within milliseconds or not at all


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def field_run(scenario: str, end: float, controller: str, loss: float) -> dict[str, Any]:
    """One field run: the simulated controllers in their own process, the centre in this one."""
    port = _free_udp_port()
    with tempfile.TemporaryDirectory(prefix="citysignal-field-") as tmp:
        out = Path(tmp)
        # The lockstep step timeout stays field-sim's 1 s: a shorter one lets a second run without the commands
        # of a centre that was merely slow (a loaded machine), and the runs drift apart from the direct twin.
        command = [sys.executable, "-m", "citysignal", "field-sim", scenario, "--port", str(port), "--speed", "0",
                   "--end", f"{end:g}", "--loss", f"{loss:g}", "--out", str(out)]  # fmt: skip
        sim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            address = parse_address(f"snmp://127.0.0.1:{port}?timeout={TIMEOUT_S}")
            result = run_field(resolve(scenario, None, end), controller, address)
            _, err = sim.communicate(timeout=300)
            if sim.returncode != 0:
                raise RuntimeError(f"field-sim failed: {err[-2000:]}")
        finally:
            if sim.poll() is None:
                sim.kill()
                sim.wait()
        summary = json.loads((out / "summary.json").read_text())
        delay = trip_metrics(out / "tripinfo.xml")["resco_delay"]
    return {"delay": delay, "centre": result.metrics, "controllers": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", default="cologne1,cologne3")
    parser.add_argument("--controllers", default="maxpressure,ai")
    parser.add_argument("--loss", type=float, default=0.2)
    parser.add_argument("--window", type=float, default=None, help="seconds from each map's begin; default: all")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    maps, controllers = args.maps.split(","), args.controllers.split(",")

    ends = {m: resolve(m).end if args.window is None else resolve(m).begin + args.window for m in maps}
    jobs = [Job(resolve(m, None, ends[m]), c, DEFAULT_SEED) for m in maps for c in controllers]
    direct = {(r.scenario, r.controller): r.metrics for r in run_jobs(jobs, workers=1)}
    rows = []
    for m in maps:
        for c in controllers:
            started = time.perf_counter()
            clean = field_run(m, ends[m], c, 0.0)
            lossy = field_run(m, ends[m], c, args.loss)
            wall = time.perf_counter() - started
            d = direct[(m, c)]["resco_delay"]
            row = (m, c, d, clean, lossy, wall)
            rows.append(row)
            print(m, c, f"direct {d:.2f}", f"field {clean['delay']:.2f}", f"loss {lossy['delay']:.2f}",
                  f"{wall:.0f} s", flush=True)  # fmt: skip

    def violations(run: dict[str, Any]) -> str:
        return f"{run['centre']['safety_violations']:g} / {run['controllers']['violations']}"

    window = "each map's full window" if args.window is None else f"{args.window:g} s of each map"
    lines = [
        SECTION,
        "",
        f"- command: `{shlex.join(['.venv/bin/python', 'benchmarks/field.py', *sys.argv[1:]])}`",
        f"- {window}, seed 23423; `field-sim --speed 0` (lockstep) over UDP loopback, SNMP v2c, "
        f"poll timeout {TIMEOUT_S:g} s, comm loss after 3 missed polls, backup time 5 s, local plan `fixed`",
        "- violations: counted by the centre's field guard (what the controllers reported, once a second) / by "
        "the controllers' own guard",
        "- local plan: the share of intersection-seconds the controllers ran their local plan (no fresh command)",
        "",
        f"| map | controller | direct resco_delay (s) | field (s) | field / direct | violations | "
        f"loss {args.loss:g}: delay (s) | loss / direct | violations | missed polls | comm loss events | "
        "local plan | wall (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m, c, d, clean, lossy, wall in rows:
        steps = lossy["controllers"]["steps"] * max(len(lossy["controllers"]["backup_s"]), 1)
        local = sum(lossy["controllers"]["backup_s"].values()) / max(steps, 1)
        lines.append(
            f"| {m} | {c} | {d:.2f} | {clean['delay']:.2f} | {clean['delay'] / d:.3f} | {violations(clean)} | "
            f"{lossy['delay']:.2f} | {lossy['delay'] / d:.3f} | {violations(lossy)} | "
            f"{lossy['centre']['missed_poll_share']:.1%} | {lossy['centre']['comm_loss_events']:g} | {local:.1%} | "
            f"{wall:.0f} |"
        )
    update_section(args.out, SECTION, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
