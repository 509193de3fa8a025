"""What-if races in the service: fork the live twin, race candidate controllers from it, keep the results.

A race forks the twin at the first snapshot it takes after the request: the engine takes one every
`SNAPSHOT_EVERY_S` of wall time for recovery (SUMO's saved state and the guard's, at one step boundary; see
`engine`), so the fork waits at most that long (`fork_wait_s`) and is never older than the request; the
race reports the fork's time `at` beside the live time when it was asked. A snapshot is the only way into
the twin's state from outside its loop. From there every candidate runs city-wide for the horizon, as in
`citysignal whatif` (`bench.whatif`: the same jobs, metrics and ranking): the episode's seed, the
service's max-red bound and detector faults, the window's end as the limit. Operator overrides and a
mixed controller assignment are not carried into the race: a candidate is one controller for the city.

Off the control loop: each candidate runs in its own spawned process (libsumo: one simulation per
process, and it holds the GIL for a whole step), all of them at once unless `workers` caps them (they share
the CPUs, so none waits for another to end: as `citysignal whatif`), at nice `NICE`, so that the live twin
(in its own process at normal priority) keeps the CPU first on a busy machine and the API process only reads
pipes. Progress comes from each candidate's run every 10 simulated seconds.

One race at a time (a second is refused with 409 while one runs); the last `KEEP` races stay in memory
(not across restarts: the audit log keeps who asked and the ranking). A race that fails (a candidate
process dies or raises) is reported with the reason; the service's stop ends the candidates' processes.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

from citysignal.bench.episode import EpisodeResult, Fork, run_episode
from citysignal.bench.parallel import Job
from citysignal.bench.whatif import WhatIf, candidate_jobs, fork_of_state, rank
from citysignal.errors import UserError
from citysignal.service.context import Service
from citysignal.service.engine import SNAPSHOT_EVERY_S, CommandError
from citysignal.service.store import EventIn

NICE = 10
KEEP = 20
POLL_S = 0.2
FORK_WAIT_S = 3 * SNAPSHOT_EVERY_S
Status = Literal["forking", "running", "done", "failed"]


def candidate_main(conn: Connection, job: Job) -> None:
    """Entry point of a candidate's process: run the job from its fork, send progress, then the result."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    try:
        result = run_episode(job.scenario, job.controller, job.seed, job.max_red,
                             lambda frac: conn.send(("progress", frac)), job.policy, faults=job.faults,
                             start=job.start)  # fmt: skip
        conn.send(("done", result))
    except UserError as exc:
        conn.send(("failed", str(exc)))
    except Exception as exc:  # reported as the race's failure, with the reason
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@dataclass
class Race:
    id: int  # the audit record of the request
    actor: str
    candidates: list[str]
    horizon: float
    live_time: float  # simulated time of the live twin when it was asked
    episode: int
    asked_at: float = field(default_factory=time.time)  # wall clock, UTC seconds
    status: Status = "forking"
    at: float | None = None  # simulated time of the fork
    vehicles: int | None = None  # on the observed lanes at the fork
    fork_wait_s: float | None = None  # from the request to the fork
    progress: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    result: WhatIf | None = None

    def public(self) -> dict[str, Any]:
        done = self.result
        rows = done.rows() if done is not None else []
        return {
            "id": self.id,
            "status": self.status,
            "actor": self.actor,
            "candidates": self.candidates,
            "horizon": self.horizon,
            "live_time": self.live_time,
            "episode": self.episode,
            "asked_at": self.asked_at,
            "at": self.at,
            "vehicles": self.vehicles,
            "fork_wait_s": self.fork_wait_s,
            "progress": {c: round(self.progress.get(c, 0.0), 3) for c in self.candidates},
            "fraction": round(sum(self.progress.values()) / len(self.candidates), 3),
            "error": self.error,
            "race_wall_s": round(done.race_wall_s, 3) if done is not None else None,
            "winner": rows[0]["candidate"] if rows else None,
            "same_start": len({r.start_lanes for r in done.results}) == 1 if done is not None else None,
            "rows": rows,
            "curves": {r.controller: {"t": r.queue_t, "queue": r.queue} for r in done.results} if done else {},
        }


