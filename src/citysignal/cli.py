"""The `citysignal` command line. User errors end in one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from citysignal.control.guard import DEFAULT_MAX_RED_S
from citysignal.errors import UserError
from citysignal.field.command import bench_field, field_sim
from citysignal.options import (
    Begin,
    BusesPerHour,
    DetectorFaults,
    EmergencyPerHour,
    End,
    FaultKind,
    FaultSeed,
    Field,
    MaxRed,
    NoPriority,
)
from citysignal.scenarios.demand import time_option
from citysignal.scenarios.registry import END_HELP

if TYPE_CHECKING:
    from citysignal.bench.parallel import Job
    from citysignal.scenarios import Scenario
from citysignal.twin.session import DEFAULT_SEED

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="City-wide adaptive traffic-signal control on an Eclipse SUMO digital twin.")  # fmt: skip


plan_app = typer.Typer(no_args_is_help=True, help="Fixed-time fallback plans (Webster, time of day, green waves).")
app.add_typer(plan_app, name="plan")


MESO_HELP = (
    "Run the whole race on SUMO's mesoscopic model (faster, coarser); only controllers that need no lane "
    "readings (fixed, webster, plan:FILE) can run there."
)
MAX_SEEDS = 1000  # a bound, so that a typo cannot queue runs without end
MAX_WORKERS = 256


def _note(scenario: Scenario) -> None:
    """Printed once the work is done, so that a failure still ends in its one error line."""
    if scenario.note:  # plain print: Rich would wrap a long line
        print(f"citysignal: note: {scenario.note}", file=sys.stderr)


def _period(text: str) -> tuple[float, float]:
    """'16:00-17:30' (HH:MM), '16:00:00-17:30:00' or '57600-63000' -> seconds since midnight."""

    def seconds(part: str) -> float:
        if part.count(":") == 1:  # HH:MM here, where SUMO would read MM:SS
            h, m = part.split(":")
            part = f"{h}:{m}:00"
        value = time_option(part, "--period")
        assert value is not None
        return value

    try:
        a, b = (seconds(p.strip()) for p in text.split("-", 1))
    except (UserError, ValueError):
        raise UserError(f"bad period '{text}': use HH:MM-HH:MM or seconds like 57600-61200") from None
    if b <= a:
        raise UserError(f"bad period '{text}': it ends before it starts")
    return a, b


@plan_app.command("export")
def plan_export(
    scenario: Annotated[str, typer.Argument(help="Bundled scenario name or .sumocfg path.")],
    out: Annotated[Path, typer.Option(help="The additional file to write (.add.xml).")],
    period: Annotated[list[str], typer.Option(help="Time-of-day period HH:MM-HH:MM (repeat); default: hourly.")] = [],  # noqa: B006
    coordinate: Annotated[bool, typer.Option(help="Common cycle and green-wave offsets.")] = True,
    max_cycle: Annotated[float, typer.Option(min=30.0, help="Longest cycle Webster may choose (s).")] = 120.0,
) -> None:
    """Webster plans per time-of-day period from the scenario's demand, as a SUMO additional file."""
    from citysignal.network import load_network
    from citysignal.network.layout import Layout
    from citysignal.plan import timing
    from citysignal.plan.export import write_plans
    from citysignal.scenarios import resolve

    sc = resolve(scenario)
    network = load_network(sc.net_file, sc.additional_files)
    layout = Layout.from_network(network)
    windows = [_period(p) for p in period] or [
        (t, min(t + 3600.0, sc.end)) for t in np.arange(sc.begin, sc.end, 3600.0).tolist()
    ]
    periods = []
    table = Table(title=f"plans for {sc.name}")
    for col in ("period", "mean cycle (s)", "max cycle (s)", "signals"):
        table.add_column(col, justify="right")
    for a, b in sorted(windows):
        flows = timing.movement_flows(sc, layout, a, b)
        plans = timing.webster_plans(layout, flows, c_max=max_cycle)
        if coordinate:
            plans = timing.coordinate(network, layout, plans, flows)
        periods.append((a, plans))
        cycles = [p.cycle for p in plans]
        table.add_row(f"{a:g}-{b:g}", f"{np.mean(cycles):.0f}", f"{max(cycles):.0f}", str(len(plans)))
    write_plans(periods, out)
    Console().print(table)
    Console(stderr=True).print(f"wrote {out}")
    _note(sc)


