"""The shipped AI policy against the classic controllers and the published learners, same runs.

RESCO scenarios (full windows) x {fixed, actuated, webster, maxpressure, sotl, ai} x seeds, plus
zero-shot transfer to the bundled cities the policy never saw (Hangzhou 4x4, Manhattan 28x7, Bologna)
against fixed, actuated and max-pressure. Writes the "AI controller" section of BENCHMARKS.md and the
training curve (from the training log kept in benchmarks/ai_train_log.csv) as a PNG.

    .venv/bin/python benchmarks/ai_resco.py [--seeds 3] [--workers 2] [--transfer-seeds 1]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress

from citysignal.bench.episode import EpisodeResult
from citysignal.bench.parallel import Job, run_jobs
from citysignal.bench.report import update_section
from citysignal.scenarios import resolve
from citysignal.twin import DEFAULT_SEED

RESCO = ("cologne1", "cologne3", "cologne8", "ingolstadt1", "ingolstadt7", "ingolstadt21", "grid4x4", "arterial4x4")
CLASSIC = ("fixed", "actuated", "webster", "maxpressure", "sotl")
TRANSFER = ("hangzhou_4x4", "manhattan_28x7", "bologna_joined")
TRANSFER_CONTROLLERS = ("fixed", "actuated", "maxpressure", "ai")
PUBLISHED_BEST = {"cologne1": 26.05, "cologne3": 23.99, "cologne8": 21.62, "ingolstadt1": 20.90,
                  "ingolstadt7": 31.19, "ingolstadt21": 59.64, "grid4x4": 32.95, "arterial4x4": 654.13}  # fmt: skip
SECTION = "## AI controller"
HERE = Path(__file__).resolve().parent


def mean_by(results: list[EpisodeResult], key: str) -> dict[tuple[str, str], float]:
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        groups[(r.scenario, r.controller)].append(float(r.metrics[key]))
    return {k: float(np.mean(v)) for k, v in groups.items()}


def training_curve(log: Path, png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(log.open()))
    it = [int(r["iteration"]) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(it, [float(r["train_delay"]) for r in rows], marker="o")
    a.set(title="training episodes (sampled policy)", xlabel="iteration", ylabel="mean RESCO delay, 8 maps (s)")
    val = [(int(r["iteration"]), float(r["val_score"])) for r in rows if r.get("val_score")]
    b.plot(*zip(*val, strict=True), marker="o", color="C1")
    b.axhline(1.0, color="k", lw=0.8)
    b.set(title="validation (greedy, held-back seed)", xlabel="iteration", ylabel="delay / max-pressure")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    best = min(val, key=lambda v: v[1])
    return f"best validation {best[1]:.3f} x max-pressure at iteration {best[0]} (the shipped policy)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--transfer-seeds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()

    jobs = [Job(resolve(sc), c, DEFAULT_SEED + k) for sc in RESCO for c in (*CLASSIC, "ai") for k in range(args.seeds)]
    jobs += [Job(resolve(sc), c, DEFAULT_SEED + k) for sc in TRANSFER for c in TRANSFER_CONTROLLERS
             for k in range(args.transfer_seeds)]  # fmt: skip
    started = time.perf_counter()
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("AI benchmark", total=len(jobs))
        results = run_jobs(jobs, workers=args.workers, on_done=lambda job, frac: progress.advance(task, frac))
    wall = time.perf_counter() - started
    delay, p95 = mean_by(results, "resco_delay"), mean_by(results, "p95_waiting")
    violations = sum(r.metrics["safety_violations"] for r in results)

    lines = ["| map | fixed | actuated | max-pressure | best classic | ai | goal (0.9 x min) | published best "
             "| ai / best classic | goal met | ai p95 wait | fixed p95 wait |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    met = 0
    for sc in RESCO:
        classic = {c: delay[(sc, c)] for c in CLASSIC}
        best_name = min(classic, key=classic.__getitem__)
        goal = 0.9 * min(PUBLISHED_BEST[sc], classic[best_name])
        ai = delay[(sc, "ai")]
        met += ai <= goal
        lines.append(
            f"| {sc} | {classic['fixed']:.1f} | {classic['actuated']:.1f} | {classic['maxpressure']:.1f} "
            f"| {classic[best_name]:.1f} ({best_name}) | **{ai:.1f}** | {goal:.1f} | {PUBLISHED_BEST[sc]:.2f} "
            f"| {ai / classic[best_name]:.2f} | {'yes' if ai <= goal else 'no'} | {p95[(sc, 'ai')]:.0f} "
            f"| {p95[(sc, 'fixed')]:.0f} |"
        )
    transfer = ["| city (never trained on) | fixed | actuated | max-pressure | ai | ai / best classic |",
                "|---|---|---|---|---|---|"]  # fmt: skip
    for sc in TRANSFER:
        vals = {c: delay[(sc, c)] for c in TRANSFER_CONTROLLERS}
        best = min(vals[c] for c in TRANSFER_CONTROLLERS if c != "ai")
        transfer.append(f"| {sc} | {vals['fixed']:.1f} | {vals['actuated']:.1f} | {vals['maxpressure']:.1f} "
                        f"| **{vals['ai']:.1f}** | {vals['ai'] / best:.2f} |")  # fmt: skip
    curve = training_curve(HERE / "ai_train_log.csv", HERE / "ai_training_curve.png")
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, 2 cores; "
        f"total wall {wall:.0f} s; safety violations over all {len(results)} runs: {violations:.0f}\n"
        f"- command: `python benchmarks/ai_resco.py {' '.join(sys.argv[1:])}`\n"
        f"- metric: RESCO delay (s/vehicle), full RESCO windows, mean over {args.seeds} seeds from 23423; one "
        "configuration (the shipped `ai_default.npz`) for every map; goal = 0.9 x min(best published learner, "
        "best classic controller of this run); published learners are best episodes (RESCO, SUMO 1.9)\n"
        f"- training: see `src/citysignal/control/policies/README.md`; {curve}; "
        "curve: `benchmarks/ai_training_curve.png`\n\n"
        f"Goal met on {met} of {len(RESCO)} maps.\n\n" + "\n".join(lines) + "\n\n"
        f"### Zero-shot transfer (mean over {args.transfer_seeds} seed(s), each city's own 1 h window)\n\n"
        + "\n".join(transfer) + "\n\n![training curve](benchmarks/ai_training_curve.png)\n"
    )
    update_section(args.out, SECTION, body)
    print(body)


if __name__ == "__main__":
    main()
