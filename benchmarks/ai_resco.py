"""The shipped AI policy against every classic controller and the published learners, same runs.

RESCO scenarios (full windows) x {fixed, actuated, webster, maxpressure, advanced_mp, sotl, ai, ai_free}
x seeds, plus zero-shot transfer to the bundled cities the policy never saw (Hangzhou 4x4, Manhattan 28x7,
Bologna) against the classic controllers. `ai_free` is the ablation: the same policy without its trust
region. Reports the mean and the worst seed, never-inserted vehicles, p95 waits against fixed-time, and how
often the AI's fallback and trust region took over. Writes the "AI controller" section of BENCHMARKS.md and
the training curve (from the training log kept in benchmarks/ai_train_log.csv) as a PNG.

    .venv/bin/python benchmarks/ai_resco.py [--seeds 5] [--workers 2] [--transfer-seeds 1]
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
CLASSIC = ("fixed", "actuated", "webster", "maxpressure", "advanced_mp", "sotl")
AI = ("ai", "ai_free")
TRANSFER = ("hangzhou_4x4", "manhattan_28x7", "bologna_joined")
TRANSFER_CONTROLLERS = ("fixed", "actuated", "maxpressure", "advanced_mp", "ai")
PUBLISHED_BEST = {"cologne1": 26.05, "cologne3": 23.99, "cologne8": 21.62, "ingolstadt1": 20.90,
                  "ingolstadt7": 31.19, "ingolstadt21": 59.64, "grid4x4": 32.95, "arterial4x4": 654.13}  # fmt: skip
SECTION = "## AI controller"
HERE = Path(__file__).resolve().parent


def by_run(results: list[EpisodeResult], key: str) -> dict[tuple[str, str], list[float]]:
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in results:
        groups[(r.scenario, r.controller)].append(float(r.metrics.get(key, float("nan"))))
    return groups


def training_curve(log: Path, png: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = list(csv.DictReader(log.open()))
    rows = [r for r in logged if r.get("train_delay")]
    it = [int(float(r["iteration"])) for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(it, [float(r["train_delay"]) for r in rows], marker="o")
    a.set(title="training episodes (sampled policy)", xlabel="iteration", ylabel="mean RESCO delay, 8 maps (s)")
    # validations before PPO too: the untrained policy (iteration -2) and the cloned one (-1)
    val = [(int(float(r["iteration"])), float(r["val_score"])) for r in logged if r.get("val_score")]
    b.plot(*zip(*val, strict=True), marker="o", color="C1")
    b.axhline(1.0, color="k", lw=0.8)
    b.set(title="validation (deployed rule, held-back seeds)", xlabel="iteration", ylabel="delay / teacher")
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    best = min(val, key=lambda v: v[1])
    return (f"best validation in the log {best[1]:.3f} x the teacher at iteration {best[0]}; which policy ships, "
            "and why: the policies README")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--transfer-seeds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--maps", default=",".join(RESCO), help="comma-separated subset of the RESCO maps")
    parser.add_argument("--transfer", default=",".join(TRANSFER), help="comma-separated unseen cities ('' for none)")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    maps = [m for m in args.maps.split(",") if m]
    transfer = tuple(t for t in args.transfer.split(",") if t)

    jobs = [Job(resolve(sc), c, DEFAULT_SEED + k) for sc in maps for c in (*CLASSIC, *AI) for k in range(args.seeds)]
    jobs += [Job(resolve(sc), c, DEFAULT_SEED + k) for sc in transfer for c in TRANSFER_CONTROLLERS
             for k in range(args.transfer_seeds)]  # fmt: skip
    started = time.perf_counter()
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task("AI benchmark", total=len(jobs))
        results = run_jobs(jobs, workers=args.workers, on_done=lambda job, frac: progress.advance(task, frac))
    wall = time.perf_counter() - started
    delay, p95 = by_run(results, "resco_delay"), by_run(results, "p95_waiting")
    lost = by_run(results, "not_inserted")
    fallback, takeover = by_run(results, "ai_fallback_rate"), by_run(results, "ai_trust_takeover_rate")
    violations = sum(r.metrics["safety_violations"] for r in results)

    def mean(key: tuple[str, str], table: dict[tuple[str, str], list[float]] = delay) -> float:
        return float(np.mean(table[key]))

    lines = ["| map | fixed | actuated | webster | max-pressure | advanced_mp | sotl | best classic "
             "| **ai** mean (worst seed) | ai / best classic | must (<= best classic) | goal (0.9 x min) | goal met "
             "| ai never inserted, worst "
             "| ai p95 wait (fixed) | fallback / trust takeover | ai_free (no trust region) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    must = met = 0
    for sc in maps:
        classic = {c: mean((sc, c)) for c in CLASSIC}
        best_name = min(classic, key=classic.__getitem__)
        goal = 0.9 * min(PUBLISHED_BEST[sc], classic[best_name])
        ai, worst = mean((sc, "ai")), float(np.max(delay[(sc, "ai")]))
        ok = ai <= classic[best_name]
        must += ok
        met += ai <= goal
        lines.append(
            f"| {sc} | "
            + " | ".join(f"{classic[c]:.1f}" for c in CLASSIC)
            + f" | {classic[best_name]:.1f} ({best_name}) | **{ai:.1f}** ({worst:.1f}) | {ai / classic[best_name]:.2f} "
            f"| {'yes' if ok else 'no'} | {goal:.1f} | {'yes' if ai <= goal else 'no'} "
            f"| {np.max(lost[(sc, 'ai')]):.0f} (best classic {np.max(lost[(sc, best_name)]):.0f}) "
            f"| {mean((sc, 'ai'), p95):.0f} ({mean((sc, 'fixed'), p95):.0f}) "
            f"| {mean((sc, 'ai'), fallback):.3f} / {mean((sc, 'ai'), takeover):.3f} | {mean((sc, 'ai_free')):.1f} |"
        )
    tlines = ["| city (never trained on) | " + " | ".join(TRANSFER_CONTROLLERS) + " | ai / best classic |",
              "|---|" + "---|" * (len(TRANSFER_CONTROLLERS) + 1)]  # fmt: skip
    for sc in transfer:
        vals = {c: mean((sc, c)) for c in TRANSFER_CONTROLLERS}
        best = min(vals[c] for c in TRANSFER_CONTROLLERS if c != "ai")
        tlines.append(f"| {sc} | " + " | ".join(f"{vals[c]:.1f}" for c in TRANSFER_CONTROLLERS)
                      + f" | {vals['ai'] / best:.2f} |")  # fmt: skip
    png = HERE / "ai_training_curve.png"
    curve = training_curve(HERE / "ai_train_log.csv", png)
    body = (
        f"{SECTION}\n\n- date: {dt.date.today().isoformat()}; machine: {platform.machine()}, 2 cores; "
        f"total wall {wall:.0f} s; safety violations over all {len(results)} runs: {violations:.0f}\n"
        f"- command: `python benchmarks/ai_resco.py {' '.join(sys.argv[1:])}`\n"
        f"- metric: RESCO delay (s/vehicle), full RESCO windows, mean over {args.seeds} seeds from 23423 and the "
        "worst seed; one configuration (the shipped `ai_default.npz`) for every map; must = the AI's mean at most "
        "the best classic controller's of this run; goal = 0.9 x min(best published learner, best classic); "
        "published learners are best episodes (RESCO, SUMO 1.9); fallback / trust takeover = share of the AI's "
        "intersection decisions made by the anchor (inputs out of range) / outside the trust region\n"
        f"- training: see `src/citysignal/control/policies/README.md`; {curve}; "
        "curve: `benchmarks/ai_training_curve.png`\n\n"
        f"Must met on {must} of {len(maps)} maps; goal met on {met}.\n\n" + "\n".join(lines) + "\n"
    )
    if transfer:
        body += (f"\n### Zero-shot transfer (mean over {args.transfer_seeds} seed(s), each city's own 1 h window)\n\n"
                 + "\n".join(tlines) + "\n")  # fmt: skip
    body += "\n![training curve](benchmarks/ai_training_curve.png)\n"
    update_section(args.out, SECTION, body, figures=(png,))
    print(body)


if __name__ == "__main__":
    main()
