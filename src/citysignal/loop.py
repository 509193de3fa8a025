"""The control loop: observe -> decide -> guard -> write -> record -> step, once per control step.

Benchmarks (`bench.episode`), learning (`learn.core`) and the service (`service.engine`) drive signals
through this one loop; they differ only in what they plug into it:

- a backend (`Backend`): what the loop observes and writes signal states to. The SUMO twin
  (`twin.Twin`) is one, structurally; a field backend (street controllers) would be another. A backend
  that can save and load its whole state (`SnapshotBackend`: the twin, never a street) also lets a loop
  fork and resume;
- a decider (`Decider`): one controller, a controller behind detector checks, the service's controllers
  by assignment with operator overrides, or learning agents. A decider with `guard_inputs` (see
  `control.health.DetectorSupervisor`) tells the guard which readings to trust;
- detector faults (`twin.faults.DetectorFaults`), applied to what the decider and the guard see, never to
  what is recorded;
- a recorder: a function handed every `Tick` after the writes and before the step;
- priority (`control.priority.Priority`): emergency vehicles' and late buses' calls (`Observation.calls`)
  become greens the guard holds.

The `SafetyGuard` stays the only source of the states written. In monitor mode (SUMO runs its own
program, e.g. `actuated`) nothing is decided or written: the guard checks what the backend shows.

Every tick adds to `clock` (seconds spent observing, deciding, in the guard incl. the writes, and
stepping; recording counts in none of them).

Assumes: one step is 1 s of backend time (the guard's timing assumes it); an observation stays true
until the next step, so the loop observes once per step and hands the same observation to whoever
asks (`observe`) before the next tick decides on it. Controllers and this module never import SUMO.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from citysignal.control.guard import GUARD_DEFERRED, SafetyGuard
from citysignal.control.priority import Priority
from citysignal.network.layout import Layout
from citysignal.twin.faults import DetectorFaults
from citysignal.twin.observation import LaneRows, Observation, ProgramPosition


class Backend(Protocol):
    """Where signals are observed and written: intersections in `Layout` order, one step per second."""

    @property
    def time(self) -> float:
        """Now, in the backend's seconds (SUMO's simulation time; the wall clock in the field)."""
        ...

    @property
    def done(self) -> bool:
        """No step is left (the scenario's window has ended)."""
        ...

    def program_position(self) -> ProgramPosition:
        """Where each intersection's own program stands now, for the guard and the controllers to take over."""
        ...

    def observe(self, phase: NDArray[np.int64], time_in_phase: NDArray[np.float64]) -> Observation:
        """The detectors now; `phase` and `time_in_phase` (the guard's) are carried into the observation."""
        ...

    def states(self) -> list[str]:
        """The signal state each intersection shows (monitor mode)."""
        ...

    def write(self, changes: dict[int, str]) -> None:
        """Show new signal states, by intersection index; only the guard's writes reach this."""
        ...

    def step(self) -> None:
        """Advance one step (1 s)."""
        ...


class SnapshotBackend(Backend, Protocol):
    """A backend whose whole state can be saved and loaded (the twin): forks and resumes."""

    def save_state(self) -> bytes: ...

    def load_state(self, state: bytes) -> None:
        """Jump to a saved state; the signal states set from outside need writing again after it."""
        ...


class Decider(Protocol):
    """What the loop asks for requests: `Controller` and `DetectorSupervisor` are deciders."""

    def reset(self, layout: Layout, position: ProgramPosition, seed: int = 0) -> None: ...

    def decide(self, obs: Observation) -> NDArray[np.int64]: ...


@runtime_checkable
class Prefetching(Protocol):
    """A decider that reads some of its inputs by rows (`Controller.prefetch`): the loop has it read them
    while observing."""

    def prefetch(self, obs: Observation) -> None: ...


@runtime_checkable
class Supervised(Protocol):
    """A decider behind detector checks: the halting and stop-line counts the guard may trust."""

    def guard_inputs(self, obs: Observation) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]: ...


@dataclass(frozen=True)
class Tick:
    """One step of a loop, as its recorder sees it after the writes."""

    step: int  # steps this loop ran before this one
    time: float
    obs: Observation  # the true readings (detector faults spoil only what the decider and the guard see)
    requests: NDArray[np.int64] | None  # None in monitor mode
    decide_s: float  # seconds the decider took


def deferrable(decider: Decider) -> frozenset[str]:
    """The lane fields a loop with this decider may defer (`Twin(defer=...)`): those the guard reads by rows
    (`GUARD_DEFERRED`) that the decider does not read whole, and those the decider reads by rows
    (`Controller.by_rows`). None behind detector checks: they judge whole arrays."""
    if isinstance(decider, Supervised):
        return frozenset()
    requires: frozenset[str] = getattr(decider, "requires", frozenset())
    by_rows: frozenset[str] = getattr(decider, "by_rows", frozenset())
    return (GUARD_DEFERRED - requires) | by_rows


class ResumeError(Exception):
    """A saved state that does not load into this loop's backend and guard."""


B = TypeVar("B", bound=Backend)
SB = TypeVar("SB", bound=SnapshotBackend)


