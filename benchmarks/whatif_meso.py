"""What-if on SUMO's mesoscopic model: does it rank the candidates as the microscopic run does, and how fast?

On the flagship (`manhattan_evening_peak`, fork at 18:00) and two RESCO maps, the same race twice: once
microscopic, once with `--meso` (the run to the fork included, as `bench.whatif` does it). Under meso
only controllers that decide without lane readings can run (libsumo's lane getters read 0 there), so the
candidates are the fixed-time family: the net's programs (`fixed`), Webster re-timing from stop-line
counts (`webster`), and two `plan export` files for the period of the fork, with green-wave offsets and
without (`plan:coordinated`, `plan:isolated`); the city runs to the fork under `fixed`. Rankings are by
RESCO delay over the horizon; agreement is reported as the same order (no pair of candidates ordered
the other way; ties aside), the same winner, and Kendall's tau-a over the pairs (a tie counts 0).
Writes the "What-if: mesoscopic fast path" section of BENCHMARKS.md.

    .venv/bin/python benchmarks/whatif_meso.py [--maps manhattan_evening_peak@18:00:00,cologne8@07:30:00,...]
                                               [--horizon 900] [--workers 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from citysignal.bench.report import update_section
from citysignal.bench.whatif import WhatIf, race
from citysignal.scenarios import resolve
from citysignal.scenarios.demand import time_option

SECTION = "## What-if: mesoscopic fast path"
MAPS = "manhattan_evening_peak@18:00:00,cologne8@07:30:00,grid4x4@00:30:00"
CLI = [sys.executable, "-m", "citysignal"]


def export_plans(scenario: str, at: float, horizon: float, folder: Path) -> dict[str, Path]:
    """Webster plans for the hour the fork falls in, coordinated and not (`citysignal plan export`)."""
    hour = int(at // 3600)
    end = min(hour + 1, 24)
    period = f"{hour:02d}:00-{end:02d}:00" if end < 24 else f"{hour:02d}:00-23:59"
    plans = {}
    for name, flag in (("coordinated", "--coordinate"), ("isolated", "--no-coordinate")):
        out = folder / f"{scenario}.{name}.add.xml"
        subprocess.run([*CLI, "plan", "export", scenario, "--out", str(out), "--period", period, flag], check=True,
                       capture_output=True, text=True)  # fmt: skip
        plans[name] = out
    return plans


def pair_signs(a: dict[str, float], b: dict[str, float]) -> list[float]:
    """Per pair of candidates: 1 where both runs order them alike, -1 where they disagree, 0 where either ties."""
    return [float(np.sign(a[x] - a[y]) * np.sign(b[x] - b[y])) for x, y in itertools.combinations(sorted(a), 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", default=MAPS, help="scenario@fork time, comma-separated")
    parser.add_argument("--horizon", type=float, default=900.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    rule = "|---" * 10 + "|"
    summary = ["| map | fork | same order | same winner | Kendall tau | race wall micro s | race wall meso s "
               "| speed-up | to the fork micro s | to the fork meso s |", rule]  # fmt: skip
    detail = ["| map | candidate | micro rank | meso rank | micro delay s | meso delay s | micro arrived "
              "| meso arrived | micro wall s | meso wall s |", rule]  # fmt: skip
    agree = {"order": 0, "winner": 0, "maps": 0}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="citysignal-meso-bench-") as tmp:
        for spec in args.maps.split(","):
            name, _, when = spec.partition("@")
            at = time_option(when, "--maps")
            assert at is not None
            sc = resolve(name)
            plans = export_plans(name, at, args.horizon, Path(tmp))
            candidates = ["fixed", "webster", *(f"plan:{p}" for p in plans.values())]
            label = {f"plan:{p}": f"plan:{k}" for k, p in plans.items()} | {"fixed": "fixed", "webster": "webster"}
            races: dict[bool, WhatIf] = {}
            setup: dict[bool, float] = {}
            for meso in (False, True):
                t0 = time.perf_counter()
                races[meso] = race(sc, at, args.horizon, candidates, "fixed", workers=args.workers, meso=meso)
                setup[meso] = time.perf_counter() - t0 - races[meso].race_wall_s
                ranked = [(label[r.controller], round(r.metrics["resco_delay"], 1)) for r in races[meso].results]
                print(f"{name} meso={meso}: {ranked}", file=sys.stderr, flush=True)
            order = {m: [label[r.controller] for r in races[m].results] for m in (False, True)}
            delay = {m: {label[r.controller]: r.metrics["resco_delay"] for r in w.results} for m, w in races.items()}
            signs = pair_signs(delay[False], delay[True])
            tau = sum(signs) / len(signs) if signs else 1.0  # Kendall's tau-a: ties count 0
            micro, meso_ = races[False].race_wall_s, races[True].race_wall_s
            agree["maps"] += 1
            agree["order"] += min(signs, default=1.0) >= 0
            agree["winner"] += order[False][0] == order[True][0]
            summary.append(
                f"| {name} | {when} | {'yes' if min(signs, default=1.0) >= 0 else 'no'} "
                f"| {'yes' if order[False][0] == order[True][0] else 'no'} | {tau:.2f} | {micro:.1f} | {meso_:.1f} "
                f"| {micro / meso_:.1f}x | {setup[False]:.1f} | {setup[True]:.1f} |"
            )
            by = {m: {label[r.controller]: r for r in races[m].results} for m in (False, True)}
            for cand in order[False]:
                a, b = by[False][cand].metrics, by[True][cand].metrics
                detail.append(
                    f"| {name} | {cand} | {order[False].index(cand) + 1} | {order[True].index(cand) + 1} "
                    f"| {a['resco_delay']:.1f} | {b['resco_delay']:.1f} | {a['arrived']:.0f} | {b['arrived']:.0f} "
                    f"| {a['wall_s']:.1f} | {b['wall_s']:.1f} |"
                )
    total = time.perf_counter() - started
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, {os.cpu_count()} cores "
        f"(shared with other work: wall times are indicative), Python {platform.python_version()}; total wall "
        f"{total:.0f} s\n"
        f"- command: `python benchmarks/whatif_meso.py {' '.join(sys.argv[1:])}`; each race is `citysignal whatif "
        f"MAP --at T --horizon {args.horizon:g} --controller fixed --candidates fixed,webster,plan:coordinated,"
        f"plan:isolated --workers {args.workers}`, without and with `--meso`\n"
        "- under meso libsumo reads 0 on every lane getter (vehicles, halting, occupancy; measured on SUMO 1.28): "
        "meso queues per edge segment. Edge getters and induction loops still count. So only controllers that "
        "decide without lane readings race there (`fixed`, `webster`, plan files); `ai`, `maxpressure`, "
        "`advanced_mp`, `sotl` are refused in one line (exit 2), and the guard's max-red preemption and "
        "junction-box check see no queue under meso. `--meso-junction-control` is on: without it meso ignores "
        "the signals and every candidate scores alike\n"
        "- candidates: `fixed` (the net's programs), `webster` (re-timed every 5 min from stop-line counts), "
        "`plan:coordinated` / `plan:isolated` (`citysignal plan export MAP --period` of the fork's hour, with and "
        "without green-wave offsets); ranks by RESCO delay over the horizon; same order: no pair of candidates the "
        "other way round (ties aside); Kendall's tau-a over the pairs, a tie counting 0 (`webster` re-times after "
        "5 min, so it can tie with `fixed`)\n"
        f"- meso ranks the candidates as micro does on {agree['order']} of {agree['maps']} maps, with the same winner "
        f"on {agree['winner']}\n\n" + "\n".join(summary) + "\n\n" + "\n".join(detail) + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
