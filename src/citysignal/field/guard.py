"""The safety guard for controllers in the field: it commands, the controllers run the sequences.

A `SafetyGuard` over a `FieldBackend`:
- before deciding, it follows what the controllers report. A reported state one second (the
  controller's) after the one it saw before is checked like any state the guard shows (conflicting
  greens, a green lost without yellow) and counted as a violation if it fails; a state reported after
  seconds it did not see (missed polls, a centre slower than the controllers) is taken as it is
  (`unobserved`): the guard did not see the way there. A green's clock is the backend's (when the
  controller began showing it, or the latest it can have begun);
- requests go through the guard's usual rules (refusals, deferral by min green and by running
  transitions, max-red preemption, priority holds). Where the twin's guard would start a transition,
  this one sends the command instead (the target green's state; `FieldBackend.write` turns it into
  phase control groups). So it never asks a controller to leave a green before that green's min green
  (counted from when the guard first saw it, never earlier than it began), and never while the
  controller runs a transition (no clearance is cut short). The controller's own guard holds the same
  floors again;
- an intersection in comm loss gets no new command.

What the guard counts as violations are the controllers' states, as seen once a second: a state shown
for less than a second between two polls is not seen.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from citysignal.control.guard import DEFAULT_MAX_RED_S, HOLD, SafetyGuard
from citysignal.field.backend import FieldBackend
from citysignal.network.layout import Layout
from citysignal.twin.observation import LaneRows, ProgramPosition


class FieldGuard(SafetyGuard):
    """The guard's rules, applied as commands to field controllers (see the module docstring)."""

    def __init__(self, layout: Layout, field: FieldBackend, max_red: float = DEFAULT_MAX_RED_S) -> None:
        super().__init__(layout, max_red)
        self.field = field
        self.unobserved = 0  # reported changes taken without a check (after missed polls)

    def start(self, now: float, position: ProgramPosition) -> dict[int, str]:
        """Take what the controllers show; the first commands keep the greens showing."""
        self.adopt(now, self.field.states())
        self.since = self.field.since.copy()
        return {k: state for k, state in enumerate(self.shown) if self.green[k] >= 0}

    def apply(
        self,
        now: float,
        requests: NDArray[np.int64],
        halting: NDArray[np.float64],
        passed: NDArray[np.float64] | LaneRows | None = None,
        box: NDArray[np.float64] | LaneRows | None = None,
        hold: NDArray[np.int64] | None = None,
    ) -> dict[int, str]:
        field = self.field
        for k in map(int, np.flatnonzero(field.answered)):
            state = field.reported[k]
            if state != self.shown[k]:
                self.unobserved += int(field.jumped[k])
                self._show(k, state, now, check=not field.jumped[k])
                self._track(k, state, now)
            self.since[k] = field.since[k]  # when it began, as the controller's clock tells
        lost = field.lost
        self.pending[lost] = HOLD
        writes = super().apply(now, np.where(lost, HOLD, requests), halting, passed, box, hold)
        return {k: state for k, state in writes.items() if not lost[k]}

    def _begin_transition(self, k: int, want: int, now: float, writes: dict[int, str]) -> None:
        """Command the change; the controller runs the transition, and the guard sees it in the reports."""
        writes[k] = self.layout.intersections[k].greens[want]
