"""Controllers on faulty detectors: healthy against faulty resco_delay on the RESCO scenarios.

Each (scenario, controller, seed) runs twice through the same `DetectorSupervisor` (plausibility checks,
stand-ins for faulty lanes, fixed-time fallback per intersection): once on healthy detectors
(`--detector-faults 0`) and once with `--fraction` of the lanes faulty (`--kind`, fault seed = the run's
index). The change is faulty over healthy, of the seed means; "judged faulty" is the mean share of lanes the
supervisor does not trust (on healthy detectors: its false alarms), "fallback share" the mean share of
intersections on their fixed-time plan. Runs go seed by seed over all scenarios (a scenario's runs in
parallel with `--workers`), and the section (`--out`, default the "Detector faults" section of
BENCHMARKS.md) is rewritten after every scenario, so an interrupted run still leaves every finished seed.

    nice -n 10 .venv/bin/python benchmarks/detector_faults.py [--seeds 3] [--scenarios cologne1 grid4x4] [--workers 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from citysignal.bench.episode import EpisodeResult
from citysignal.bench.parallel import Job, run_jobs
from citysignal.bench.report import update_section
from citysignal.scenarios import resolve
from citysignal.twin import DEFAULT_SEED
from citysignal.twin.faults import FAULT_KINDS, FaultSpec

RESCO = ("cologne1", "cologne8", "grid4x4", "ingolstadt1", "cologne3", "arterial4x4", "ingolstadt7", "ingolstadt21")
CONTROLLERS = ("maxpressure", "ai")
TOLERANCE = 0.15
SECTION = "## Detector faults"
HERE = Path(__file__).resolve().parent


def table(results: list[tuple[str, EpisodeResult]]) -> tuple[str, int, int]:
    """Markdown rows, how many (scenario, controller) pairs are within the tolerance, and how many there are."""
    runs: dict[tuple[str, str], dict[str, list[EpisodeResult]]] = defaultdict(lambda: defaultdict(list))
    for condition, r in results:
        runs[(r.scenario, r.controller)][condition].append(r)
    lines = [
        "| scenario | controller | seeds | healthy delay s | faulty delay s | change | within 15 % | "
        "violations | prevented | lanes judged faulty (healthy / faulty) | fallback share (healthy / faulty) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    within = total = 0
    for (scenario, controller), by in runs.items():
        healthy, faulty = by["healthy"], by["faulty"]
        seeds = min(len(healthy), len(faulty))
        if seeds == 0:
            continue
        healthy, faulty = healthy[:seeds], faulty[:seeds]

        def mean(rs: list[EpisodeResult], key: str) -> float:
            return float(np.mean([r.metrics.get(key, 0.0) for r in rs]))

        h, f = mean(healthy, "resco_delay"), mean(faulty, "resco_delay")
        change = f / h - 1.0
        ok = change <= TOLERANCE
        within += ok
        total += 1
        violations = sum(int(r.metrics["safety_violations"]) for r in healthy + faulty)
        prevented = sum(int(r.metrics.get("prevented", 0)) for r in healthy + faulty)
        lines.append(
            f"| {scenario} | {controller} | {seeds} | {h:.1f} | {f:.1f} | {change:+.1%} | {'yes' if ok else 'no'} | "
            f"{violations} | {prevented} | {mean(healthy, 'faulty_share'):.1%} / "
            f"{mean(faulty, 'faulty_share'):.1%} | {mean(healthy, 'fallback_share'):.3f} / "
            f"{mean(faulty, 'fallback_share'):.3f} |"
        )
    return "\n".join(lines) + "\n", within, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--scenarios", nargs="+", default=list(RESCO))
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS))
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--kind", choices=FAULT_KINDS, default="mixed")
    ap.add_argument("--workers", type=int, default=1, help="episodes at once (each in a fresh process)")
    ap.add_argument("--out", type=Path, default=HERE.parent / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    started = time.perf_counter()
    results: list[tuple[str, EpisodeResult]] = []
    command = "python benchmarks/detector_faults.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for i in range(args.seeds):
        for name in args.scenarios:
            scenario = resolve(name)
            conditions = {"healthy": FaultSpec(0.0), "faulty": FaultSpec(args.fraction, args.kind, i)}
            runs = [(c, k) for c in args.controllers for k in conditions]
            jobs = [Job(scenario, c, DEFAULT_SEED + i, faults=conditions[k]) for c, k in runs]
            for job, (_, condition), result in zip(jobs, runs, run_jobs(jobs, workers=args.workers), strict=True):
                results.append((condition, result))
                print(f"{job.label} {condition}: resco_delay {result.metrics['resco_delay']:.1f}, "
                      f"violations {result.metrics['safety_violations']:.0f}", flush=True)  # fmt: skip
            rows, within, total = table(results)
            wall = time.perf_counter() - started
            body = (
                f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, "
                f"{os.cpu_count()} cores shared with other work, {args.workers} worker(s) at nice {os.nice(0)}; "
                f"wall {wall:.0f} s so far\n"
                f"- command: `{command.strip()}`\n"
                f"- faults: {args.fraction:.0%} of the observed lanes, {args.kind} (stuck, missing, noisy +-30 %, "
                "chattering), onset 5 to 20 min into the run, fault seed = seed index; both columns run the "
                "detector supervisor (`control/health.py`: plausibility checks, stuck lanes found through their "
                "greens, silent ones by the vehicles sent to them; a faulty lane reads its twin lanes, else its "
                "lowest recent reading if only implausible, else a queue model fed by what the signals upstream "
                "send it; suspect lanes unknown to the guard; fixed-time fallback where most of an intersection's "
                "detectors are faulty), the healthy one on true readings; metric: RESCO delay, full windows; "
                f"seeds from {DEFAULT_SEED}\n"
                f"- progress: seed {i + 1} of {args.seeds}, through {name}; {within} of {total} within "
                f"{TOLERANCE:.0%}; safety violations: "
                f"{sum(int(r.metrics['safety_violations']) for _, r in results)} over {len(results)} runs\n\n"
                f"{rows}"
            )
            update_section(args.out, SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
