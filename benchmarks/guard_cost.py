"""What the safety guard costs adaptive control, and what it bounds: the same controllers through the guard
and with its max-red rule lifted, side by side in one run, over several seeds (worst seed beside the mean).

Also runs the real-plan scenarios the guard once cost 1.3-2.6x (hangzhou_4x4, bologna_joined) against the
plain-SUMO figures of ../shared/anchors, and takes the bologna_joined max-pressure gap apart: the anchor's
max-pressure run plainly in SUMO (no guard: decide every 10 s after 10 s of green, pressure = halting in minus
halting out over each green's G/g links, only the program's yellow on a change), then with our pieces switched
in one at a time (the plan's clearances, our pressure, the guard without and with its max-red bound). Writes
the "Safety guard cost" section of BENCHMARKS.md.

    .venv/bin/python benchmarks/guard_cost.py [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import libsumo
import numpy as np
from rich.console import Console
from rich.progress import Progress

from citysignal.bench.metrics import trip_metrics
from citysignal.bench.parallel import Job, run_jobs
from citysignal.bench.report import update_section
from citysignal.network import load_network
from citysignal.network.model import Intersection
from citysignal.network.signals import synthesize_transition
from citysignal.scenarios import Scenario, resolve
from citysignal.sumo_home import binary
from citysignal.twin import DEFAULT_SEED

MAPS = ("cologne1", "cologne3", "cologne8")
CONTROLLERS = ("maxpressure", "advanced_mp")
UNBOUNDED_S = 1e9
# Plain SUMO, seed 23423 (../shared/anchors/README.md): no guard at all.
PLAIN = {
    ("hangzhou_4x4", "maxpressure"): 54.0, ("hangzhou_4x4", "fixed"): 291.6, ("hangzhou_4x4", "actuated"): 74.9,
    ("bologna_joined", "maxpressure"): 151.2, ("bologna_joined", "fixed"): 221.4,
    ("bologna_joined", "actuated"): 285.4,
}  # fmt: skip
SECTION = "## Safety guard cost"
DECOMPOSED = "bologna_joined"
PLAIN_INTERVAL_S = 10.0  # the anchor's max-pressure: a decision every 10 s, the first after 10 s of green


@dataclass(frozen=True)
class PlainVariant:
    """Max-pressure in SUMO without the guard. `plan_clearance`: a change runs the network model's transition
    (the program's own way between the two greens, else yellow then the all-red the plan's intergreens
    ask), not the anchor's bare yellow. `served_pressure`: a green's pressure sums the movements it serves
    (`Intersection.serve_signals`: a permissive green is not service where a protected one exists), not
    every link it shows G or g."""

    label: str
    plan_clearance: bool
    served_pressure: bool


PLAIN_VARIANTS = (
    PlainVariant("plain SUMO, as the anchor: bare yellow, pressure over G/g links", False, False),
    PlainVariant("+ the plan's clearances (the model's transitions)", True, False),
    PlainVariant("+ our pressure (served movements only)", True, True),
)


def _green_pressures(inter: Intersection, halting: dict[str, int], served: bool) -> list[int]:
    shows = inter.serve_signals if served else inter.green_signals
    return [
        sum(halting[m.from_lane] - halting[m.to_lane] for m in inter.vehicle_movements if shows[g, m.signal])
        for g in range(len(inter.greens))
    ]


def run_plain(scenario: Scenario, seed: int, variant: PlainVariant) -> dict[str, float]:
    """One episode of max-pressure straight on libsumo (no guard, no observation layer); the bench metrics."""
    inters = [i for i in load_network(scenario.net_file, scenario.additional_files).intersections if i.greens]
    lanes = sorted({lane for i in inters for m in i.vehicle_movements for lane in (m.from_lane, m.to_lane)})
    with tempfile.TemporaryDirectory(prefix="citysignal-plain-") as tmp:
        trips = Path(tmp) / "tripinfo.xml"
        libsumo.start([
            binary("sumo"), "-c", str(scenario.sumocfg), "--begin", f"{scenario.begin:.3f}",
            "--end", f"{scenario.end:.3f}", "--seed", str(seed), "--step-length", "1", "--time-to-teleport", "-1",
            "--no-step-log", "true", "--no-warnings", "true", "--tripinfo-output", str(trips),
            "--tripinfo-output.write-unfinished", "true", "--tripinfo-output.write-undeparted", "true",
        ])  # fmt: skip
        try:
            green = [0] * len(inters)
            green_since = [scenario.begin] * len(inters)
            pending: list[list[tuple[str, float]]] = [[] for _ in inters]  # transition steps still to show
            step_ends = [scenario.begin] * len(inters)
            for inter in inters:
                libsumo.trafficlight.setRedYellowGreenState(inter.id, inter.greens[0])
            while libsumo.simulation.getTime() < scenario.end:
                libsumo.simulationStep()
                now = libsumo.simulation.getTime()
                halting: dict[str, int] = {}  # read once a step, when some intersection decides
                for k, inter in enumerate(inters):
                    if now < step_ends[k]:
                        continue
                    if pending[k]:
                        state, duration = pending[k].pop(0)
                        libsumo.trafficlight.setRedYellowGreenState(inter.id, state)
                        step_ends[k] = now + duration
                        if not pending[k]:
                            green_since[k] = step_ends[k]
                        continue
                    held = now - green_since[k]
                    if held < PLAIN_INTERVAL_S or held % PLAIN_INTERVAL_S:
                        continue
                    halting = halting or {lane: libsumo.lane.getLastStepHaltingNumber(lane) for lane in lanes}
                    pressures = _green_pressures(inter, halting, variant.served_pressure)
                    best = int(np.argmax(pressures))
                    if best == green[k]:
                        continue
                    way = (
                        inter.transition(green[k], best)
                        if variant.plan_clearance  # the anchor's change: the program's yellow, no all-red
                        else synthesize_transition(inter.greens[green[k]], inter.greens[best], inter.yellow_time, 0.0)
                    )
                    pending[k] = [*way, (inter.greens[best], 0.0)]
                    green[k] = best
                    state, duration = pending[k].pop(0)
                    libsumo.trafficlight.setRedYellowGreenState(inter.id, state)
                    step_ends[k] = now + duration
                    if not pending[k]:
                        green_since[k] = now
        finally:
            libsumo.close()
        return trip_metrics(trips)


# What the real-plan rows that miss 10 % cost, and why (measured at the commits named; see the closing notes).
NOTES = (
    "- hangzhou_4x4 fixed: the max-red bound is the cost. The CityFlow plan leaves approaches red for longer "
    "than 120 s; the guard preempts for them (fairness: no approach waits without bound). With `--max-red 1e9` "
    "fixed-time gives 284.2 s (plain SUMO 291.6).\n"
    "- bologna_joined max-pressure: taken apart in the last table (all in this run). The anchor's rule run "
    "plainly in SUMO reproduces its figure (151.2). Most of the gap is the plan's own clearance: UTOPIA hands over "
    "between conflicting signals with up to 3 s of all-red after the yellow (intergreens of 5-10 s), and the "
    "anchor's bare yellow drops it; a safety reason, kept. Then our pressure (a permissive green is not counted "
    "as service where a protected green serves the same signal), the guard's own rules (the all-red held while "
    "a vehicle is still inside the junction, the junction-box check) and the max-red fairness bound. SUMO's "
    "actuated logic on the same plans pays nothing: the synthesized transitions clear only as long as the "
    "plan's own intergreens ask (453.2 -> 287.6 s).\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()

    jobs = [Job(resolve(sc), c, DEFAULT_SEED + k, max_red=mr) for sc in MAPS for c in CONTROLLERS
            for mr in (120.0, UNBOUNDED_S) for k in range(args.seeds)]  # fmt: skip
    jobs += [Job(resolve(sc), c, DEFAULT_SEED) for sc, c in PLAIN]
    jobs.append(Job(resolve(DECOMPOSED), "maxpressure", DEFAULT_SEED, max_red=UNBOUNDED_S))
    started = time.perf_counter()
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("guard cost", total=len(jobs) + len(PLAIN_VARIANTS))
        results = run_jobs(jobs, workers=args.workers, on_done=lambda job, frac: progress.advance(task, frac))
        with ProcessPoolExecutor(args.workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_plain, resolve(DECOMPOSED), DEFAULT_SEED, v) for v in PLAIN_VARIANTS]
            plain_runs = []
            for future in futures:
                plain_runs.append(future.result())
                progress.advance(task)
    wall = time.perf_counter() - started
    runs: dict[tuple[str, str, bool], list[dict[str, float]]] = defaultdict(list)
    for job, r in zip(jobs, results, strict=True):
        runs[(r.scenario, r.controller, job.max_red < UNBOUNDED_S)].append(r.metrics)

    def agg(rows: list[dict[str, float]], key: str) -> tuple[float, float]:
        values = [row[key] for row in rows]
        return float(np.mean(values)), float(np.max(values))

    lines = ["| map | controller | through the guard: delay mean (worst seed) | max-red lifted | ratio "
             "| within 5 % | max wait, guard (lifted) | never inserted, worst seed | max-red preemptions |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for sc in MAPS:
        for c in CONTROLLERS:
            guarded, lifted = runs[(sc, c, True)], runs[(sc, c, False)]
            (g, g_worst), (u, u_worst) = agg(guarded, "resco_delay"), agg(lifted, "resco_delay")
            lines.append(
                f"| {sc} | {c} | {g:.1f} ({g_worst:.1f}) | {u:.1f} ({u_worst:.1f}) | {g / u:.3f} "
                f"| {'yes' if g <= 1.05 * u else 'no'} | {agg(guarded, 'max_waiting')[1]:.0f} "
                f"({agg(lifted, 'max_waiting')[1]:.0f}) | {agg(guarded, 'not_inserted')[1]:.0f} "
                f"| {agg(guarded, 'max_red_preemptions')[0]:.1f} |"
            )
    plain = ["| scenario | controller | plain SUMO (anchor) | through our guard | ratio | within 10 % |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for (sc, c), anchor in PLAIN.items():
        ours = runs[(sc, c, True)][0]["resco_delay"]  # the first seed: DEFAULT_SEED
        plain.append(f"| {sc} | {c} | {anchor:.1f} | {ours:.1f} | {ours / anchor:.2f} "
                     f"| {'yes' if ours <= 1.10 * anchor else 'no'} |")  # fmt: skip
    steps = [(v.label, m) for v, m in zip(PLAIN_VARIANTS, plain_runs, strict=True)]
    steps += [
        ("+ the guard, max-red bound lifted (`--max-red 1e9`)", runs[(DECOMPOSED, "maxpressure", False)][0]),
        ("+ the max-red bound: through our guard as shipped", runs[(DECOMPOSED, "maxpressure", True)][0]),
    ]
    anatomy = ["| step | RESCO delay | change | never inserted | max wait |", "|---|---|---|---|---|"]
    for i, (label, m) in enumerate(steps):
        change = "" if i == 0 else f"{m['resco_delay'] - steps[i - 1][1]['resco_delay']:+.1f}"
        anatomy.append(f"| {label} | {m['resco_delay']:.1f} | {change} | {m['not_inserted']:.0f} "
                       f"| {m['max_waiting']:.0f} |")  # fmt: skip
    violations = sum(r.metrics["safety_violations"] for r in results)
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, 2 cores; "
        f"total wall {wall:.0f} s; safety violations over all {len(results)} runs: {violations:.0f}\n"
        f"- command: `python benchmarks/guard_cost.py {' '.join(sys.argv[1:])}`\n"
        f"- RESCO delay (s/vehicle), full windows, {args.seeds} seeds from 23423; 'lifted' = "
        "`--max-red 1e9` in the same run; max wait = the longest per-vehicle waiting time of any seed\n\n"
        + "\n".join(lines)
        + "\n\n### Real plans: our guard against plain SUMO (seed 23423)\n\n"
        + "\n".join(plain)
        + "\n\n"
        + NOTES
        + f"\n### Where bologna_joined max-pressure loses against plain SUMO (seed {DEFAULT_SEED}, one piece at a time)"
        + "\n\n"
        + "\n".join(anatomy)
        + "\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
