"""Run many episodes (scenarios x controllers x seeds) in parallel on Ray, one SUMO per worker process.

Ray starts locally (`num_cpus=workers`, loopback only) unless an address is given (`host:6379`,
`ray://host:10001` or `auto`; see `bench.cluster`); on a cluster every node must have citysignal
installed, and a scenario given by path must exist at the same path on the nodes (bundled scenarios
ship with the package). A single job runs in this process: no Ray start-up for a one-off run.

Every episode of a batch runs in a process of its own (Ray workers are not reused; `workers=1` runs the
jobs one after another in fresh processes): libsumo does not repeat a run exactly after another
simulation ran in the same process (measured on SUMO 1.28: 2 of 5 repeats of cologne1 diverged at step
531), so a shared process would make a result depend on the order of the jobs.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from citysignal.bench.cluster import init_ray
from citysignal.bench.episode import EpisodeResult, Fork, run_episode
from citysignal.control.guard import DEFAULT_MAX_RED_S
from citysignal.scenarios import Scenario
from citysignal.scenarios.priority import PriorityDemand
from citysignal.twin.faults import FaultSpec

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    scenario: Scenario
    controller: str
    seed: int
    max_red: float = DEFAULT_MAX_RED_S
    policy: Path | None = None
    snapshot_at: float | None = None
    faults: FaultSpec | None = None
    start: Fork | None = None  # begin at this fork of the twin (what-if), not at the scenario's begin
    priority: PriorityDemand | None = None  # emergency vehicles and buses added to the scenario
    priority_on: bool = True

    @property
    def label(self) -> str:
        return f"{self.scenario.name}/{self.controller}/seed {self.seed}"


def _run(job: Job, on_step: Callable[[float], None] | None = None) -> EpisodeResult:
    j = job
    return run_episode(j.scenario, j.controller, j.seed, j.max_red, on_step, j.policy, j.snapshot_at, j.faults,
                       j.start, priority=j.priority, priority_on=j.priority_on)  # fmt: skip


def run_jobs(
    jobs: Sequence[Job],
    workers: int = 2,
    address: str | None = None,
    on_done: Callable[[Job, float], None] | None = None,
    together: bool = False,
) -> list[EpisodeResult]:
    """Results in job order. `on_done(job, fraction)` reports progress within or across jobs.

    `together`: start every job at once, a local run's `workers` CPUs shared evenly among them (a race:
    with three jobs on two CPUs none waits for a free one, so the last ends after about 1.5 job times of
    CPU, not 2); on a cluster each job still asks for one CPU."""
    if address is None and len(jobs) == 1:
        job = jobs[0]

        def progress(frac: float) -> None:
            if on_done is not None:
                on_done(job, frac)

        result = _run(job, progress)
        progress(1.0)
        return [result]
    if address is None and workers <= 1:
        return _run_in_fresh_processes(jobs, on_done)
    return _run_on_ray(jobs, workers, address, on_done, _cpus_each(len(jobs), workers, address, together))


def map_fresh(fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], workers: int = 2,
              address: str | None = None, together: bool = False) -> list[T]:  # fmt: skip
    """`fn(*args)` for each of `calls`, in order, each call in a process of its own (see the module
    docstring): on Ray (local with `workers` CPUs, or the cluster at `address`), or one after another in
    fresh processes where `workers` is 1. `fn` must be importable by name (a module-level function).
    `together`: as in `run_jobs`."""
    if address is None and workers <= 1:
        with _one_at_a_time() as pool:
            return [pool.submit(fn, *args).result() for args in calls]
    init_ray(workers, address)
    import ray

    remote = _fresh_remote(fn, _cpus_each(len(calls), workers, address, together))
    return list(ray.get([remote.remote(*args) for args in calls]))


def _cpus_each(n_calls: int, workers: int, address: str | None, together: bool) -> float:
    """The CPUs each call asks for: one, or with `together` on a local Ray an even share of `workers` among
    the calls (fractional, so that all of them start at once)."""
    return workers / n_calls if together and address is None and n_calls > workers else 1.0


def _one_at_a_time() -> ProcessPoolExecutor:
    """One spawned process per task (no fork of a process that has run libsumo or holds threads)."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1)


def _fresh_remote(fn: Callable[..., Any], cpus: float = 1.0) -> Any:
    """`fn` as a Ray task that runs in a fresh worker process each time (the worker exits after one call),
    asking for `cpus` CPUs (a fraction lets more tasks than CPUs run at once)."""
    import ray

    return ray.remote(num_cpus=cpus, max_retries=0, max_calls=1)(fn)


def _run_in_fresh_processes(jobs: Sequence[Job], on_done: Callable[[Job, float], None] | None) -> list[EpisodeResult]:
    results = []
    with _one_at_a_time() as pool:
        for job in jobs:
            results.append(pool.submit(_run, job).result())
            if on_done is not None:
                on_done(job, 1.0)
    return results


def _run_on_ray(
    jobs: Sequence[Job],
    workers: int,
    address: str | None,
    on_done: Callable[[Job, float], None] | None,
    cpus: float = 1.0,
) -> list[EpisodeResult]:
    init_ray(workers, address)
    import ray

    remote = _fresh_remote(_run, cpus)
    refs = {remote.remote(j): i for i, j in enumerate(jobs)}
    results: list[EpisodeResult | None] = [None] * len(jobs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            i = refs[ref]
            results[i] = ray.get(ref)
            if on_done is not None:
                on_done(jobs[i], 1.0)
    return [r for r in results if r is not None]
