"""The field guard's rules on what controllers report: commands only where the twin's guard would start a
transition (never before min green, never during a clearance), none in comm loss, and checks only on
reports one controller second apart.

The reports come from a stand-in with the few arrays a `FieldBackend` fills from its polls (its polling
needs a field; tests/field/test_loopback.py drives the real one end to end)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from citysignal.field.guard import FieldGuard
from citysignal.network.layout import Layout
from citysignal.twin.observation import ProgramPosition


@dataclass
class Reports:
    """What a FieldBackend knows after a poll of one intersection."""

    reported: list[str]
    since: np.ndarray = field(default_factory=lambda: np.zeros(1))
    answered: np.ndarray = field(default_factory=lambda: np.ones(1, dtype=bool))
    jumped: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=bool))
    lost: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=bool))

    def states(self) -> list[str]:
        return list(self.reported)

    def show(self, state: str, at: float, *, jumped: bool = False) -> None:
        if state != self.reported[0] or jumped:
            self.since[0] = at - 1.0
        self.reported[0], self.jumped[0] = state, jumped


def _guard(layout: Layout, reports: Reports) -> FieldGuard:
    guard = FieldGuard(layout, reports)  # type: ignore[arg-type]
    assert guard.start(0.0, ProgramPosition(np.zeros(1, dtype=np.int64), np.zeros(1))) == {0: reports.reported[0]}
    return guard


def _apply(guard: FieldGuard, now: float, request: int) -> dict[int, str]:
    lanes = np.zeros(len(guard.layout.lanes))
    return guard.apply(now, np.array([request]), lanes, lanes, np.zeros(len(guard.layout.box_lanes)))


def test_a_change_is_commanded_once_min_green_has_passed(layout_of: Callable[[str], Any]) -> None:
    layout = layout_of("cologne1")
    greens = layout.intersections[0].greens
    min_green = float(layout.intersections[0].min_green[0])
    reports = Reports([greens[0]])
    guard = _guard(layout, reports)
    assert _apply(guard, 2.0, 2) == {}  # too early: deferred, nothing sent
    assert guard.pending[0] == 2
    assert _apply(guard, min_green - 0.5, -1) == {}
    assert _apply(guard, min_green, -1) == {0: greens[2]}  # the deferred request, as soon as allowed
    ((yellow, _),) = layout.intersections[0].transition(0, 2)
    reports.show(yellow, min_green + 1)  # the controller runs its clearance
    assert _apply(guard, min_green + 1, 1) == {}  # nothing while it runs: deferred
    reports.show(greens[2], min_green + 6)
    assert _apply(guard, min_green + 6, -1) == {}  # the new green's min green runs from its start
    assert _apply(guard, min_green + 5 + min_green, -1) == {0: greens[1]}
    assert guard.stats.violations == 0


def test_reports_are_checked_only_one_second_apart(layout_of: Callable[[str], Any]) -> None:
    layout = layout_of("cologne1")
    greens = layout.intersections[0].greens
    reports = Reports([greens[0]])
    guard = _guard(layout, reports)
    reports.show(greens[2], 30.0, jumped=True)  # seconds went by unseen: the way there is unknown
    _apply(guard, 30.0, -1)
    assert (guard.stats.violations, guard.unobserved) == (0, 1)
    assert guard.green[0] == 2 and guard.since[0] == 29.0
    reports.show(greens[0], 31.0)  # green to green with no yellow, seen: a violation
    _apply(guard, 31.0, -1)
    assert guard.stats.violations == 1


def test_no_command_in_comm_loss(layout_of: Callable[[str], Any]) -> None:
    layout = layout_of("cologne1")
    greens = layout.intersections[0].greens
    reports = Reports([greens[0]])
    guard = _guard(layout, reports)
    reports.lost[0], reports.answered[0] = True, False
    assert _apply(guard, 60.0, 2) == {}
    assert guard.pending[0] == -1  # nothing kept for later either
    reports.lost[0], reports.answered[0] = False, True
    assert _apply(guard, 61.0, 2) == {0: greens[2]}