def guard_position(layout: Layout, guard: SafetyGuard, now: float) -> ProgramPosition:
    """Where each intersection stands, as a program position a controller's `reset` understands: the first
    program phase of the green showing (or of the green a transition leads to), and for how long it shows."""
    phase = np.zeros(layout.n_intersections, dtype=np.int64)
    elapsed = np.zeros(layout.n_intersections)
    for k, inter in enumerate(layout.intersections):
        g = int(guard.green[k]) if guard.green[k] >= 0 else int(guard.target[k])
        if g >= 0:
            phase[k] = inter.program_green_index.index(g)
            elapsed[k] = float(now - guard.since[k]) if guard.green[k] >= 0 else 0.0
    return ProgramPosition(phase, elapsed)


class ControlLoop(Generic[B]):
    """One backend under one guard and one decider, stepped by `tick`; start it with `start` or `resume`."""

    def __init__(
        self,
        backend: B,
        guard: SafetyGuard,
        decider: Decider,
        *,
        monitor: bool = False,
        faults: DetectorFaults | None = None,
        recorder: Callable[[Tick], None] | None = None,
        priority: Priority | None = None,
    ) -> None:
        self.backend = backend
        self.guard = guard
        self.layout = guard.layout
        self.decider = decider
        self.monitor = monitor
        self.faults = faults  # may be set between steps (the service draws them once the start time is known)
        self.recorder = recorder
        self.priority = priority  # emergency preemption and transit priority, held by the guard
        self.steps = 0
        self.clock = dict.fromkeys(("observe", "decide", "guard", "step"), 0.0)
        self._inputs = decider.guard_inputs if isinstance(decider, Supervised) else None
        self._prefetch = decider.prefetch if isinstance(decider, Prefetching) else None  # checked once, not per step
        self._obs: Observation | None = None

    @property
    def time(self) -> float:
        return self.backend.time

    @property
    def done(self) -> bool:
        return self.backend.done

    def start(self, seed: int) -> ProgramPosition:
        """Take over where the backend's programs stand: the guard starts there (in monitor mode it adopts
        what shows) and the decider is reset there."""
        backend = self.backend
        position = backend.program_position()
        self.decider.reset(self.layout, position, seed)
        if self.monitor:
            self.guard.adopt(backend.time, backend.states())
        else:
            backend.write(self.guard.start(backend.time, position))
        self._obs = None
        return position

    def resume(self: ControlLoop[SB], state: bytes, guard_state: Mapping[str, Any], seed: int) -> ProgramPosition:
        """Continue from a `save`: the backend loads its state, the guard continues its sequences and writes
        the states it was showing again, and the decider starts fresh from the greens shown. A state that
        does not load (the backend's or the guard's) is a `ResumeError`."""
        try:
            self.backend.load_state(state)
            self.guard.restore(guard_state)
        except Exception as exc:  # the backend's own error type, or a guard state of another network
            raise ResumeError(str(exc)) from exc
        self.backend.write(dict(enumerate(self.guard.shown)))
        position = guard_position(self.layout, self.guard, self.backend.time)
        self.decider.reset(self.layout, position, seed)
        self._obs = None
        return position

    def save(self: ControlLoop[SB]) -> tuple[bytes, dict[str, Any]]:
        """The backend's state and the guard's, together at this step boundary."""
        return self.backend.save_state(), self.guard.state()

    def observe(self) -> Observation:
        """The backend now (true readings), observed once per step."""
        if self._obs is None:
            started = time.perf_counter()
            now = self.backend.time
            self._obs = self.backend.observe(self.guard.green.copy(), self.guard.time_in_phase(now))
            if self._prefetch is not None:
                self._prefetch(self._obs)
            self.clock["observe"] += time.perf_counter() - started
        return self._obs

    def tick(self) -> Tick:
        """One step: observe, decide, guard, write, record, then advance the backend."""
        backend, guard = self.backend, self.guard
        now = backend.time
        obs = self.observe()
        t1 = time.perf_counter()
        requests: NDArray[np.int64] | None = None
        if self.monitor:
            guard.monitor(now, backend.states())
            t2 = t1
        else:
            seen = self.faults.apply(obs) if self.faults is not None else obs
            requests = self.decider.decide(seen)
            t2 = time.perf_counter()
            passed: NDArray[np.float64] | LaneRows | None
            if self._inputs is not None:
                halting, passed = self._inputs(seen)
            else:  # the guard reads the stop lines it needs (a deferred field: only those)
                halting, passed = obs.waiting(), obs.rows("passed")
            hold = self.priority.hold(now, obs.calls, guard.green, halting) if self.priority is not None else None
            backend.write(guard.apply(now, requests, halting, passed, obs.rows("box"), hold))
        t3 = time.perf_counter()
        tick = Tick(self.steps, now, obs, requests, t2 - t1)
        if self.recorder is not None:
            self.recorder(tick)
        t4 = time.perf_counter()
        backend.step()
        self._obs = None
        t5 = time.perf_counter()
        self.clock["decide"] += t2 - t1
        self.clock["guard"] += t3 - t2
        self.clock["step"] += t5 - t4
        self.steps += 1
        return tick