class WhatIfRunner:
    def __init__(self, service: Service, workers: int | None = None) -> None:
        self.service = service
        self.workers = workers  # None: every candidate of a race at once
        self._races: OrderedDict[int, Race] = OrderedDict()
        self._busy = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def prepare(self, candidates: list[str], horizon: float) -> Race:
        """Check the request and take the service's one race slot (until `launch`ed and done, or `release`d);
        a CommandError says why not (status, message)."""
        engine = self.service.engine
        unknown = [c for c in candidates if c not in engine.offered]
        if unknown:
            raise CommandError(422, f"'{unknown[0]}' cannot race here; choose from: {', '.join(engine.offered)}")
        status, reason = engine.health()
        live = engine.live()
        if status != "ok" or live is None:
            raise CommandError(503, reason or "the twin is not running")
        left = self.service.scenario.end - live.time
        if horizon > left:
            raise CommandError(409, f"the horizon runs past the episode's end: {left:g} s are left")
        with self._lock:
            if self._busy:
                raise CommandError(409, "a what-if race is running; wait for its result")
            self._busy = True
        return Race(0, "", list(candidates), horizon, live.time, live.episode)

    def release(self) -> None:
        """Give the race slot back (a prepared race that is not launched)."""
        with self._lock:
            self._busy = False

    def launch(self, race: Race, race_id: int, actor: str) -> Race:
        race.id, race.actor = race_id, actor
        with self._lock:
            self._races[race.id] = race
            while len(self._races) > KEEP:
                self._races.popitem(last=False)
        self._thread = threading.Thread(target=self._run, args=(race,), name="citysignal-whatif", daemon=True)
        self._thread.start()
        return race

    def get(self, race_id: int) -> Race | None:
        return self._races.get(race_id)

    def races(self) -> list[Race]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._races.values()))

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, race: Race) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="citysignal-whatif-") as folder:
                fork, jobs = self._fork(race, Path(folder))
                forked = time.perf_counter()
                results = self._race(jobs, race)
                wall = time.perf_counter() - forked
            race.result = WhatIf(fork, "live", race.horizon, rank(race.candidates, results), wall)
            race.status = "done"
        except _RaceFailed as exc:
            race.error, race.status = str(exc), "failed"
        except Exception as exc:  # a race that breaks must say so, not stay "running" for ever
            race.error, race.status = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            self.release()
        self._audit(race)

    def _fork(self, race: Race, folder: Path) -> tuple[Fork, list[Job]]:
        """Fork at the twin's first snapshot taken after the request; one job per candidate from there."""
        engine = self.service.engine
        deadline = time.monotonic() + FORK_WAIT_S
        snap = engine.latest_snapshot()
        while snap is None or snap.taken_at < race.asked_at:
            if time.monotonic() > deadline or self._stopping.is_set():
                raise _RaceFailed(f"the twin took no snapshot within {FORK_WAIT_S:g} s of the request")
            time.sleep(POLL_S)
            snap = engine.latest_snapshot()
        race.fork_wait_s = round(time.time() - race.asked_at, 3)
        sc = self.service.scenario
        if snap.key != engine.config.key or snap.episode != race.episode:
            raise _RaceFailed("the episode ended before the fork: ask again in the new one")
        if snap.sim_time + race.horizon > sc.end:
            raise _RaceFailed(f"the horizon runs past the episode's end: {sc.end - snap.sim_time:g} s were left")
        cfg = engine.config
        fork = fork_of_state(snap.sim_time, snap.sumo_state, snap.guard, engine.layout.lanes)
        race.at, race.vehicles, race.status = fork.time, fork.vehicles, "running"
        window = sc.with_window(sc.begin, fork.time + race.horizon)
        jobs = candidate_jobs(window, race.candidates, fork.time, cfg.seed + snap.episode, cfg.max_red, None, folder,
                              cfg.faults)  # fmt: skip
        return fork, [replace(j, start=fork) for j in jobs]

    def _race(self, jobs: list[Job], race: Race) -> list[EpisodeResult]:
        """Run the jobs in processes, `workers` (default: all) at a time; their results in job order."""
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server
        waiting = list(enumerate(jobs))
        running: dict[Connection, tuple[int, BaseProcess]] = {}
        results: dict[int, EpisodeResult] = {}
        try:
            while waiting or running:
                if self._stopping.is_set():
                    raise _RaceFailed("the service is stopping")
                while waiting and len(running) < (self.workers or len(jobs)):
                    i, job = waiting.pop(0)
                    parent, child = ctx.Pipe(duplex=False)
                    process: BaseProcess = ctx.Process(target=candidate_main, args=(child, job), daemon=True,
                                                       name="citysignal-whatif-run")  # fmt: skip
                    process.start()
                    child.close()
                    running[parent] = (i, process)
                for conn in wait(list(running), POLL_S):
                    assert isinstance(conn, Connection)
                    i, process = running[conn]
                    name = race.candidates[i]
                    try:
                        kind, value = conn.recv()
                    except (EOFError, OSError):
                        process.join(5)
                        raise _RaceFailed(f"{name}: its process ended (exit code {process.exitcode})") from None
                    if kind == "progress":
                        race.progress[name] = float(value)
                    elif kind == "failed":
                        raise _RaceFailed(f"{name}: {value}")
                    else:
                        results[i] = value
                        race.progress[name] = 1.0
                        del running[conn]
                        conn.close()
                        process.join(5)
        finally:
            for conn, (_, process) in running.items():
                process.terminate()
                process.join(5)
                conn.close()
        return [results[i] for i in range(len(jobs))]

    def _audit(self, race: Race) -> None:
        detail: dict[str, Any] = {"race": race.id, "by": race.actor, "at": race.at, "horizon": race.horizon,
                                  "fork_wait_s": race.fork_wait_s}  # fmt: skip
        if race.result is not None:
            public = race.public()
            detail.update({k: public[k] for k in ("winner", "race_wall_s", "same_start")})
            detail["ranking"] = {r["candidate"]: round(float(r["resco_delay"]), 1) for r in public["rows"]}
        else:
            detail["error"] = (race.error or "")[:300]
        live = self.service.engine.live()
        self.service.store.record_later(EventIn("system", "system", "whatif_done", "city", race.status, detail,
                                                sim_time=live.time if live else None))  # fmt: skip


class _RaceFailed(Exception):
    pass