@app.command()
def scenarios() -> None:
    """List the bundled scenarios: signals, vehicles in the window, window."""
    from citysignal.network import load_network
    from citysignal.scenarios import bundled_names, demand_summary, resolve

    table = Table(title="bundled scenarios")
    for col in ("name", "signals", "vehicles", "window (s)"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for name in bundled_names():
        sc = resolve(name)
        net = load_network(sc.net_file, sc.additional_files)
        _, _, vehicles = demand_summary(sc)
        table.add_row(name, str(len(net.intersections)), str(vehicles), f"{sc.begin:g}-{sc.end:g}")
    Console().print(table)


@app.command()
def bench(
    scenario: Annotated[list[str], typer.Argument(help="Bundled scenario names or paths to .sumocfg files.")],
    controller: Annotated[list[str], typer.Option("--controller", "-c", help="Controller(s) to run.")] = ["fixed"],  # noqa: B006
    seeds: Annotated[int, typer.Option(min=1, max=MAX_SEEDS, help="Seeds per run, from SUMO's default 23423.")] = 1,
    begin: Begin = None,
    end: End = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run on stdout.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write results.md, results.jsonl and PNG plots here.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=MAX_WORKERS, help="Parallel SUMO processes (Ray).")] = 2,
    max_red: MaxRed = DEFAULT_MAX_RED_S,
    policy: Annotated[Path | None, typer.Option(help="Weights (.npz) for the ai controller; default: shipped.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address; default: local Ray.")] = None,
    detector_faults: DetectorFaults = None,
    fault_kind: FaultKind = "mixed",
    fault_seed: FaultSeed = 0,
    emergency_per_hour: EmergencyPerHour = 0.0,
    buses_per_hour: BusesPerHour = 0.0,
    no_priority: NoPriority = False,
    field: Field = None,
) -> None:
    """Benchmark controllers on scenarios with the RESCO metric, through the safety guard."""
    from citysignal.bench import report
    from citysignal.bench.parallel import Job, run_jobs
    from citysignal.control import make_controller
    from citysignal.network import load_network
    from citysignal.scenarios import resolve
    from citysignal.scenarios.priority import PriorityDemand
    from citysignal.twin.faults import FaultSpec

    window = time_option(begin, "--begin"), time_option(end, "--end")
    faults = None if detector_faults is None else FaultSpec(detector_faults, fault_kind, fault_seed)
    names = [c for arg in controller for c in arg.split(",") if c]
    if field is not None:
        if faults is not None or emergency_per_hour or buses_per_hour:
            raise UserError("--field drives real detectors and vehicles: no --detector-faults or priority vehicles")
        scenario_names = [s for arg in scenario for s in arg.split(",") if s]
        bench_field(scenario_names, names, field, policy, max_red, *window, as_json, out)
        return
    for name in names:  # unknown names and bad policies fail here, before any simulation starts
        make_controller(name, policy if name.startswith("ai") else None)
    resolved = [resolve(s, *window) for arg in scenario for s in arg.split(",") if s]
    for sc in resolved:  # a bad net fails here in one line, not inside a worker
        load_network(sc.net_file, sc.additional_files)
    jobs = [
        Job(sc, c, DEFAULT_SEED + k, max_red, policy if c.startswith("ai") else None, faults=faults,
            priority=PriorityDemand(emergency_per_hour, buses_per_hour, DEFAULT_SEED + k), priority_on=not no_priority)
        for sc in resolved
        for c in names
        for k in range(seeds)
    ]  # fmt: skip

    err = Console(stderr=True)
    with _progress(err, transient=True) as progress:  # transient: a failed run leaves only its error line
        task = progress.add_task(f"{len(jobs)} run(s)", total=len(jobs))
        finished: dict[str, float] = {}

        def on_done(job: Job, frac: float) -> None:
            finished[job.label] = frac
            progress.update(task, completed=sum(finished.values()), description=job.label)

        results = run_jobs(jobs, workers=workers, address=address, on_done=on_done)

    if as_json:
        sys.stdout.write(report.json_lines(results))
    else:
        Console().print(report.rich_table(report.summarize(results)))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text(report.markdown_table(report.summarize(results)))
        (out / "results.jsonl").write_text(report.json_lines(results))
        plots = report.plot(results, out)
        err.print(f"wrote {out / 'results.md'}, {out / 'results.jsonl'} and {len(plots)} plot(s)")
    for sc in resolved:
        _note(sc)


def _progress(console: Console, transient: bool = False) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                    TimeElapsedColumn(), console=console, transient=transient)  # fmt: skip


@app.command()
def demo(
    quick: Annotated[bool, typer.Option(help="20 minutes of the peak instead of the 3-hour evening.")] = False,
    out: Annotated[Path, typer.Option(help="Where report.html and results.json go.")] = Path("out/demo"),
    controller: Annotated[list[str], typer.Option("--controller", "-c", help="Controllers to compare.")] = [  # noqa: B006
        "ai", "maxpressure", "actuated", "fixed"
    ],
    workers: Annotated[int, typer.Option(min=1, help="Parallel SUMO processes (Ray).")] = 2,
    address: Annotated[str | None, typer.Option(help="Ray cluster address; default: local Ray.")] = None,
) -> None:
    """The city evening peak: AI against fixed-time, actuated and max-pressure, with an HTML report."""
    from citysignal.bench.demo import KPIS, run_demo
    from citysignal.control import make_controller

    names = [c for arg in controller for c in arg.split(",") if c]
    for name in names:
        make_controller(name)
    err = Console(stderr=True)
    with _progress(err) as progress:
        task = progress.add_task(f"evening peak, {len(names)} controllers", total=len(names))
        finished: dict[str, float] = {}

        def on_done(job: Job, frac: float) -> None:
            finished[job.label] = frac
            progress.update(task, completed=sum(finished.values()), description=job.label)

        result = run_demo(out, quick=quick, controllers=names, workers=workers, address=address, on_done=on_done)
    table = Table(title=f"{result.scenario.name} {result.scenario.begin:g}-{result.scenario.end:g} s")
    table.add_column("controller")
    for _, label, _ in KPIS:
        table.add_column(label, justify="right")
    for r in result.results:
        table.add_row(r.controller, *(fmt.format(r.metrics[k]) for k, _, fmt in KPIS))
    Console().print(table)
    err.print(f"report: {result.html_path}  (numbers: {result.json_path})")


@app.command()
def profile(
    scenario: Annotated[str, typer.Argument(help="Bundled scenario name or .sumocfg path.")],
    out: Annotated[Path, typer.Option(help="Folder for the reshaped routes and .sumocfg.")],
    name: Annotated[str, typer.Option("--profile", help="Demand profile: evening-peak or flat.")] = "evening-peak",
    begin: Annotated[str, typer.Option(help="Window start since midnight (s or clock time).")] = "16:00:00",
    end: Annotated[str, typer.Option(help="Window end since midnight (s or clock time).")] = "19:00:00",
    peak_factor: Annotated[float, typer.Option(help="Peak rate as a multiple of the scenario's mean rate.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the resampling.")] = 0,
    scenario_name: Annotated[str | None, typer.Option("--name", help="Name of the new scenario.")] = None,
) -> None:
    """Reshape a scenario's demand to a time-of-day profile (e.g. the evening peak)."""
    from citysignal.scenarios import resolve
    from citysignal.scenarios.profiles import get_profile, reshape

    shape = get_profile(name)
    start, stop = time_option(begin, "--begin"), time_option(end, "--end")
    assert start is not None and stop is not None
    base = resolve(scenario)
    sc = reshape(base, shape, out, start, stop, peak_factor, seed, scenario_name)
    Console(stderr=True).print(f"wrote {sc.sumocfg} ({sc.begin:g}-{sc.end:g} s)")
    _note(base)


@app.command("import-osm")
def import_osm(
    osm: Annotated[Path, typer.Argument(help="OpenStreetMap extract (.osm or .osm.xml, optionally .gz).")],
    out: Annotated[Path, typer.Option(help="Folder for the net, routes and .sumocfg.")],
    name: Annotated[str, typer.Option("--profile", help="Demand profile: evening-peak or flat.")] = "evening-peak",
    hours: Annotated[float, typer.Option(help="Length of the scenario (h), from --begin.")] = 3.0,
    begin: Annotated[str, typer.Option(help="Start since midnight (s or clock time).")] = "16:00:00",
    density: Annotated[float, typer.Option(help="Trips per hour per km of road at the base rate.")] = 60.0,
    peak_factor: Annotated[float, typer.Option(help="Peak rate as a multiple of the base rate.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic demand.")] = 0,
) -> None:
    """Import a city from OSM (netconvert) with synthetic demand under a profile, ready for bench/demo/serve."""
    from citysignal.scenarios.osm import import_osm as build
    from citysignal.scenarios.profiles import get_profile

    shape = get_profile(name)
    start = time_option(begin, "--begin")
    assert start is not None
    if not 0 < hours < float("inf"):
        raise UserError(f"--hours must be a finite number > 0, got {hours:g}")
    with Console(stderr=True).status("netconvert, randomTrips, duarouter..."):
        sc = build(osm, out, shape, hours, start, density, peak_factor, seed)
    Console(stderr=True).print(f"wrote {sc.sumocfg} ({sc.begin:g}-{sc.end:g} s)")


@app.command()
def train(
    scenarios: Annotated[str, typer.Option(help="Training scenarios, comma-separated (names or .sumocfg paths).")],
    episodes: Annotated[int, typer.Option(min=1, help="PPO iterations; each rolls out every scenario once.")] = 20,
    workers: Annotated[int, typer.Option(min=1, help="Rollout workers (Ray), one SUMO each.")] = 2,
    address: Annotated[str | None, typer.Option(help="Ray cluster address; default: local Ray.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights and rollouts.")] = 0,
    out: Annotated[Path, typer.Option(help="Checkpoints, logs and best.npz go here.")] = Path("out/train"),
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = False,
    begin: Annotated[str | None, typer.Option(help="Window start (s or clock time); default: each scenario's.")] = None,
    end: Annotated[str | None, typer.Option(help=END_HELP)] = None,
    teacher: Annotated[str, typer.Option(help="Classic controller imitated first; the validation baseline.")] = (
        "advanced_mp"
    ),
    imitation_epochs: Annotated[int, typer.Option(min=0, help="Behaviour-cloning passes; 0: no warm start.")] = 20,
    trust: Annotated[float, typer.Option(min=0.0, max=1.0, help="The deployed rule's trust region.")] = 0.5,
    validate_every: Annotated[int, typer.Option(min=1, help="Validate under the deployed rule every N.")] = 2,
) -> None:
    """Train the shared AI policy (imitation, then PPO with parameter sharing) for NumPy inference."""
    from citysignal.scenarios import resolve

    try:
        from citysignal.learn.train import TrainConfig, Trainer
    except ImportError as exc:
        hint = "pip install torch==2.13.0 'citysignal[train]'"
        raise UserError(f"training needs the train extra ({hint}): {exc}") from exc
    resolved = [resolve(s, time_option(begin, "--begin"), time_option(end, "--end")) for s in scenarios.split(",") if s]
    from citysignal.control import make_controller

    if make_controller(teacher).sumo_program is not None:  # an unknown name is a one-line error, too
        raise UserError(f"--teacher {teacher} is a SUMO program: it cannot be imitated; choose one that decides")
    config = TrainConfig(
        resolved, out, episodes=episodes, workers=workers, address=address, seed=seed, resume=resume,
        teacher=teacher, imitation_epochs=imitation_epochs, trust=trust, validate_every=validate_every,
    )  # fmt: skip
    err = Console(stderr=True)
    with _progress(err) as progress:
        task = progress.add_task("training", total=1.0)
        best = Trainer(config, lambda msg, frac: progress.update(task, completed=frac, description=msg)).run()
    err.print(f"selected policy: {best} (log: {out / 'train_log.csv'})")


@app.command()
def whatif(
    scenario: Annotated[str, typer.Argument(help="Bundled scenario name or .sumocfg path.")],
    at: Annotated[str, typer.Option(help="Fork time T (s or clock time HH:MM:SS), within the scenario's window.")],
    horizon: Annotated[str, typer.Option(help="Seconds (or H:MM:SS) each candidate runs from T.")],
    candidates: Annotated[str, typer.Option(help="Controllers or plan:FILE (plan export) to race, comma-separated")] = (
        "ai,maxpressure,fixed"
    ),
    controller: Annotated[str, typer.Option(help="Controller that runs the city up to T.")] = "ai",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per candidate, best first.")] = False,
    workers: Annotated[
        int, typer.Option(min=1, max=MAX_WORKERS, help="CPUs (Ray) the candidates share; all of them run at once.")
    ] = 3,
    seed: Annotated[int, typer.Option(help="SUMO seed of the run to T and of every candidate.")] = DEFAULT_SEED,
    policy: Annotated[Path | None, typer.Option(help="Weights (.npz) for the ai controller; default: shipped.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address; default: local Ray.")] = None,
    meso: Annotated[bool, typer.Option("--meso", help=MESO_HELP)] = False,
) -> None:
    """Fork the city at T and race candidate controllers from the same vehicles for a horizon, best first."""
    import json

    from citysignal.bench import report
    from citysignal.bench.whatif import check_candidates, race
    from citysignal.network import load_network
    from citysignal.scenarios import resolve

    t = time_option(at, "--at")
    h = time_option(horizon, "--horizon")
    assert t is not None and h is not None
    names = [c for c in candidates.split(",") if c]
    check_candidates(names, policy, meso)
    try:
        check_candidates([controller], policy, meso)
    except UserError as exc:
        raise UserError(f"--controller: {exc}") from None
    sc = resolve(scenario)
    load_network(sc.net_file, sc.additional_files)  # a bad net fails here in one line, not inside a worker
    err = Console(stderr=True)
    with _progress(err, transient=True) as progress:
        task = progress.add_task(f"running {sc.name} to {t:g} s under {controller}, then {len(names)} candidate(s)",
                                 total=len(names))  # fmt: skip
        finished: dict[str, float] = {}

        def on_done(job: Job, frac: float) -> None:
            finished[job.label] = frac
            progress.update(task, completed=sum(finished.values()), description=job.label)

        result = race(sc, t, h, names, controller, seed, workers, address, policy, on_done=on_done, meso=meso)
    rows = result.rows()
    if as_json:
        sys.stdout.write("".join(json.dumps(row) + "\n" for row in rows))
    else:
        model = ", mesoscopic" if meso else ""
        title = f"what-if {sc.name}{model}: fork at {t:g} s under {controller}, {h:g} s horizon, best first"
        Console().print(report.rich_table(report.summarize(result.results), title))
        err.print(f"race: {result.race_wall_s:.1f} s from the fork to the last result")
    _note(sc)


from citysignal.service.command import serve  # noqa: E402

app.command(name="serve")(serve)
app.command(name="field-sim")(field_sim)


def main() -> None:
    try:
        app(standalone_mode=False)
    except UserError as exc:
        print(f"citysignal: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("citysignal: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if hasattr(exc, "format_message"):  # a usage error from Typer's command-line parser
            print(f"citysignal: error: {exc.format_message()}", file=sys.stderr)
            sys.exit(2)
        cause = getattr(exc, "cause", None)  # a Ray task that failed on a user error
        if isinstance(cause, UserError):
            print(f"citysignal: error: {cause}", file=sys.stderr)
            sys.exit(2)
        raise
